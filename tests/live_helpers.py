"""Helpers for the ``--serve`` tests: a generated colour video, and viewers that read (or refuse
to read) the server's streams over real sockets. ``edgeclf predict --serve`` in a real process and
the plain client (``ServeProcess``, ``StreamCounter``, ``get``) are benchmarks/live_client.py's,
shared with benchmarks/serve_bench.py."""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path

import cv2
import numpy as np
from onnx_fixtures import BGR, COLOURS

from benchmarks.live_client import ServeProcess, StreamCounter, StreamReader, get, get_json  # noqa: F401


def make_colour_video(path: Path, frames: int = 60, fps: float = 20.0, hold: int = 10, size: tuple[int, int] = (160, 120),
                      noise: float = 20.0) -> Path:
    """An MP4 showing red, green and blue in turn, ``hold`` frames each, with the frame number
    written on it (so consecutive frames differ even within one colour), and pixel noise of
    standard deviation ``noise``."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    assert writer.isOpened()
    rng = np.random.default_rng(0)
    for i in range(frames):
        colour = COLOURS[(i // hold) % len(COLOURS)]
        img = np.array(BGR[colour], np.float32) * 0.8 + rng.normal(0, noise, (size[1], size[0], 3))
        img = np.clip(img, 0, 255).astype(np.uint8)
        cv2.putText(img, str(i), (10, size[1] // 2), cv2.FONT_HERSHEY_SIMPLEX, 1, (255, 255, 255), 2)
        writer.write(img)
    writer.release()
    return path


def raw_request(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send ``data`` as is on a fresh connection; the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


class MjpegViewer(StreamReader):
    """A viewer of /stream.mjpg that reads as fast as the server sends (``delay``: seconds to wait
    after each frame, a slow viewer) and counts the JPEG frames it received; ``frames_since(t)``."""

    def __init__(self, port: int, delay: float = 0.0, path: str = "/stream.mjpg") -> None:
        super().__init__(port, path)
        self.delay = delay
        self.times: list[float] = []
        self.last_jpeg: bytes | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        buf = b""
        try:
            while not self._halt.is_set():
                chunk = self.sock.recv(262144)
                if not chunk:
                    return
                buf += chunk
                while True:  # one part: --frame\r\nheaders\r\n\r\nJPEG\r\n
                    head = buf.find(b"\r\n\r\n", buf.find(b"--frame"))
                    m = re.search(rb"Content-Length: (\d+)", buf[:head]) if head >= 0 else None
                    if m is None or len(buf) < head + 4 + int(m.group(1)):
                        break
                    start = head + 4
                    self.last_jpeg = buf[start:start + int(m.group(1))]
                    buf = buf[start + int(m.group(1)):]
                    self.times.append(time.monotonic())
                    if self.delay:
                        time.sleep(self.delay)
        except OSError as e:
            if not self._halt.is_set():
                self.error = e

    def frames_since(self, t: float) -> int:
        return sum(1 for x in self.times if x >= t)


class EventsViewer(StreamReader):
    """A reader of /events (server-sent events); keeps the parsed events."""

    def __init__(self, port: int) -> None:
        super().__init__(port, "/events")
        self.events: list[dict] = []

    def run(self) -> None:
        buf = b""
        try:
            while not self._halt.is_set():
                chunk = self.sock.recv(65536)
                if not chunk:
                    return
                buf += chunk
                *done, buf = buf.split(b"\n\n")
                for block in done:
                    for line in block.split(b"\n"):
                        if line.startswith(b"data: "):
                            self.events.append(json.loads(line[6:]))
        except OSError:
            pass


def stalled_viewer(port: int, path: str = "/stream.mjpg", rcvbuf: int = 4096) -> socket.socket:
    """A viewer that asks for a stream and never reads it (a tiny receive buffer, so the server's
    send buffer fills quickly)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect(("127.0.0.1", port))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    return s
