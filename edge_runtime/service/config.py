"""``edgeclf serve CONFIG.toml``: the service's config file, read with the standard library's tomllib.

Every key is listed in ``KEYS`` (with its type and default) and documented in docs/serve.md; an
unknown key, a wrong type or a value out of range is a one-line error naming the file, the line and
the key. Secrets (the MQTT password, the HTTP token, webhook headers) come from the file, from an
environment variable (``password_env = "NAME"``) or from a file of their own (``password_file``),
and are kept out of every ``repr``.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeclf.comms.mqtt import MqttOptions, shared_id, tls_context
from edgeclf.comms.webhook import WebhookOptions, check_headers, shown_url, split_credentials
from edgeclf.errors import EdgeclfError, safe_text
from edgeclf.serve.address import is_host_name, parse_address
from edgeclf.serve.auth import TOKEN_RE, TOKEN_RULE
from edgeclf.service.secrets import read_secret

MAX_CONFIG_BYTES = 1 << 20
SOURCE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


# key: (type, default); a type is a Python type or a tuple of them, checked as the file is read.
TOP_KEYS: dict[str, tuple[Any, Any]] = {
    "model": (str, None), "provider": (str, "auto"), "threads": (int, None), "name": (str, None),
    "batch": ((bool, str), "auto"),  # true, false or "auto": measured at run time (service/batching.py)
}
SOURCE_KEYS: dict[str, tuple[Any, Any]] = {
    "name": (str, None), "uri": (str, None),
    "debounce_frames": (int, 3), "debounce_seconds": ((int, float), 0.0),
    "smooth": ((int, float), 0.0),  # 0: off; else the moving average's alpha, as predict's --smooth-alpha
    "unknown": (bool, True), "unknown_threshold": ((int, float), None), "class_thresholds": (dict, {}),
    "timeout": ((int, float), 10.0), "every": (int, 1), "loop": (bool, False), "realtime": (bool, True),
    "snapshot": (bool, False),
}
SERVER_KEYS: dict[str, tuple[Any, Any]] = {
    "listen": (str, None), "token": (str, None), "token_env": (str, None), "token_file": (str, None),
    "show": (str, None), "allow_hosts": (list, []), "max_upload_mb": ((int, float), 16),
}
MQTT_KEYS: dict[str, tuple[Any, Any]] = {
    "host": (str, None), "port": (int, 1883), "prefix": (str, "edgeclf"), "node_id": (str, None),
    "username": (str, None), "password": (str, None), "password_env": (str, None), "password_file": (str, None),
    "tls": (bool, False), "ca_file": (str, None), "cert_file": (str, None), "key_file": (str, None),
    "keepalive": (int, 30), "qos": (int, 1), "discovery": (bool, True), "discovery_prefix": (str, "homeassistant"),
    "snapshot": (bool, False), "client_id": (str, None),
}
WEBHOOK_KEYS: dict[str, tuple[Any, Any]] = {
    "url": (str, None), "url_env": (str, None), "timeout": ((int, float), 5.0), "retries": (int, 3),
    "backoff": ((int, float), 0.5), "headers": (dict, {}), "snapshot": (bool, False),
}
TABLES = {"defaults": SOURCE_KEYS, "source": SOURCE_KEYS, "server": SERVER_KEYS, "mqtt": MQTT_KEYS, "webhook": WEBHOOK_KEYS}


@dataclass
class SourceConfig:
    """One source: its name (a topic level, a metric label), what to open, and how its state is decided."""

    name: str
    uri: str = field(repr=False)  # may hold a password: shown through edgeclf.redact
    debounce_frames: int = 3
    debounce_seconds: float = 0.0
    smooth: float = 0.0
    unknown: bool = True
    unknown_threshold: float | None = None
    class_thresholds: dict[str, float] = field(default_factory=dict)
    timeout: float = 10.0
    every: int = 1
    loop: bool = False
    realtime: bool = True
    snapshot: bool = False


@dataclass
class ServerConfig:
    listen: str
    token: str | None = field(default=None, repr=False)
    token_from: str | None = None  # where the token was given, for the log: "server.token_file (/etc/...)"
    show: str | None = None
    allow_hosts: list[str] = field(default_factory=list)
    max_upload_mb: float = 16


@dataclass
class ServiceConfig:
    """The whole file, checked; ``path`` is the file it came from."""

    path: Path
    model: str
    sources: list[SourceConfig]
    provider: str = "auto"
    threads: int | None = None
    name: str | None = None
    batch: bool | str = "auto"
    server: ServerConfig | None = None
    mqtt: MqttOptions | None = None
    webhooks: list[WebhookOptions] = field(default_factory=list)


class ConfigError(EdgeclfError):
    """A config file that cannot be used: ``FILE:LINE: key: problem``."""


class _Reader:
    """Checks one file's tables against the key lists, naming the line of what is wrong."""

    def __init__(self, path: Path, text: str) -> None:
        self.path, self.lines = path, text.splitlines()

    def fail(self, where: str, key: str | None, problem: str) -> ConfigError:
        line = self.line_of(where, key)
        at = f"{safe_text(self.path)}:{line}" if line else safe_text(self.path)
        name = f"{where}.{key}" if where and key else (key or where)
        return ConfigError(f"{at}: {safe_text(name)}: {problem}")

    def line_of(self, where: str, key: str | None) -> int | None:
        """The line that sets ``key`` in table ``where`` ("" = the top level; "source[2]" = the third
        [[source]]), or the table's header; None when not found (tomllib gives no positions)."""
        table, _, nth = where.partition("[")
        n = int(nth.rstrip("]")) if nth else 0
        start, seen = 0, -1
        if table:
            header = re.compile(rf"^\s*\[\[?\s*{re.escape(table)}\s*\]\]?\s*(#.*)?$")
            for i, text in enumerate(self.lines):
                if header.match(text):
                    seen += 1
                    if seen == n:
                        start = i
                        break
            else:
                return None
        if key is None:
            return start + 1 if table else None
        setter = re.compile(rf"""^\s*["']?{re.escape(key)}["']?\s*=""")
        for i in range(start + (1 if table else 0), len(self.lines)):
            if i > start and table and re.match(r"^\s*\[", self.lines[i]):
                break
            if not table and re.match(r"^\s*\[", self.lines[i]):
                break
            if setter.match(self.lines[i]):
                return i + 1
        return start + 1 if table else None

    def table(self, data: dict, where: str, keys: dict[str, tuple[Any, Any]], base: dict | None = None) -> dict[str, Any]:
        """``data``'s keys checked against ``keys``, the defaults (or ``base``) filled in."""
        out = {k: default for k, (_, default) in keys.items()} if base is None else dict(base)
        for key, value in data.items():
            if key not in keys:
                known = ", ".join(keys)
                raise self.fail(where, key, f"unknown key (known here: {known})")
            kind = keys[key][0]
            if isinstance(value, bool) and kind in (int, float, (int, float)) or not isinstance(value, kind):
                raise self.fail(where, key, f"must be {_kind_name(kind)} (got {_show(value)})")
            out[key] = value
        return out


def _kind_name(kind: Any) -> str:
    names = {str: "a string", int: "an integer", bool: "true or false", dict: "a table", list: "a list",
             (int, float): "a number", (bool, str): 'true, false or "auto"'}
    return names.get(kind, str(kind))


def _show(value: Any) -> str:
    text = repr(value) if not isinstance(value, dict) else "a table"
    return safe_text(text if len(text) <= 40 else text[:37] + "...")


def load_config(path: str | Path) -> ServiceConfig:
    """Read and check ``path``; a ``ConfigError`` (one line: file, line, key, problem) if unusable."""
    path = Path(path)
    try:
        with path.open("rb") as f:  # bounded as read: a device or a pipe has no size to check first
            raw = f.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(f"{safe_text(path)}: larger than {MAX_CONFIG_BYTES >> 20} MiB; not a config file")
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{safe_text(path)}: no such config file") from None
    except IsADirectoryError:
        raise ConfigError(f"{safe_text(path)}: is a folder, not a config file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{safe_text(path)}: not UTF-8 text; a config file is TOML") from None
    except OSError as e:
        raise ConfigError(f"{safe_text(path)}: cannot read ({e.strerror or e})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{safe_text(path)}: not valid TOML ({safe_text(str(e))})") from None
    return _parse(_Reader(path, text), data)


def _parse(r: _Reader, data: dict) -> ServiceConfig:
    top_keys = {**TOP_KEYS, **{t: (dict, None) for t in TABLES if t not in ("source", "webhook")},
                "source": (list, None), "webhook": ((dict, list), None)}
    top = r.table(data, "", top_keys)
    if not top["model"]:
        raise r.fail("", "model", "missing: the ONNX model to run (model = \"runs/pets/model_int8.onnx\")")
    _check_range(r, "", "threads", top["threads"], 1, 256)
    if isinstance(top["batch"], str) and top["batch"] != "auto":
        raise r.fail("", "batch", f'must be true, false or "auto" (got {_show(top["batch"])})')
    defaults = r.table(top["defaults"] or {}, "defaults", SOURCE_KEYS)
    if defaults["name"] is not None or defaults["uri"] is not None:
        raise r.fail("defaults", "name" if defaults["name"] is not None else "uri", "belongs in a [[source]], not in [defaults]")
    sources = _sources(r, top["source"], defaults)
    server = _server(r, top["server"], [s.name for s in sources]) if top["server"] is not None else None
    mqtt = _mqtt(r, top["mqtt"], top["name"], [s.name for s in sources]) if top["mqtt"] is not None else None
    hooks = top["webhook"]
    hooks = [] if hooks is None else [hooks] if isinstance(hooks, dict) else hooks
    webhooks = [_webhook(r, h, f"webhook[{i}]" if isinstance(top["webhook"], list) else "webhook") for i, h in enumerate(hooks)]
    base = r.path.parent
    return ServiceConfig(path=r.path, model=str(_relative(base, top["model"])), sources=sources, provider=top["provider"],
                         threads=top["threads"], name=top["name"], batch=top["batch"], server=server, mqtt=mqtt,
                         webhooks=webhooks)


def _relative(base: Path, value: str) -> Path:
    """A path in the config is relative to the config file's folder (as systemd runs it from /)."""
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def _check_range(r: _Reader, where: str, key: str, value: float | None, low: float, high: float,
                 low_open: bool = False) -> None:
    if value is None:
        return
    bad = not math.isfinite(value) or value > high or (value <= low if low_open else value < low)
    if bad:
        lo = f"above {low}" if low_open else f"at least {low}"
        raise r.fail(where, key, f"must be {lo} and at most {high} (got {_show(value)})")


def _sources(r: _Reader, tables: list | None, defaults: dict) -> list[SourceConfig]:
    if not tables:
        raise r.fail("", "source", "missing: at least one [[source]] with a name and a uri")
    out: list[SourceConfig] = []
    for i, t in enumerate(tables):
        where = f"source[{i}]"
        if not isinstance(t, dict):
            raise r.fail("", "source", "must be an array of tables ([[source]])")
        s = r.table(t, where, SOURCE_KEYS, base=defaults)
        for key in ("name", "uri"):
            if not s[key]:
                raise r.fail(where, None, f"missing {key!r}")
        if not SOURCE_NAME.fullmatch(s["name"]):
            raise r.fail(where, "name", f"{_show(s['name'])}: use 1-64 letters, digits, '-' or '_' (it is an MQTT topic level)")
        if any(o.name == s["name"] for o in out):
            raise r.fail(where, "name", f"{_show(s['name'])} is used by another source")
        _check_source_values(r, where, s)
        s["uri"] = s["uri"] if "://" in s["uri"] or not _looks_like_path(s["uri"]) else str(_relative(r.path.parent, s["uri"]))
        out.append(SourceConfig(**s))
    return out


def _looks_like_path(uri: str) -> bool:
    """A relative file or folder (not a camera index, a /dev node or a GStreamer pipeline)."""
    return not ((uri.isascii() and uri.isdigit()) or uri.startswith("/") or "!" in uri)


def _check_source_values(r: _Reader, where: str, s: dict) -> None:
    _check_range(r, where, "debounce_frames", s["debounce_frames"], 1, 10_000)
    _check_range(r, where, "debounce_seconds", s["debounce_seconds"], 0, 86_400)
    _check_range(r, where, "smooth", s["smooth"], 0, 1)
    _check_range(r, where, "timeout", s["timeout"], 0, 86_400, low_open=True)
    _check_range(r, where, "every", s["every"], 1, 10_000)
    _check_range(r, where, "unknown_threshold", s["unknown_threshold"], -1e9, 1e9)
    for name, value in s["class_thresholds"].items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise r.fail(where, "class_thresholds", f"{_show(name)}: must be a probability from 0 to 1 (got {_show(value)})")
    s["class_thresholds"] = {k: float(v) for k, v in s["class_thresholds"].items()}
    for key in ("debounce_seconds", "smooth", "timeout"):
        s[key] = float(s[key])


def _server(r: _Reader, data: dict, names: list[str]) -> ServerConfig:
    s = r.table(data, "server", SERVER_KEYS)
    if not s["listen"]:
        raise r.fail("server", "listen", "missing: the address to serve on, e.g. \"127.0.0.1:8080\" or \"0.0.0.0:8080\"")
    if s["show"] is not None and s["show"] not in names:
        raise r.fail("server", "show", f"{_show(s['show'])} is not a source (sources: {', '.join(names)})")
    if not all(isinstance(h, str) for h in s["allow_hosts"]):
        raise r.fail("server", "allow_hosts", "must be a list of host names")
    _check_range(r, "server", "max_upload_mb", s["max_upload_mb"], 0, 1024, low_open=True)
    try:
        parse_address(s["listen"])
    except EdgeclfError:
        raise r.fail("server", "listen", f"expected [HOST:]PORT, e.g. \"127.0.0.1:8080\" or \"0.0.0.0:8080\" "
                                         f"(got {_show(s['listen'])})") from None
    for host in s["allow_hosts"]:
        if not is_host_name(host):
            raise r.fail("server", "allow_hosts", f"{_show(host)}: expected a host name, e.g. \"pi.example.com\"")
    token = _secret(r, "server", s, "token")
    if token is not None and not TOKEN_RE.fullmatch(token.strip()):
        key = next(k for k in ("token", "token_env", "token_file") if s[k] is not None)
        raise r.fail("server", key, TOKEN_RULE)
    given = next((k for k in ("token", "token_env", "token_file") if s[k] is not None), None)
    shown = {"token": "", "token_env": f" (${s['token_env']})",
             "token_file": f" ({_relative(r.path.parent, s['token_file'])})" if s["token_file"] else ""}
    token_from = None if given is None else f"the config's server.{given}{shown[given]}"
    return ServerConfig(listen=s["listen"], token=token, token_from=token_from, show=s["show"], allow_hosts=s["allow_hosts"],
                        max_upload_mb=float(s["max_upload_mb"]))


def _secret(r: _Reader, where: str, values: dict, key: str) -> str | None:
    """``key`` from the file, ``key_env`` (a variable's name) or ``key_file`` (a file's path): at most one."""
    given = [k for k in (key, f"{key}_env", f"{key}_file") if values.get(k) is not None]
    if len(given) > 1:
        raise r.fail(where, given[1], f"give one of {', '.join(given)}, not several")
    if not given:
        return None
    k = given[0]
    try:
        if k.endswith("_env"):
            return read_secret(env=values[k])
        if k.endswith("_file"):
            return read_secret(file=_relative(r.path.parent, values[k]))
        return values[k]
    except EdgeclfError as e:
        raise r.fail(where, k, str(e)) from None


def _mqtt(r: _Reader, data: dict, name: str | None, sources: list[str]) -> MqttOptions:
    m = r.table(data, "mqtt", MQTT_KEYS)
    if not m["host"]:
        raise r.fail("mqtt", "host", "missing: the broker's host name or address")
    if "/" in m["host"] or m["host"].count(":") == 1:  # "mqtt://broker", "broker:1883" (IPv6 has more colons)
        raise r.fail("mqtt", "host", f"a host name or address only, not a URL or host:port (the port goes in port; got {_show(m['host'])})")
    if m["discovery"] and (pair := shared_id(sources)):
        raise r.fail("mqtt", "discovery", f"sources {pair[0]!r} and {pair[1]!r} would share one Home Assistant id: rename one")
    _check_range(r, "mqtt", "port", m["port"], 1, 65535)
    _check_range(r, "mqtt", "qos", m["qos"], 0, 2)
    _check_range(r, "mqtt", "keepalive", m["keepalive"], 5, 3600)
    password = _secret(r, "mqtt", m, "password")
    for key in ("ca_file", "cert_file", "key_file"):
        if m[key] is not None:
            m[key] = str(_relative(r.path.parent, m[key]))
    kwargs = {k: v for k, v in m.items() if k not in ("password", "password_env", "password_file") and v is not None}
    if "node_id" not in kwargs and name:
        kwargs["node_id"] = name
    try:
        options = MqttOptions(password=password, **kwargs)
    except EdgeclfError as e:
        raise r.fail("mqtt", None, str(e).removeprefix("mqtt: ")) from None
    if options.tls:
        try:
            tls_context(options)  # a certificate that cannot be used fails here, not at every reconnect
        except EdgeclfError as e:
            key = next((k for k in ("ca_file", "cert_file", "key_file") if m[k] and m[k] in str(e)), "tls")
            raise r.fail("mqtt", key, str(e).removeprefix("mqtt: ")) from None
    return options


def _webhook(r: _Reader, data: Any, where: str) -> WebhookOptions:
    if not isinstance(data, dict):
        raise r.fail("", "webhook", "must be a table ([webhook]) or an array of tables ([[webhook]])")
    w = r.table(data, where, WEBHOOK_KEYS)
    url = _secret(r, where, w, "url")
    if not url:
        raise r.fail(where, "url", "missing: the address to POST each state change to")
    _check_range(r, where, "timeout", w["timeout"], 0, 300, low_open=True)
    _check_range(r, where, "retries", w["retries"], 0, 100)
    _check_range(r, where, "backoff", w["backoff"], 0, 3600)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in w["headers"].items()):
        raise r.fail(where, "headers", "must map header names to strings")
    try:
        check_headers(w["headers"])
    except EdgeclfError as e:
        raise r.fail(where, "headers", str(e).removeprefix("webhook: ")) from None
    key = next(k for k in ("url", "url_env") if w[k] is not None)
    try:
        split_credentials(url)
        return WebhookOptions(url=url, timeout=float(w["timeout"]), retries=w["retries"], backoff=float(w["backoff"]),
                              headers=dict(w["headers"]), snapshot=w["snapshot"])
    except EdgeclfError as e:
        raise r.fail(where, key, str(e).removeprefix("webhook: ")) from None
    except ValueError as e:  # a port that is not a number
        raise r.fail(where, key, f"{shown_url(url)!r} is not a URL ({e})") from None
