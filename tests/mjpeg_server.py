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


class MjpegServer:
    """``ffmpeg -re -f lavfi -i testsrc2 -f mpjpeg -listen 1 http://127.0.0.1:PORT/stream.mjpg``."""

    def __init__(self, port: int | None = None, fps: int = 25, size: str = "160x120") -> None:
        if shutil.which("ffmpeg") is None:
            import pytest

            pytest.skip("ffmpeg is not installed")
        self.port = port or free_port()
        self.fps = fps
        self.size = size
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    def start(self) -> "MjpegServer":
        self.proc = subprocess.Popen(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi",
             "-i", f"testsrc2=size={self.size}:rate={self.fps}", "-q:v", "5",
             "-f", "mpjpeg", "-listen", "1", self.url],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not _listening(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("ffmpeg MJPEG server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None

    def __enter__(self) -> "MjpegServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
