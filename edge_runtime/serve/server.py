"""``edgeclf predict MODEL SOURCE --serve [HOST:]PORT``: watch a headless device's predictions in a browser.

One page (``/``) shows the annotated video as MJPEG (``/stream.mjpg``) beside the label, score,
top-K bars, frames per second, model and provider, kept current by server-sent events
(``/events``). Machines read ``/api/prediction`` (the ``--json`` record of the newest frame),
``/api/health`` and ``/snapshot.jpg``. Built on the standard library's threaded HTTP server: one
thread per connection, nothing to install.

Viewers never slow the inference loop: ``publish`` only swaps a reference, waking nobody. One
fan-out thread encodes the newest result as a JPEG at most
``stream_fps`` times a second (once for all viewers, and only while someone watches) and sends it
with non-blocking writes to every viewer ready for it: a slow viewer skips frames instead of
queueing them, and one that stops reading is dropped after ``send_timeout`` seconds.
"""

from __future__ import annotations

import collections
import functools
import ipaddress
import json
import selectors
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, Callable, Sequence
from urllib.parse import urlsplit

import cv2
import numpy as np

from edgeclf.errors import EdgeclfError, safe_text
from edgeclf.model.classifier import Prediction
from edgeclf.sinks.outputs import annotate, record

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _log(msg: str) -> None:
    print(f"edgeclf serve: {msg}", file=sys.stderr, flush=True)


def parse_address(spec: str) -> tuple[str, int]:
    """``8080``, ``:8080``, ``0.0.0.0:8080``, ``[::1]:8080`` -> (host, port); the host defaults to
    127.0.0.1 so nothing is exposed to the network unless asked for. Port 0 picks a free one."""
    text = str(spec).strip()
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    if host.count(":") and not host.startswith("["):
        port = ""  # a bare IPv6 address: the port is ambiguous without brackets
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or int(port) > 65535:
        raise EdgeclfError(f"--serve {text!r}: expected [HOST:]PORT, e.g. 8080, 127.0.0.1:8080 or 0.0.0.0:8080")
    return host, int(port)


def _host_name(header: str) -> str:
    """The name in a Host header, without port or brackets, lower case: ``[::1]:80`` -> ``::1``."""
    host = header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        host = host.split(":")[0]
    return host.rstrip(".")


def _allowed_hosts(bound: str, extra: Sequence[str]) -> frozenset[str]:
    names = {"localhost", _host_name(bound), socket.gethostname().lower()}
    names.add(socket.gethostname().lower().split(".")[0] + ".local")  # mDNS, as a Raspberry Pi answers to
    for name in extra:
        if not name.strip() or any(c in name for c in "/ \t"):
            raise EdgeclfError(f"--allow-host {name!r}: expected a host name, e.g. pi.example.com")
        names.add(_host_name(name))
    return frozenset(names)


def host_allowed(header: str | None, allowed: frozenset[str]) -> bool:
    """Whether a request's Host header names this server. A web page from another site can reach
    127.0.0.1 by pointing its own name at it (DNS rebinding); its requests then carry that name, so
    only IP addresses (which cannot be rebound), localhost names, this machine's names and the
    names the user allowed are answered. No Host at all (HTTP/1.0 tools) is not a browser."""
    if header is None:
        return True
    host = _host_name(header)
    if host in allowed or host.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # socketserver's 5 drops connections when viewers arrive together
    block_on_close = False  # close() drops stalled viewers itself rather than waiting on them
    live: "LiveServer"

    def handle_error(self, request, client_address) -> None:  # noqa: ANN001 (socketserver's signature)
        exc = sys.exc_info()[1]
        self.live.log(f"{client_address[0]}: connection error: {type(exc).__name__}: {exc}")


class _Server6(_Server):
    address_family = socket.AF_INET6


@dataclass(eq=False)
class _Viewer:
    """One open stream: the frame or event being sent to it, and since when."""

    sock: socket.socket
    kind: str  # "stream" (MJPEG) or "events" (server-sent events)
    who: str
    done: threading.Event = field(default_factory=threading.Event)
    pending: memoryview | None = None
    since: float = 0.0


def _ready(socks: list[socket.socket], event: int, timeout: float) -> list[socket.socket]:
    """Those of ``socks`` ready for ``event`` (selectors.EVENT_READ or EVENT_WRITE) within
    ``timeout`` seconds, through the platform's best mechanism (epoll, poll or select)."""
    if not socks:
        return []
    with selectors.DefaultSelector() as sel:
        for s in socks:
            sel.register(s, event)
        return [key.fileobj for key, _ in sel.select(timeout)]


def _hung_up(socks: list[socket.socket]) -> list[socket.socket]:
    """The sockets whose viewer closed the connection (readable with nothing to read)."""
    gone = []
    for s in _ready(socks, selectors.EVENT_READ, 0):
        try:
            if not s.recv(4096):  # a viewer sends nothing after its request: this is the end
                gone.append(s)
        except BlockingIOError:
            pass
        except OSError:
            gone.append(s)
    return gone


class LiveServer:
    """The live view's web server. Create it (binds the port), ``start()`` it, ``publish()`` every
    result from the inference loop, ``close()`` it (also a context manager).

    ``info``: static facts shown on the page and in ``/api/health`` (model, providers, source...).
    ``source_state``: returns the source's state for ``/api/health`` ("connected", "reconnecting",
    "ended"...); ``mark_ended`` overrides it once the loop has finished.
    """

    def __init__(
        self,
        address: str,
        *,
        info: dict[str, Any] | None = None,
        top: int = 3,
        source_state: Callable[[], str] = lambda: "connected",
        stream_fps: float = 25.0,
        max_width: int = 640,
        jpeg_quality: int = 80,
        send_timeout: float = 10.0,
        events_hz: float = 10.0,
        log: Callable[[str], None] = _log,
        allow_hosts: Sequence[str] = (),
    ) -> None:
        self.host, port = parse_address(address)
        self.allowed_hosts = _allowed_hosts(self.host, allow_hosts)
        self.info = dict(info or {})
        self.top = max(1, top)
        self.source_state = source_state
        self.stream_fps = stream_fps
        self.max_width = max_width
        self.jpeg_quality = jpeg_quality
        self.send_timeout = send_timeout
        self.events_hz = events_hz
        # Request lines and client addresses come from the network: whatever the log, control
        # sequences must not reach the operator's terminal (the standard library's log_message
        # escapes them; edgeclf's replaces it).
        self.log: Callable[[str], None] = lambda msg: log(safe_text(msg))

        self.started_at = time.monotonic()
        self.frames = 0
        self._times: collections.deque[float] = collections.deque(maxlen=64)
        self._lock = threading.Lock()
        # The newest result, as published: (image, prediction, source, frame, latency_ms, time).
        self._latest: tuple[np.ndarray, Prediction, str, int | None, float, float] | None = None
        self._fresh = threading.Event()  # a result the video viewers have not had yet
        self._has_viewers = threading.Event()
        self._viewers: list[_Viewer] = []
        self._closed = threading.Event()
        self._ended = False

        server_cls = _Server6 if ":" in self.host else _Server
        try:
            self._httpd = server_cls((self.host, port), _Handler)
        except socket.gaierror as e:
            raise EdgeclfError(f"--serve {address}: cannot resolve host {self.host!r} ({e.strerror})") from None
        except OSError as e:
            raise EdgeclfError(f"--serve {address}: cannot listen on {self.host}:{port} ({e.strerror or e})") from None
        self._httpd.live = self
        self.port = self._httpd.server_address[1]
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ life cycle
    @property
    def url(self) -> str:
        host = self.host
        if host in ("0.0.0.0", "::", ""):
            host = socket.gethostname()
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.port}/"

    @property
    def exposed(self) -> bool:
        """True when the address reaches beyond this machine (anything but loopback)."""
        return self.host not in LOOPBACK and not self.host.startswith("127.")

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def start(self) -> "LiveServer":
        for target, name in ((self._serve, "http"), (self._fanout, "fan-out")):
            t = threading.Thread(target=target, name=f"edgeclf serve {name}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _serve(self) -> None:
        self._httpd.serve_forever(poll_interval=0.2)

    def close(self) -> None:
        """Stop serving, end every stream and release the port."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._fresh.set()
        self._has_viewers.set()
        if self._threads:
            self._httpd.shutdown()
        self._httpd.server_close()
        for t in self._threads:
            t.join(timeout=2)
        with self._lock:
            viewers, self._viewers = self._viewers, []
        for v in viewers:
            v.done.set()  # their handler threads return and close the sockets

    def __enter__(self) -> "LiveServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ the inference side
    def publish(self, image_bgr: np.ndarray, prediction: Prediction, source: str = "", frame: int | None = None,
                latency_ms: float = 0.0) -> None:
        """Hand the newest result to the viewers. Cheap: no copy, no encoding, no I/O, and no
        thread woken, so the inference loop does not wait on the viewers' turn for the GIL."""
        now = time.monotonic()
        with self._lock:
            self._latest = (image_bgr, prediction, source, frame, latency_ms, now)
            self.frames += 1
            self._times.append(now)
        if not self._fresh.is_set():
            self._fresh.set()

    def mark_ended(self) -> None:
        """The source has no more frames; the last result stays on show."""
        self._ended = True

    # --------------------------------------------------------------------- state
    def fps(self) -> float:
        """Frames per second over the last 64 results (0 when none came for 2 s)."""
        with self._lock:
            times = list(self._times)
        if len(times) < 2 or time.monotonic() - times[-1] > 2.0:
            return 0.0
        return (len(times) - 1) / max(times[-1] - times[0], 1e-9)

    def prediction(self) -> dict[str, Any] | None:
        """The newest result as ``edgeclf predict --json`` prints it, plus its age in seconds."""
        with self._lock:
            latest = self._latest
        if latest is None:
            return None
        _, pred, source, frame, latency_ms, at = latest
        return {**record(source, frame, pred, latency_ms, self.top), "age_s": round(time.monotonic() - at, 3)}

    def health(self) -> dict[str, Any]:
        with self._lock:
            last = self._latest[-1] if self._latest else None
            viewers = collections.Counter(v.kind for v in self._viewers)
        return {
            "status": "ok",
            "uptime_s": round(time.monotonic() - self.started_at, 3),
            "frames": self.frames,
            "fps": round(self.fps(), 2),
            "last_frame_age_s": None if last is None else round(time.monotonic() - last, 3),
            "source_state": "ended" if self._ended else self.source_state(),
            "viewers": {"stream": viewers["stream"], "events": viewers["events"]},
            **self.info,
        }

    def status_event(self) -> dict[str, Any]:
        """What the page shows, in one server-sent event."""
        h = self.health()
        return {
            "prediction": self.prediction(), "fps": h["fps"], "frames": h["frames"],
            "source_state": h["source_state"], "uptime_s": h["uptime_s"], "viewers": h["viewers"],
        }

    def snapshot(self) -> bytes | None:
        """The newest result as an annotated JPEG (None before the first)."""
        with self._lock:
            latest = self._latest
        if latest is None:
            return None
        image, pred = latest[0], latest[1]
        img = annotate(image, pred, self.fps() or None, self.top)
        if img.shape[1] > self.max_width:
            h = max(1, round(img.shape[0] * self.max_width / img.shape[1]))
            img = cv2.resize(img, (self.max_width, h), interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        return buf.tobytes() if ok else None

    # ----------------------------------------------------------------- viewers
    def _add_viewer(self, kind: str, sock: socket.socket, who: str) -> _Viewer:
        viewer = _Viewer(sock, kind, who)
        if kind == "events":
            viewer.pending = memoryview(b"retry: 1000\n\n")  # the browser's reconnect delay, in ms
        sock.setblocking(False)
        # A small send buffer keeps a slow viewer's backlog to a frame or two: the rest is dropped
        # for that viewer alone, instead of queueing seconds of video in the kernel.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 256 * 1024)
        with self._lock:
            if self._closed.is_set():
                viewer.done.set()
                return viewer
            self._viewers.append(viewer)
            self._has_viewers.set()
        if kind == "stream":
            self._fresh.set()  # a new viewer gets the current frame at once, even from a paused source
        return viewer

    def _drop(self, viewer: _Viewer, why: str | None = None) -> None:
        with self._lock:
            if viewer in self._viewers:
                self._viewers.remove(viewer)
        if why:
            self.log(f"{viewer.who}: {why}")
        viewer.done.set()

    def _fanout(self) -> None:
        """One thread sends every stream: the newest frame at most ``stream_fps`` times a second
        (encoded once for all viewers) and a status event ``events_hz`` times a second. A viewer
        still busy with the previous one skips it; one that accepts nothing for ``send_timeout``
        seconds is dropped. One thread, not one per viewer, so 20 viewers cost no more wake-ups
        than one."""
        failed = False
        while not self._closed.is_set():
            try:
                self._fanout_loop()
            except Exception as e:  # noqa: BLE001 (the live view must outlive a bad frame)
                if not failed:
                    self.log(f"live view error, still serving: {type(e).__name__}: {e}")
                failed = True
                self._closed.wait(0.1)

    def _fanout_loop(self) -> None:
        video_period, event_period = 1.0 / self.stream_fps, 1.0 / self.events_hz
        next_video = next_event = next_check = 0.0
        while not self._closed.is_set():
            with self._lock:
                viewers = list(self._viewers)
                if not viewers:
                    self._has_viewers.clear()
            if not viewers:
                self._has_viewers.wait()
                continue
            now = time.monotonic()
            if now >= next_check:  # viewers that left while no frame came (a paused source)
                gone = set(_hung_up([v.sock for v in viewers]))
                for v in [v for v in viewers if v.sock in gone]:
                    self._drop(v)
                    viewers.remove(v)
                next_check = now + 1.0
            video = [v for v in viewers if v.kind == "stream"]
            events = [v for v in viewers if v.kind == "events"]
            if video and now >= next_video and self._fresh.is_set():
                self._fresh.clear()
                jpeg = self.snapshot()
                if jpeg is not None:
                    part = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%b\r\n" % (len(jpeg), jpeg)
                    self._offer(video, part, now)
                next_video = now + video_period
            if events and now >= next_event:
                data = json.dumps(self.status_event(), ensure_ascii=False)
                self._offer(events, f"data: {data}\n\n".encode(), now)
                next_event = now + event_period
            self._send(viewers, now)

            wake_at = min(next_event if events else now + 1.0, next_check)
            if video and self._fresh.is_set():
                wake_at = min(wake_at, next_video)
            timeout = max(0.0, wake_at - time.monotonic())
            pending = [v.sock for v in viewers if v.pending is not None and not v.done.is_set()]
            if pending:
                _ready(pending, selectors.EVENT_WRITE, min(timeout, 0.02))  # short: a new frame may come meanwhile
            elif video and not self._fresh.is_set():
                self._fresh.wait(timeout)
            else:
                self._closed.wait(timeout)

    @staticmethod
    def _offer(viewers: list[_Viewer], data: bytes, now: float) -> None:
        for v in viewers:
            if v.pending is None:  # else it is still busy with the last one: it skips this one
                v.pending, v.since = memoryview(data), now

    def _send(self, viewers: list[_Viewer], now: float) -> None:
        for v in viewers:
            if v.pending is None:
                continue
            try:
                sent = v.sock.send(v.pending)
            except BlockingIOError:
                sent = 0
            except OSError:  # the viewer went away: normal
                self._drop(v)
                continue
            v.pending = v.pending[sent:] if sent < len(v.pending) else None
            if v.pending is not None and now - v.since > self.send_timeout:
                self._drop(v, f"{'/stream.mjpg' if v.kind == 'stream' else '/events'} viewer stopped reading for {self.send_timeout:g} s; dropped")


@functools.lru_cache(maxsize=1)
def page_html() -> bytes:
    """The live view page: plain HTML, CSS and JavaScript, nothing fetched from elsewhere."""
    return resources.files("edgeclf.serve").joinpath("live.html").read_bytes()


class _Handler(BaseHTTPRequestHandler):
    """Routes: / (the page), /stream.mjpg, /events, /snapshot.jpg, /api/prediction, /api/health."""

    server_version = "edgeclf"
    protocol_version = "HTTP/1.0"  # one request per connection: streams end by closing
    server: _Server

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
        live = self.server.live
        viewer = live._add_viewer(kind, self.connection, f"{self.client_address[0]}:{self.client_address[1]}")
        viewer.done.wait()
        self.close_connection = True
