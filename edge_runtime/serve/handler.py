"""The live view's HTTP side: the threaded server from the standard library (one thread per
connection, nothing to install) and its routes: / (the page), /stream.mjpg, /events,
/snapshot.jpg, /api/prediction, /api/health."""

from __future__ import annotations

import functools
import json
import socket
import sys
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from edgeclf.errors import EdgeclfError
from edgeclf.serve.address import host_allowed

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


class Handler(BaseHTTPRequestHandler):
    """Routes: / (the page), /stream.mjpg, /events, /snapshot.jpg, /api/prediction, /api/health."""

    server_version = "edgeclf"
    protocol_version = "HTTP/1.0"  # one request per connection: streams end by closing
    server: Server

    # Quiet successes (a page polling /api/health would fill the log); errors are logged.
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        where = f' "{self.requestline}"' if getattr(self, "requestline", "") else ""
        text = f"{args[0]} {args[1]}" if format == "code %d, message %s" else format % args  # send_error's
        self.server.live.log(f"{self.client_address[0]}{where}: {text}")

    def setup(self) -> None:
        # Applies to reads and writes: a client that connects and sends nothing, or a viewer that
        # stops reading, is dropped (and logged) after this many seconds.
        self.timeout = self.server.live.send_timeout
        super().setup()

    # ------------------------------------------------------------------ routing
    def do_GET(self) -> None:
        self._route(body=True)

    def do_HEAD(self) -> None:
        self._route(body=False)

    def _not_allowed(self) -> None:
        self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
        self.log_message("code %d, message %s", HTTPStatus.METHOD_NOT_ALLOWED, "Method Not Allowed (GET and HEAD only)")
        self.send_header("Allow", "GET, HEAD")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed

    def _route(self, body: bool) -> None:
        live = self.server.live
        path = urlsplit(self.path).path
        if not host_allowed(self.headers.get("Host"), live.allowed_hosts):
            self.send_error(HTTPStatus.FORBIDDEN, explain="Unknown Host header: this live view answers only to its own "
                            "addresses (add names with --allow-host).")
        elif path in ("/", "/index.html"):
            self._send(200, "text/html; charset=utf-8", page_html(), body)
        elif path == "/api/health":
            self._send_json(live.health(), body)
        elif path == "/api/prediction":
            pred = live.prediction()
            if pred is None:
                self._send_json({"error": "no prediction yet"}, body, HTTPStatus.SERVICE_UNAVAILABLE)
            else:
                self._send_json(pred, body)
        elif path == "/snapshot.jpg":
            jpeg = live.snapshot()
            if jpeg is None:
                self._send_json({"error": "no frame yet"}, body, HTTPStatus.SERVICE_UNAVAILABLE)
            else:
                self._send(200, "image/jpeg", jpeg, body)
        elif path == "/stream.mjpg":
            self._stream_start("multipart/x-mixed-replace; boundary=frame")
            if body:
                self._stream("stream")
        elif path == "/events":
            self._stream_start("text/event-stream")
            if body:
                self._stream("events")
        elif path == "/favicon.ico":
            self._send(204, "image/x-icon", b"", body)
        else:
            self.send_error(HTTPStatus.NOT_FOUND, explain=f"No such page: {path}. The live view is at /.")

    def _send(self, code: int, ctype: str, data: bytes, body: bool) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if body and data:
            self.wfile.write(data)

    def _send_json(self, obj: Any, body: bool, code: int = 200) -> None:
        self._send(code, "application/json", json.dumps(obj, ensure_ascii=False).encode(), body)

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
