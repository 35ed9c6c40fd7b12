"""A client of ``edgeclf predict --serve``, for the live view's benchmark and tests: the server in
a real process, plain HTTP requests, and viewers that read its streams over real sockets."""

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
