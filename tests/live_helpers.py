"""Helpers for the ``--serve`` tests: a generated colour video, ``edgeclf predict --serve`` in a
real process, and viewers that read (or refuse to read) its streams over real sockets."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np

from onnx_fixtures import BGR, COLOURS

ROOT = Path(__file__).resolve().parents[1]


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


def get(url: str, timeout: float = 5.0) -> tuple[int, dict, bytes]:
    """(status, headers, body) of a GET, also for error statuses."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def get_json(url: str, timeout: float = 5.0) -> dict:
    status, _, body = get(url, timeout)
    assert status == 200, (url, status, body)
    return json.loads(body)


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


class ServeProcess:
    """``edgeclf predict MODEL SOURCE --serve ADDRESS ...`` in a real process; waits for its
    "live view at URL" line. stderr is collected in ``lines`` by a thread, so the pipe never fills."""

    def __init__(self, model: Path, source: object, *args: object, address: str = "127.0.0.1:0", timeout: float = 60) -> None:
        env = {**os.environ}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgeclf.cli", "predict", str(model), str(source), "--serve", address, *map(str, args)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        self.lines: list[str] = []
        self.stdout = ""
        self._ready = threading.Event()
        self.url = ""
        threading.Thread(target=self._read_stderr, daemon=True).start()
        threading.Thread(target=self._read_stdout, daemon=True).start()
        if not self._ready.wait(timeout):
            self.stop()
            raise AssertionError(f"no 'live view at' line within {timeout} s: {self.lines}")
        if not self.url:
            raise AssertionError(f"edgeclf predict --serve exited before serving: {self.lines}")
        self.port = int(re.search(r":(\d+)/$", self.url).group(1))
        self.local = f"http://127.0.0.1:{self.port}"

    def _read_stderr(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            m = re.search(r"live view at (http://\S+/)", line)
            if m:
                self.url = m.group(1)
                self._ready.set()
        self._ready.set()

    def _read_stdout(self) -> None:
        self.stdout = self.proc.stdout.read()

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)

    def health(self) -> dict:
        return get_json(self.local + "/api/health")

    def frame_rate(self, seconds: float) -> float:
        """Frames the server classified per second over the next ``seconds`` (from /api/health)."""
        h1 = self.health()
        time.sleep(seconds)
        h2 = self.health()
        return (h2["frames"] - h1["frames"]) / (h2["uptime_s"] - h1["uptime_s"])

    def wait_frames(self, n: int, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            h = self.health()
            if h["frames"] >= n:
                return h
            time.sleep(0.05)
        raise AssertionError(f"fewer than {n} frames within {timeout} s: {h}")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"edgeclf did not stop within {timeout} s of signal {sig}: {self.lines}")

    def __enter__(self) -> "ServeProcess":
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.stop()


class StreamReader(threading.Thread):
    """A thread that asks the server for ``path`` on its own connection and reads it in ``run``
    until ``close()``."""

    def __init__(self, port: int, path: str) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        self._halt = threading.Event()

    def close(self) -> None:
        self._halt.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


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


class StreamCounter(StreamReader):
    """A light viewer for load tests: reads a stream as fast as it comes and only counts its parts
    (``marker``: b"--frame" for MJPEG, b"data: " for events), with the time of each read.
    ``nice``: this thread's scheduling priority (Linux), e.g. 19 to stand in for a viewer on
    another machine that should not take the CPU from the server under test."""

    def __init__(self, port: int, path: str, marker: bytes, nice: int = 0) -> None:
        super().__init__(port, path)
        self.nice = nice
        self.marker = marker
        self.reads: list[tuple[float, int]] = []  # (time, parts that began in this read)

    def run(self) -> None:
        if self.nice:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        edge = len(self.marker) - 1
        tail = b""
        try:
            while not self._halt.is_set():
                n = self.sock.recv_into(view)
                if not n:
                    return
                # Count in place (no copy); a marker split across two reads is found at the seam.
                k = buf.count(self.marker, 0, n) + (tail + bytes(view[:min(edge, n)])).count(self.marker)
                self.reads.append((time.monotonic(), k))
                tail = bytes(view[max(0, n - edge):n])
        except OSError:
            pass

    def parts_since(self, t: float) -> int:
        return sum(k for when, k in self.reads if when >= t)
