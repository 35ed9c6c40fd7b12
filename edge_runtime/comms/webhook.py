"""State changes as JSON POSTs to a URL (urllib only: no dependency).

Each event is POSTed as ``StateEvent.payload()`` (plus ``snapshot_jpeg``, base64, with
``snapshot``); any 2xx is success. A failure (refused, timeout, non-2xx, a redirect: redirects
are never followed, so headers cannot leak to another host) is retried after ``backoff``,
``2*backoff``, ... up to ``retries`` more times, unless a newer event of the same source is
pending: then the newer one goes instead. A source whose event finally failed is sent again
(its current state) when the URL next accepts an event, or after ``resend_after`` seconds
(doubling up to 10 minutes) while nothing else comes. A dead URL costs one log line per outage;
logs show the URL with its password masked and never show headers. ``timeout`` bounds each
connect and read, as urllib does. A ``user:password@`` in the URL becomes a Basic
``Authorization`` header (a header of ``headers`` with that name wins).
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable

from edgeclf.comms.base import DeliveryError, Publisher, StateEvent, Superseded, _log
from edgeclf.errors import EdgeclfError, first_line, safe_text
from edgeclf.redact import redact_url

MAX_RESPONSE = 64 * 1024  # what is read of a reply: only its status matters
MAX_RESEND_AFTER = 600.0


@dataclass
class WebhookOptions:
    """Where to POST. ``headers`` (an ``Authorization``, say) and the URL's password never show
    in a repr or a log."""

    url: str
    timeout: float = 5.0
    retries: int = 3
    backoff: float = 0.5
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    snapshot: bool = False
    resend_after: float = 30.0

    def __post_init__(self) -> None:
        if self.timeout <= 0 or self.retries < 0 or self.backoff < 0 or self.resend_after <= 0:
            raise EdgeclfError("webhook: timeout and resend_after must be > 0, retries and backoff >= 0")

    def __repr__(self) -> str:  # the URL may hold a password
        return (f"WebhookOptions(url={shown_url(self.url)!r}, timeout={self.timeout}, retries={self.retries}, "
                f"backoff={self.backoff}, snapshot={self.snapshot}, resend_after={self.resend_after})")


def shown_url(url: str) -> str:
    """``url`` as logs, errors and ``--check`` show it: scheme, host and port, with the path and
    query masked, since a webhook's path is often its only secret (Home Assistant's webhook id)."""
    shown = redact_url(url)
    try:
        parts = urllib.parse.urlsplit(shown)
    except ValueError:  # not a URL at all: nothing of it is shown
        return "***"
    if parts.path in ("", "/") and not parts.query and not parts.fragment:
        return shown
    return urllib.parse.urlunsplit(parts._replace(path="/***", query="", fragment=""))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a 3xx becomes an HTTPError: a failure, as it is not a 2xx


def split_credentials(url: str) -> tuple[str, dict[str, str]]:
    """``url`` without its ``user:password@`` and the Basic ``Authorization`` header they make
    (urllib would take them for part of the host). EdgeclfError for anything but http(s)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise EdgeclfError(f"webhook: {shown_url(url)!r} is not an http:// or https:// URL")
    if parts.port == 0:  # (.port itself raises ValueError for one that is not a number from 0 to 65535)
        raise ValueError("Port 0 is no port to send to")
    if parts.username is None and parts.password is None:
        return url, {}
    user = urllib.parse.unquote(parts.username or "")
    pw = urllib.parse.unquote(parts.password or "")
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    token = base64.b64encode(f"{user}:{pw}".encode()).decode("ascii")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc)), {"Authorization": f"Basic {token}"}


_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110's token
# No control characters (no CR or LF to split the request), and Latin-1 only, as http.client encodes values
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")


def check_headers(headers: dict[str, str]) -> None:
    """EdgeclfError naming the first header whose name or value no HTTP request can carry (the value
    is a secret: not shown)."""
    for name, value in headers.items():
        if not _HEADER_NAME.fullmatch(name):
            raise EdgeclfError(f"webhook: header name {safe_text(name)[:60]!r} is not a valid HTTP header name")
        if not _HEADER_VALUE.fullmatch(value):
            raise EdgeclfError(f"webhook: header {name}'s value holds a control character (a line break?) or a "
                               "character outside Latin-1, which HTTP headers cannot carry")


class WebhookPublisher(Publisher):
    """POSTs each source's new state to a URL; see the module's docstring for retries."""

    kind = "webhook"

    def __init__(self, options: WebhookOptions, *, log: Callable[[str], None] = _log) -> None:
        super().__init__(log)
        self.opts = options
        self.wants_snapshots = options.snapshot
        try:
            self._url, auth = split_credentials(options.url)
        except ValueError as e:  # a port that is not a number
            raise EdgeclfError(f"webhook: {shown_url(options.url)!r} is not a URL ({e})") from None
        self.shown_url = shown_url(options.url)
        check_headers(options.headers)
        self._headers = {**auth, **options.headers, "Content-Type": "application/json"}
        self._opener = urllib.request.build_opener(_NoRedirect)
        self._failed_sources: set[str] = set()
        self._down = False  # the last POST finally failed: the next success is a "reconnect"
        self._resend_delay = options.resend_after
        self._timer: threading.Timer | None = None

    def __repr__(self) -> str:
        return f"WebhookPublisher(url={self.shown_url!r})"

    # ------------------------------------------------------------ the base's hooks
    def _deliver(self, event: StateEvent) -> None:
        error: Exception | None = None
        for attempt in range(self.opts.retries + 1):
            if attempt and self._newer_pending(event.source, self.opts.backoff * 2 ** (attempt - 1)):
                raise Superseded("a newer state is pending")
            try:
                self._post(event)
            except (OSError, DeliveryError) as e:
                error = e
                continue
            self._accepted(event.source)
            return
        assert error is not None
        raise DeliveryError(first_line(error)) from None

    def _failed(self, event: StateEvent, error: Exception) -> None:
        with self._lock:
            self._failed_sources.add(event.source)
            first = not self._down
            self._down = True
        if first:
            self.log(f"{self.name}: POST to {self.shown_url} failed ({error}); "
                     f"will send the current state again once it accepts one")
        self._schedule_resend()

    def _shut(self) -> None:
        with self._lock:
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    # ---------------------------------------------------------------- helpers
    def _post(self, event: StateEvent) -> None:
        body = event.payload()
        if (jpeg := event.snapshot_for(self.opts.snapshot)) is not None:
            body["snapshot_jpeg"] = base64.b64encode(jpeg).decode("ascii")
        req = urllib.request.Request(self._url, data=json.dumps(body).encode("utf-8"),
                                     headers=self._headers, method="POST")
        try:
            with self._opener.open(req, timeout=self.opts.timeout) as resp:
                resp.read(MAX_RESPONSE)
                status = resp.status
        except urllib.error.HTTPError as e:  # a non-2xx reply: its text is the peer's, not ours
            e.close()
            raise DeliveryError(f"HTTP {e.code}") from None
        except urllib.error.URLError as e:
            raise DeliveryError(first_line(e.reason) if isinstance(e.reason, Exception) else str(e.reason)) from None
        except http.client.HTTPException as e:  # a reply that is not HTTP ("BadStatusLine: garbage")
            raise DeliveryError(f"not an HTTP reply ({type(e).__name__}: {first_line(e, 80)})") from None
        except ValueError as e:  # a request urllib cannot encode; its text may quote a secret header's characters
            raise DeliveryError(f"cannot send the request ({type(e).__name__})") from None
        if not 200 <= status < 300:
            raise DeliveryError(f"HTTP {status}")

    def _newer_pending(self, source: str, delay: float) -> bool:
        """Wait ``delay`` seconds before a retry; True as soon as a newer event of ``source`` is
        pending (or the publisher closes), so a stale state is not retried."""
        deadline = time.monotonic() + delay
        with self._lock:
            while source not in self._pending and not self._closing:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
            return True

    def _accepted(self, source: str) -> None:
        """The URL took an event: after an outage, queue the failed sources' current states."""
        with self._lock:
            self._failed_sources.discard(source)
            if not self._down:
                return
            self._down = False
            self._resend_delay = self.opts.resend_after
            self.stats["reconnects"] += 1
            for s in self._failed_sources:
                if s in self._current:
                    self._pending.setdefault(s, self._current[s])
            self._failed_sources.clear()
            self._lock.notify()
        self.log(f"{self.name}: {self.shown_url} accepts events again")

    def _schedule_resend(self) -> None:
        # Without this a state that failed would wait for the source's next change, maybe hours.
        with self._lock:
            if self._timer is not None or self._closing:
                return
            self._timer = threading.Timer(self._resend_delay, self._resend_failed)
            self._timer.daemon = True
            self._resend_delay = min(self._resend_delay * 2, MAX_RESEND_AFTER)
            self._timer.start()

    def _resend_failed(self) -> None:
        with self._lock:
            self._timer = None
            for s in self._failed_sources:
                if s in self._current:
                    self._pending.setdefault(s, self._current[s])
            self._lock.notify()
