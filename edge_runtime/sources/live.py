"""Live sources: a camera or network stream read by a capture thread that keeps only the newest
frame, so a slow model always labels the present instead of working through a growing backlog of
buffered frames (opencv/opencv#13145); when the stream drops, the thread reconnects with
exponential back-off."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Iterator

import numpy as np

from edgeclf.errors import EdgeclfError, warn
from edgeclf.sources.base import Frame, Source
from edgeclf.sources.capture import capture_fps, check_frame_size

_warn = warn


class LiveSource(Source):
    """A camera or network stream read by a capture thread that keeps only the newest frame.

    Iterating waits for a frame newer than the last one given and yields it; frames captured in
    between are dropped (counted in ``dropped``). When reading fails, the thread reopens the
    capture with exponential back-off (``backoff`` seconds, doubling up to ``max_backoff``), for
    ``reconnect_for`` seconds (None: for ever); then iteration ends. With ``reconnect=False`` (a
    video file read in real time) the end of the input is the end of the source.
    """

    live = True

    def __init__(self, spec: str, kind: str, open_capture: Callable[[], Any], every: int = 1,
                 max_frames: int | None = None, timeout: float = 10.0, reconnect_for: float | None = None,
                 backoff: float = 0.25, max_backoff: float = 4.0, warn: Callable[[str], None] = _warn,
                 reconnect: bool = True) -> None:
        super().__init__(spec, every, max_frames)
        self.kind = kind
        self.state = "connecting"
        self._open_capture = open_capture
        self.reconnect = reconnect
        self.reconnect_for = reconnect_for
        self.backoff, self.max_backoff = backoff, max_backoff  # seconds: the first wait, the longest
        self.warn = warn
        self.reconnects = 0
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._latest: tuple[np.ndarray, int, float] | None = None
        self._seq = -1
        self._ended = False

        what = "camera" if kind == "camera" else "stream"
        cap = self._open_first(what, timeout)
        self.fps = capture_fps(cap)
        self._start_capture(cap, what, timeout)

    def _open_first(self, what: str, timeout: float) -> Any:
        """The first capture, or EdgeclfError in one line: opening fails at once, not after retries."""
        cap = self._try_open()
        if cap is None:
            raise EdgeclfError(f"{self.spec}: cannot open {what}" + ("" if self.kind == "camera" else f" (no answer within {timeout:g} s)"))
        try:
            check_frame_size(cap, self.spec)
        except EdgeclfError:
            cap.release()
            raise
        return cap

    def _start_capture(self, cap: Any, what: str, timeout: float) -> None:
        """Start the capture thread and wait for its first frame (EdgeclfError if none comes in time)."""
        self._thread = threading.Thread(target=self._run, args=(cap,), name=f"capture {self.spec}", daemon=True)
        self._thread.start()
        with self._cond:
            self._cond.wait_for(lambda: self._seq >= 0 or self._ended, timeout=timeout)
            got_frame = self._seq >= 0
        if not got_frame:
            self.close()
            raise EdgeclfError(f"{self.spec}: {what} opened but gave no frame within {timeout:g} s")

    def _try_open(self) -> Any | None:
        try:
            cap = self._open_capture()
        except Exception:  # a backend that raises instead of returning a closed capture
            return None
        if cap is None or not cap.isOpened():
            if cap is not None:
                cap.release()
            return None
        return cap

    def _run(self, cap: Any) -> None:
        """The capture thread: read, keep the newest frame, reconnect when reading fails."""
        delay = self.backoff
        lost_at: float | None = None
        reopened = False
        try:
            while not self._stop.is_set():
                if cap is None:
                    if self._gave_up(lost_at):
                        return
                    cap = self._try_open()
                    if cap is None:
                        delay = self._back_off(delay)
                        continue
                    reopened = True
                ok, image = cap.read()
                if not ok or image is None:
                    cap.release()
                    cap = None
                    if self._stop.is_set() or not self.reconnect:
                        break
                    self.state = "reconnecting"
                    if lost_at is None:  # a new loss: reconnect at once
                        lost_at = time.monotonic()
                        delay = self.backoff
                        if self._seq >= 0:  # before the first frame, open_source reports the failure
                            self.warn(f"{self.spec}: stream lost; reconnecting")
                    else:  # reopened but failed again: back off
                        delay = self._back_off(delay)
                    continue
                if reopened:
                    self.reconnects += 1
                    self.warn(f"{self.spec}: reconnected")
                    reopened = False
                lost_at = None
                self.state = "connected"
                self._publish(image)
        finally:
            self._end(cap)

    def _gave_up(self, lost_at: float | None) -> bool:
        """True (and said) once the stream has been lost for longer than ``reconnect_for``."""
        if self.reconnect_for is not None and lost_at is not None and time.monotonic() - lost_at > self.reconnect_for:
            self.warn(f"{self.spec}: gave up reconnecting after {self.reconnect_for:g} s")
            return True
        return False

    def _back_off(self, delay: float) -> float:
        """Wait ``delay`` seconds (less if closed meanwhile); the next, doubled delay."""
        self._stop.wait(delay)
        return min(delay * 2, self.max_backoff)

    def _publish(self, image: np.ndarray) -> None:
        with self._cond:
            self._seq += 1
            self._latest = (image, self._seq, time.monotonic())
            self._cond.notify_all()

    def _end(self, cap: Any | None) -> None:
        if cap is not None:
            cap.release()
        self.state = "ended"
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def __iter__(self) -> Iterator[Frame]:
        last = -1
        delivered = 0
        given = 0
        while self.max_frames is None or given < self.max_frames:
            with self._cond:
                while not (self._seq > last or self._ended or self._stop.is_set()):
                    self._cond.wait(0.5)
                if self._seq <= last:  # ended or closed with nothing new
                    return
                image, seq, captured_at = self._latest
            self.dropped += seq - last - 1
            last = seq
            delivered += 1
            if (delivered - 1) % self.every:
                continue
            given += 1
            yield Frame(image, self.spec, seq, captured_at)

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        thread = getattr(self, "_thread", None)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
