"""The co-tenant: a second process that keeps one core busy decoding a video, as a capture or
decoding process beside the classifier would, paused for idle turns and resumed for loaded ones."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

COTENANT_CODE = r"""
import sys, cv2
cv2.setNumThreads(1)  # one core: what a capture/decoding process beside the classifier uses
path = sys.argv[1]
print("ready", flush=True)  # imports done: from here on it only decodes
while True:
    cap = cv2.VideoCapture(path)
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        cv2.cvtColor(cv2.resize(frame, (320, 240), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
    cap.release()
"""


class CoTenant:
    """A second process that keeps one core busy decoding a video in a loop (OpenCV, one thread,
    FFmpeg told to use one thread too), paused (SIGSTOP) for idle turns and resumed for loaded ones."""

    def __init__(self, video: Path) -> None:
        env = {**os.environ, "OPENCV_FFMPEG_CAPTURE_OPTIONS": "threads;1", "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, "-c", COTENANT_CODE, str(video)], env=env, stdout=subprocess.PIPE, text=True)
        # Paused once its imports are done, so neither its start-up nor an unpaused first idle
        # turn counts as load.
        self.proc.stdout.readline()
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.loaded_s = 0.0
        self._since: float | None = None
        self.cpu0 = self.cpu_s()

    def cpu_s(self) -> float:
        """CPU seconds the co-tenant has used (utime + stime from /proc)."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return float("nan")

    def load(self) -> None:
        if self._since is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self._since = time.perf_counter()
            time.sleep(0.05)  # let it get going before the turn starts

    def idle(self) -> None:
        if self._since is not None:
            os.kill(self.proc.pid, signal.SIGSTOP)
            self.loaded_s += time.perf_counter() - self._since
            self._since = None

    def close(self) -> dict:
        """Stop it; returns how much of a core it used while it ran."""
        self.idle()
        used = self.cpu_s() - self.cpu0
        self.proc.kill()
        self.proc.wait()
        return {"loaded_s": round(self.loaded_s, 2), "cpu_s": round(used, 2),
                "core_share": round(used / self.loaded_s, 3) if self.loaded_s else None}


def cotenant_video(path: Path) -> Path:
    """A 480x480 MP4 of shapes (240 frames), long enough that decoding it is steady work."""
    from edgeclf.data.synthetic import make_shapes_video

    make_shapes_video(path, frames=240, size=480, fps=30.0, hold=8)
    return path
