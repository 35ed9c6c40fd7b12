"""The live view's HTTP side: the threaded server from the standard library (one thread per
connection, nothing to install) and its routes (``Handler``). Every route but ``OPEN`` needs the
API token when the server has one (``auth``)."""

from __future__ import annotations

import functools
import json
import re
import socket
import sys
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, parse_qs, urlsplit

from edgeclf.errors import EdgeclfError
from edgeclf.serve.address import host_allowed
from edgeclf.serve.api import UPLOAD_READ_S, ApiError

if TYPE_CHECKING:
    from edgeclf.serve.server import LiveServer


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # socketserver's 5 drops connections when viewers arrive together
    block_on_close = False  # close() drops stalled viewers itself rather than waiting on them
    live: LiveServer

    def handle_error(self, request, client_address) -> None:  # noqa: ANN001 (socketserver's signature)
        exc = sys.exc_info()[1]
        self.live.log(f"{client_address[0]}: connection error: {type(exc).__name__}: {exc}")


class Server6(Server):
    address_family = socket.AF_INET6


def listen(live: LiveServer, address: str, host: str, port: int) -> Server:
    """A server for ``live`` bound to ``host:port`` (not serving yet); ``address`` is the
    ``--serve`` text its errors name."""
    server_cls = Server6 if ":" in host else Server
    try:
        httpd = server_cls((host, port), Handler)
    except socket.gaierror as e:
        raise EdgeclfError(f"--serve {address}: cannot resolve host {host!r} ({e.strerror})") from None
    except OSError as e:
        raise EdgeclfError(f"--serve {address}: cannot listen on {host}:{port} ({e.strerror or e})") from None
    httpd.live = live
    return httpd


@functools.lru_cache(maxsize=1)
def page_html() -> bytes:
    """The live view page: plain HTML, CSS and JavaScript, nothing fetched from elsewhere."""
    return resources.files("edgeclf.serve").joinpath("live.html").read_bytes()


#: Routes answered without the token: liveness probes and the browser's icon request.
OPEN = frozenset({"/healthz", "/favicon.ico"})
PAGE = frozenset({"/", "/index.html"})
POST_ROUTES = frozenset({"/api/classify"})
#: A token in a logged request line is replaced by this (``/?token=...`` signs a browser in).
_TOKEN_IN_URL = re.compile(r"([?&]token=)[^&\s]*", re.IGNORECASE)
UNAUTHORIZED = ("unauthorized: send the API token as 'Authorization: Bearer <token>', "
                "or open /?token=<token> once in the browser")


class Handler(BaseHTTPRequestHandler):
    """Routes: / (the page), /stream.mjpg, /events, /snapshot.jpg, /api/prediction, /api/health,
    /api/state, /healthz, /metrics (GET and HEAD), /api/classify (POST)."""

    server_version = "edgeclf"
    protocol_version = "HTTP/1.0"  # one request per connection: streams end by closing
    server: Server

    # Quiet successes (a page polling /api/health would fill the log); errors are logged.
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        line = _TOKEN_IN_URL.sub(r"\1<redacted>", getattr(self, "requestline", "") or "")
        where = f' "{line}"' if line else ""
        text = f"{args[0]} {args[1]}" if format == "code %d, message %s" else format % args  # send_error's
        self.server.live.log(f"{self.client_address[0]}{where}: {text}")

    def setup(self) -> None:
        # Applies to reads and writes: a client that connects and sends nothing, or a viewer that
        # stops reading, is dropped (and logged) after this many seconds.
        self.timeout = self.server.live.send_timeout
        super().setup()

    # ------------------------------------------------------------------ routing
    def do_GET(self) -> None:
        self._route("GET")

    def do_HEAD(self) -> None:
        self._route("HEAD")

    def do_POST(self) -> None:
        self._route("POST")

    def _other(self) -> None:
        self._not_allowed("POST" if urlsplit(self.path).path in POST_ROUTES else "GET, HEAD")

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _other

    def _not_allowed(self, allow: str) -> None:
        self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
        self.log_message("code %d, message %s", HTTPStatus.METHOD_NOT_ALLOWED, f"Method Not Allowed ({allow} only)")
        self.send_header("Allow", allow)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _route(self, method: str) -> None:
        live = self.server.live
        url = urlsplit(self.path)
        path = url.path
        if not host_allowed(self.headers.get("Host"), live.allowed_hosts):
            self.send_error(HTTPStatus.FORBIDDEN, explain="Unknown Host header: this live view answers only to its own "
                            "addresses (add names with --allow-host).")
            return
        if method != "POST" and path in PAGE and "token" in parse_qs(url.query):
            self._sign_in(url, body=method == "GET")
            return
        if path not in OPEN and not live.auth.allows(self.headers):
            self._unauthorized(method != "HEAD")
            return
        allow = "POST" if path in POST_ROUTES else "GET, HEAD"
        if method not in allow.split(", "):
            self._not_allowed(allow)
        elif method == "POST":
            self._classify(url)
        else:
            self._get(path, body=method == "GET")

    def _get(self, path: str, body: bool) -> None:
        live = self.server.live
        if path in PAGE:
            self._send(200, "text/html; charset=utf-8", page_html(), body)
        elif path == "/api/health":
            self._send_json(live.health(), body)
        elif path == "/healthz":
            reasons = live.unhealthy()
            self._send_json({"status": "unhealthy", "reasons": reasons} if reasons else {"status": "ok"}, body,
                            HTTPStatus.SERVICE_UNAVAILABLE if reasons else 200)
        elif path == "/api/state":
            state = live.state()
            self._send_json(state if state is not None else {"error": "no state yet"}, body, 200 if state is not None else 404)
        elif path == "/metrics":
            if live.metrics is None:
                self._send_json({"error": "no metrics on this server"}, body, HTTPStatus.NOT_FOUND)
            else:
                self._send(200, live.metrics.content_type, live.metrics.render(), body)
        elif path == "/api/prediction":
            pred = live.prediction()
            self._send_json(pred if pred is not None else {"error": "no prediction yet"}, body,
                            200 if pred is not None else HTTPStatus.SERVICE_UNAVAILABLE)
        elif path == "/snapshot.jpg":
            jpeg = live.snapshot()
            if jpeg is None:
                self._send_json({"error": "no frame yet"}, body, HTTPStatus.SERVICE_UNAVAILABLE)
            else:
                self._send(200, "image/jpeg", jpeg, body)
        elif path in ("/stream.mjpg", "/events"):
            self._stream_start("multipart/x-mixed-replace; boundary=frame" if path == "/stream.mjpg" else "text/event-stream")
            if body:
                self._stream("stream" if path == "/stream.mjpg" else "events")
        elif path == "/favicon.ico":
            self._send(204, "image/x-icon", b"", body)
        else:
            self.send_error(HTTPStatus.NOT_FOUND, explain=f"No such page: {path}. The live view is at /.")

    # ------------------------------------------------------------------ the token
    def _sign_in(self, url: SplitResult, body: bool) -> None:
        """``/?token=...``: with the right token, set the cookie and send the browser to the same
        page without the token in its address; with a wrong one, 401."""
        auth = self.server.live.auth
        if not auth.matches(parse_qs(url.query)["token"][-1]):
            self._unauthorized(body)
            return
        self.send_response(HTTPStatus.SEE_OTHER)
        self.send_header("Location", url.path)
        if auth.required:
            self.send_header("Set-Cookie", auth.set_cookie())
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _unauthorized(self, body: bool) -> None:
        self.log_message("code %d, message %s", HTTPStatus.UNAUTHORIZED, "Unauthorized (no or wrong API token)")
        self._send_json({"error": UNAUTHORIZED}, body, HTTPStatus.UNAUTHORIZED,
                        {"WWW-Authenticate": 'Bearer realm="edgeclf"'})

    # ------------------------------------------------------------------ uploads
    def _classify(self, url: SplitResult) -> None:
        """``POST /api/classify``: headers checked before the body is read, the body read within
        ``UPLOAD_READ_S`` and never beyond its Content-Length."""
        api = self.server.live.api
        self.close_connection = True  # an unread body must not be taken for a next request
        try:
            size, top = api.check_request(self.headers.get("Content-Length"),
                                          "chunked" in (self.headers.get("Transfer-Encoding") or "").lower(),
                                          parse_qs(url.query).get("top", []))
            if not api.admit():
                raise ApiError(503, "busy: too many uploads being classified; retry later")
            try:
                result = api.classify(self._read_body(size), top)
            finally:
                api.leave()
        except ApiError as e:
            if e.status >= 500 or e.status == 408:
                self.log_message("code %d, message %s", e.status, e.reason)
            extra = {"Retry-After": "1"} if e.status == 503 else {}
            self._send_json({"error": e.reason}, True, e.status, extra)
            return
        self._send_json(result, True)

    def _read_body(self, size: int) -> bytes:
        """Exactly ``size`` bytes of body, or ``ApiError`` (408 when they take too long)."""
        deadline = time.monotonic() + UPLOAD_READ_S
        buf = bytearray()
        try:
            while len(buf) < size:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                self.connection.settimeout(min(left, self.timeout))
                chunk = self.rfile.read1(min(size - len(buf), 1 << 16))
                if not chunk:
                    raise ApiError(400, f"body ended after {len(buf)} of its {size} bytes")
                buf += chunk
        except (TimeoutError, socket.timeout):
            raise ApiError(408, f"upload too slow: {len(buf)} of {size} bytes arrived in time") from None
        finally:
            self.connection.settimeout(self.timeout)
        return bytes(buf)

    # ------------------------------------------------------------------ answers
    def _send(self, code: int, ctype: str, data: bytes, body: bool, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if body and data:
            self.wfile.write(data)

    def _send_json(self, obj: Any, body: bool, code: int = 200, headers: dict[str, str] | None = None) -> None:
        self._send(code, "application/json", json.dumps(obj, ensure_ascii=False).encode(), body, headers)

    def _stream_start(self, ctype: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()

    # ------------------------------------------------------------------ streams
    def _stream(self, kind: str) -> None:
        """Hand the connection to the fan-out thread; wait here until it is done with it."""
        who = f"{self.client_address[0]}:{self.client_address[1]}"
        viewer = self.server.live.fanout.add(kind, self.connection, who)
        viewer.done.wait()
        self.close_connection = True

