"""State changes to an MQTT broker, with Home Assistant discovery (paho-mqtt 2.x).

Topics (``P`` = ``prefix``, ``N`` = ``node_id``, ``S`` = a source's name; all retained)::

    P/N/availability                 "online" while connected; "offline" on close, and as the
                                     last will when the process dies or the network drops
    P/N/S/state                      the state event's JSON (StateEvent.payload())
    P/N/S/snapshot                   the JPEG of the frame that made the change (``snapshot``)
    D/sensor/N/<slug of S>/config    Home Assistant's discovery config (``discovery``;
                                     D = ``discovery_prefix``)

``node_id`` is in every topic so that two devices on one broker never overwrite each other. The
broker may be down at start or go away at any time: paho reconnects by itself (1-30 s back-off),
events wait in the base class (newest state of each source wins), and each connect publishes
``online``, the discovery configs and every source's current state again. A broker that stays
away costs one log line per outage, never a traceback, and never blocks the frame loop.
"""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

import edgeclf
from edgeclf.comms.base import DeliveryError, Publisher, StateEvent, _log
from edgeclf.errors import EdgeclfError, first_line

PUBLISH_TIMEOUT = 5.0  # the delivery thread's wait for a broker's acknowledgement
GOODBYE_TIMEOUT = 0.5  # close(): how long "offline" may take before we disconnect anyway
_SLUG = re.compile(r"[^a-z0-9_-]+")


def _slug(text: str) -> str:
    return _SLUG.sub("_", text.lower()).strip("_")


def shared_id(sources: list[str]) -> tuple[str, str] | None:
    """Two source names that make one Home Assistant object id ("Door" and "door"), or None."""
    slugs: dict[str, str] = {}
    for s in sources:
        if (other := slugs.setdefault(_slug(s), s)) != s:
            return other, s
    return None


def default_node_id() -> str:
    """This machine's host name as a Home Assistant object id (``[a-z0-9_-]``)."""
    return _slug(socket.gethostname()) or "edgeclf"


def check_topic_level(name: str, what: str = "source name") -> str:
    """``name`` when it can be one MQTT topic level (non-empty, no ``+ # /``, no NUL), else
    EdgeclfError."""
    if not name or any(c in name for c in "+#/\0") or len(name.encode("utf-8", "surrogatepass")) > 1024:
        raise EdgeclfError(f"mqtt: {what} {name!r} cannot be an MQTT topic level (empty, or has + # / or NUL)")
    return name


@dataclass
class MqttOptions:
    """Where and how to publish. ``password`` never shows in a repr; ``ca_file``/``cert_file``
    imply ``tls``."""

    host: str
    port: int = 1883
    prefix: str = "edgeclf"
    node_id: str = field(default_factory=default_node_id)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    keepalive: int = 30
    qos: int = 1
    retain: bool = True
    discovery: bool = True
    discovery_prefix: str = "homeassistant"
    snapshot: bool = False
    client_id: str | None = None

    def __post_init__(self) -> None:
        if not self.host or any(c.isspace() for c in self.host):
            raise EdgeclfError(f"mqtt: host {self.host!r} is not a host name")
        if not 0 < int(self.port) < 65536:
            raise EdgeclfError(f"mqtt: port {self.port} is not between 1 and 65535")
        if self.qos not in (0, 1, 2):
            raise EdgeclfError(f"mqtt: qos must be 0, 1 or 2, not {self.qos!r}")
        if not 5 <= int(self.keepalive) <= 65535:
            raise EdgeclfError(f"mqtt: keepalive {self.keepalive} s is not between 5 and 65535")
        if not re.fullmatch(r"[A-Za-z0-9_-]+", self.node_id or ""):
            raise EdgeclfError(f"mqtt: node id {self.node_id!r} may hold only letters, digits, _ and -")
        for name, value in (("prefix", self.prefix), ("discovery prefix", self.discovery_prefix)):
            # a prefix may have several levels ("home/cams"), but no wildcards and no empty level
            for level in (value or "").split("/"):
                check_topic_level(level, f"{name} {value!r}: level")
        if self.key_file and not self.cert_file:
            raise EdgeclfError("mqtt: a key file needs its certificate file (cert_file)")
        self.tls = bool(self.tls or self.ca_file or self.cert_file)


def tls_context(opts: MqttOptions) -> ssl.SSLContext:
    """The client's TLS context; a missing or unusable file is a one-line EdgeclfError naming it."""
    for what, path in (("CA file", opts.ca_file), ("certificate file", opts.cert_file), ("key file", opts.key_file)):
        if path and not os.access(path, os.R_OK):
            raise EdgeclfError(f"mqtt: cannot read the {what} {path}")
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=opts.ca_file)
    except (ssl.SSLError, OSError) as e:
        raise EdgeclfError(f"mqtt: the CA file {opts.ca_file} is not usable ({first_line(e)})") from None
    if opts.cert_file:
        try:
            # no pass phrase: OpenSSL would otherwise prompt on the terminal (or hang a service)
            ctx.load_cert_chain(opts.cert_file, opts.key_file, password=lambda: b"")
        except (ssl.SSLError, OSError) as e:
            files = opts.cert_file + (f" / {opts.key_file}" if opts.key_file else "")
            raise EdgeclfError(f"mqtt: the certificate/key {files} is not usable ({first_line(e)})") from None
    return ctx


class MqttPublisher(Publisher):
    """Publishes each source's state (and Home Assistant discovery) to an MQTT broker.

    ``model`` names the model in the discovery's device block. Construction checks options and
    TLS files (EdgeclfError); ``start`` connects in the background and never fails on a broker
    that is down."""

    kind = "mqtt"

    def __init__(self, options: MqttOptions, *, model: str = "", log: Callable[[str], None] = _log) -> None:
        super().__init__(log)
        self.opts = options
        self.wants_snapshots = options.snapshot
        self.model = model
        self.base = f"{options.prefix}/{options.node_id}"
        self.availability_topic = f"{self.base}/availability"
        self._sources: list[str] = []
        self._online = False  # "online" acknowledged on this connection: states may go out
        self._online_mid: int | None = None
        self._ever_connected = False
        self._streak_logged = False  # one line per outage, however many retries it takes
        self._flag = threading.Lock()
        self.client = self._make_client(tls_context(options) if options.tls else None)

    def __repr__(self) -> str:
        return f"MqttPublisher({self.opts!r})"

    def _make_client(self, tls: ssl.SSLContext | None) -> mqtt.Client:
        o = self.opts
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=o.client_id or f"edgeclf-{o.node_id}")
        if o.username is not None:
            c.username_pw_set(o.username, o.password)
        if tls is not None:
            c.tls_set_context(tls)
        c.will_set(self.availability_topic, "offline", qos=1, retain=True)
        c.reconnect_delay_set(1, 30)
        c.on_connect, c.on_connect_fail = self._on_connect, self._on_connect_fail
        c.on_disconnect, c.on_publish = self._on_disconnect, self._on_publish
        return c

    # ------------------------------------------------------------------ topics
    def state_topic(self, source: str) -> str:
        return f"{self.base}/{source}/state"

    def snapshot_topic(self, source: str) -> str:
        return f"{self.base}/{source}/snapshot"

    def discovery_topic(self, source: str) -> str:
        return f"{self.opts.discovery_prefix}/sensor/{self.opts.node_id}/{_slug(source) or 'source'}/config"

    def discovery_config(self, source: str) -> dict[str, Any]:
        """Home Assistant's MQTT discovery payload: one sensor per source, its state the label."""
        node = self.opts.node_id
        return {
            "name": source, "unique_id": f"edgeclf_{node}_{_slug(source)}",
            "state_topic": self.state_topic(source), "value_template": "{{ value_json.label }}",
            "json_attributes_topic": self.state_topic(source),
            "availability_topic": self.availability_topic,
            "payload_available": "online", "payload_not_available": "offline",
            "device": {"identifiers": [f"edgeclf_{node}"], "name": f"edgeclf {node}", "manufacturer": "edgeclf",
                       "model": self.model or "edgeclf", "sw_version": edgeclf.__version__},
            "icon": "mdi:cctv",
        }

    # ------------------------------------------------------------ the base's hooks
    def _open(self, sources: list[str]) -> None:
        for s in sources:
            check_topic_level(s)
        if self.opts.discovery and (pair := shared_id(sources)):
            raise EdgeclfError(f"mqtt: sources {pair[0]!r} and {pair[1]!r} would share one Home Assistant id")
        self._sources = list(sources)
        self.client.connect_async(self.opts.host, int(self.opts.port), keepalive=int(self.opts.keepalive))
        self.client.loop_start()

    def _ready(self) -> bool:
        return self._online

    def _deliver(self, event: StateEvent) -> None:
        check_topic_level(event.source)
        infos = [self.client.publish(self.state_topic(event.source), json.dumps(event.payload()),
                                     qos=self.opts.qos, retain=self.opts.retain)]
        if (jpeg := event.snapshot_for(self.opts.snapshot)) is not None:
            infos.append(self.client.publish(self.snapshot_topic(event.source), jpeg,
                                             qos=self.opts.qos, retain=self.opts.retain))
        for info in infos:
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                raise DeliveryError(mqtt.error_string(info.rc))
            try:
                info.wait_for_publish(PUBLISH_TIMEOUT)
            except (ValueError, RuntimeError) as e:
                raise DeliveryError(first_line(e)) from None
            if not info.is_published():
                raise DeliveryError(f"not acknowledged within {PUBLISH_TIMEOUT:g} s")

    def _shut(self) -> None:
        if self._online:
            info = self.client.publish(self.availability_topic, "offline", qos=1, retain=True)
            if info.rc == mqtt.MQTT_ERR_SUCCESS:
                try:
                    info.wait_for_publish(GOODBYE_TIMEOUT)
                except (ValueError, RuntimeError):
                    pass  # the connection went meanwhile: the broker publishes the will instead
        self._online = False
        self.client.disconnect()
        self.client.loop_stop()

    # ------------------------------------------------------------ paho's callbacks
    # They run on paho's network thread: they only publish (non-blocking) and flip flags.
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self._once(f"mqtt: {self._where()} refused the connection ({reason}), retrying")
            return
        if self._ever_connected:
            self.stats["reconnects"] += 1
        self._ever_connected, self._streak_logged = True, False
        self.log(f"mqtt: connected to {self._where()}")
        # States wait for "online"'s acknowledgement: paho re-sends messages left from the last
        # connection only after this callback returns, and a current state must not go out before
        # such an older one (the retained state would go back in time).
        self._online_mid = client.publish(self.availability_topic, "online", qos=1, retain=True).mid
        if self.opts.discovery:
            for s in self._sources:
                client.publish(self.discovery_topic(s), json.dumps(self.discovery_config(s)), qos=1, retain=True)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        if mid == self._online_mid and not self._online:
            self._online = True
            self._resend_current()

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        # paho calls this inside its `except OSError:` and passes no error: the one being
        # handled says why (refused, unreachable, TLS verification failed).
        err = sys.exc_info()[1]
        self._once(f"mqtt: cannot connect to {self._where()} ({first_line(err) if err else 'failed'}), retrying")

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        was_online, self._online, self._online_mid = self._online, False, None
        if was_online and not self._closing:
            self._once(f"mqtt: connection to {self._where()} lost ({reason}), retrying")

    def _once(self, line: str) -> None:
        with self._flag:
            if self._streak_logged:
                return
            self._streak_logged = True
        self.log(line)

    def _where(self) -> str:
        return f"{self.opts.host}:{self.opts.port}"
