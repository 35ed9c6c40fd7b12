"""A real network camera stand-in for the tests: ffmpeg serving an MJPEG stream over HTTP on
loopback, paced in real time (-re)."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    """True once something listens on the TCP port (read from /proc, so the check does not
    connect: ffmpeg's -listen 1 serves exactly one client and would take the probe for it)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if int(parts[1].split(":")[1], 16) == port and parts[3] == "0A":  # 0A = LISTEN
                return True
    return False


class ServerProcess:
    """A stream server in a child process on a loopback port: ``start`` waits until it listens,
    ``stop`` kills it (a server going away, as a camera does); a context manager."""

    name = "server"

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> "ServerProcess":
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while not _listening(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class MjpegServer(ServerProcess):
    """``ffmpeg -re -f lavfi -i testsrc2 -f mpjpeg -listen 1 http://127.0.0.1:PORT/stream.mjpg``."""

    name = "ffmpeg MJPEG server"

    def __init__(self, port: int | None = None, fps: int = 25, size: str = "160x120") -> None:
        if shutil.which("ffmpeg") is None:
            import pytest

            pytest.skip("needs ffmpeg (apt-get install ffmpeg)")
        super().__init__(port)
        self.fps = fps
        self.size = size

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    def command(self) -> list[str]:
        return ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi",
                "-i", f"testsrc2=size={self.size}:rate={self.fps}", "-q:v", "5",
                "-f", "mpjpeg", "-listen", "1", self.url]


def check_reconnects(server: ServerProcess, src, warnings: list[str], first_within: float = 5, back_within: float = 15) -> None:
    """Consume ``src`` (opened on ``server`` with ``warn=warnings.append``) in a thread, kill the
    server for a second, restart it, and check that frames come again, counted as a reconnection."""
    import threading

    seen: list[float] = []
    stop = threading.Event()

    def consume() -> None:
        for frame in src:
            seen.append(frame.captured_at)
            if stop.is_set():
                break

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + first_within
        while len(seen) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(seen) >= 5
        server.stop()
        time.sleep(1.0)  # the stream is down for a second
        restarted_at = time.monotonic()
        server.start()
        deadline = time.monotonic() + back_within
        while not (seen and seen[-1] > restarted_at) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert seen[-1] > restarted_at, f"no frame after the server came back: {warnings}"
        assert src.reconnects >= 1
        assert any("lost" in w for w in warnings) and any("reconnected" in w for w in warnings)
    finally:
        stop.set()
        src.close()
        server.stop()
        t.join(5)
