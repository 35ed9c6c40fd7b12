"""The live view's streams: one thread sends the MJPEG video (``/stream.mjpg``) and the status
events (``/events``) to every viewer, with non-blocking writes.

The newest frame is encoded at most ``stream_fps`` times a second, once for all viewers and only
while someone watches; a viewer still busy with the previous one skips it instead of queueing it,
and one that accepts nothing for ``send_timeout`` seconds is dropped. One thread, not one per
viewer, so 20 viewers cost no more wake-ups than one.
"""

from __future__ import annotations

import collections
import json
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

#: One frame of ``multipart/x-mixed-replace; boundary=frame``, filled with (length, JPEG).
MJPEG_PART = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%b\r\n"


@dataclass(eq=False)
class Viewer:
    """One open stream: the frame or event being sent to it, and since when."""

    sock: socket.socket
    kind: str  # "stream" (MJPEG) or "events" (server-sent events)
    who: str
    done: threading.Event = field(default_factory=threading.Event)
    pending: memoryview | None = None
    since: float = 0.0


def ready(socks: list[socket.socket], event: int, timeout: float) -> list[socket.socket]:
    """Those of ``socks`` ready for ``event`` (selectors.EVENT_READ or EVENT_WRITE) within
    ``timeout`` seconds, through the platform's best mechanism (epoll, poll or select)."""
    if not socks:
        return []
    with selectors.DefaultSelector() as sel:
        for s in socks:
            sel.register(s, event)
        return [key.fileobj for key, _ in sel.select(timeout)]


def hung_up(socks: list[socket.socket]) -> list[socket.socket]:
    """The sockets whose viewer closed the connection (readable with nothing to read)."""
    gone = []
    for s in ready(socks, selectors.EVENT_READ, 0):
        try:
            if not s.recv(4096):  # a viewer sends nothing after its request: this is the end
                gone.append(s)
        except BlockingIOError:
            pass
        except OSError:
            gone.append(s)
    return gone


class FanOut:
    """The viewers of one live view and the thread (``run``) that sends them ``frame()`` (a JPEG,
    or None) and ``status()`` (a JSON-ready dict). ``new_frame()`` says a result came; ``stop()``
    ends the thread, ``end_streams()`` then lets every viewer's handler return."""

    def __init__(self, frame: Callable[[], bytes | None], status: Callable[[], dict[str, Any]], *,
                 stream_fps: float, events_hz: float, send_timeout: float, log: Callable[[str], None]) -> None:
        self._frame, self._status, self._log = frame, status, log
        self._video_period, self._event_period = 1.0 / stream_fps, 1.0 / events_hz
        self.send_timeout = send_timeout
        self._lock = threading.Lock()
        self._viewers: list[Viewer] = []
        self._fresh = threading.Event()  # a result the video viewers have not had yet
        self._has_viewers = threading.Event()
        self._closed = threading.Event()
        self._next_video = self._next_event = self._next_check = 0.0

    # ------------------------------------------------------------------ viewers
    def add(self, kind: str, sock: socket.socket, who: str) -> Viewer:
        """Take over ``sock`` as a ``kind`` stream; its ``done`` is set once the thread is done with it."""
        viewer = Viewer(sock, kind, who)
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

    def counts(self) -> collections.Counter[str]:
        """Open streams by kind: ``{"stream": 2, "events": 1}``."""
        with self._lock:
            return collections.Counter(v.kind for v in self._viewers)

    def _drop(self, viewer: Viewer, why: str | None = None) -> None:
        with self._lock:
            if viewer in self._viewers:
                self._viewers.remove(viewer)
        if why:
            self._log(f"{viewer.who}: {why}")
        viewer.done.set()

    # --------------------------------------------------------------- life cycle
    def new_frame(self) -> None:
        """A result came: the video viewers are due a frame."""
        if not self._fresh.is_set():
            self._fresh.set()

    def stop(self) -> None:
        """Refuse new viewers and end ``run``."""
        self._closed.set()
        self._fresh.set()
        self._has_viewers.set()

    def end_streams(self) -> None:
        """Release every viewer (their handler threads return and close the sockets)."""
        with self._lock:
            viewers, self._viewers = self._viewers, []
        for v in viewers:
            v.done.set()

    def run(self) -> None:
        """The fan-out thread, until ``stop()``: an error is logged once and the streams go on."""
        failed = False
        while not self._closed.is_set():
            try:
                self._loop()
            except Exception as e:  # noqa: BLE001 (the live view must outlive a bad frame)
                if not failed:
                    self._log(f"live view error, still serving: {type(e).__name__}: {e}")
                failed = True
                self._closed.wait(0.1)

    # --------------------------------------------------------------- the loop
    def _loop(self) -> None:
        self._next_video = self._next_event = self._next_check = 0.0
        while not self._closed.is_set():
            viewers = self._wait_for_viewers()
            if not viewers:
                continue
            now = time.monotonic()
            if now >= self._next_check:  # viewers that left while no frame came (a paused source)
                viewers = self._drop_hung_up(viewers)
                self._next_check = now + 1.0
            video = [v for v in viewers if v.kind == "stream"]
            events = [v for v in viewers if v.kind == "events"]
            self._offer_frame(video, now)
            self._offer_status(events, now)
            self._send(viewers, now)
            self._sleep(viewers, video, events, now)

    def _wait_for_viewers(self) -> list[Viewer]:
        """The viewers now; while there are none, block until one comes (then return none)."""
        with self._lock:
            viewers = list(self._viewers)
            if not viewers:
                self._has_viewers.clear()
        if not viewers:
            self._has_viewers.wait()
        return viewers

    def _drop_hung_up(self, viewers: list[Viewer]) -> list[Viewer]:
        gone = set(hung_up([v.sock for v in viewers]))
        for v in viewers:
            if v.sock in gone:
                self._drop(v)
        return [v for v in viewers if v.sock not in gone]

    def _offer_frame(self, video: list[Viewer], now: float) -> None:
        if not video or now < self._next_video or not self._fresh.is_set():
            return
        self._fresh.clear()
        jpeg = self._frame()
        if jpeg is not None:
            self._offer(video, MJPEG_PART % (len(jpeg), jpeg), now)
        self._next_video = now + self._video_period

    def _offer_status(self, events: list[Viewer], now: float) -> None:
        if not events or now < self._next_event:
            return
        data = json.dumps(self._status(), ensure_ascii=False)
        self._offer(events, f"data: {data}\n\n".encode(), now)
        self._next_event = now + self._event_period

    def _sleep(self, viewers: list[Viewer], video: list[Viewer], events: list[Viewer], now: float) -> None:
        """Until the next frame or event is due, a viewer can take more, or a new result comes."""
        wake_at = min(self._next_event if events else now + 1.0, self._next_check)
        if video and self._fresh.is_set():
            wake_at = min(wake_at, self._next_video)
        timeout = max(0.0, wake_at - time.monotonic())
        pending = [v.sock for v in viewers if v.pending is not None and not v.done.is_set()]
        if pending:
            ready(pending, selectors.EVENT_WRITE, min(timeout, 0.02))  # short: a new frame may come meanwhile
        elif video and not self._fresh.is_set():
            self._fresh.wait(timeout)
        else:
            self._closed.wait(timeout)

    @staticmethod
    def _offer(viewers: list[Viewer], data: bytes, now: float) -> None:
        for v in viewers:
            if v.pending is None:  # else it is still busy with the last one: it skips this one
                v.pending, v.since = memoryview(data), now

    def _send(self, viewers: list[Viewer], now: float) -> None:
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
                path = "/stream.mjpg" if v.kind == "stream" else "/events"
                self._drop(v, f"{path} viewer stopped reading for {self.send_timeout:g} s; dropped")
