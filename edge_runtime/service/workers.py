"""One reader thread per source: opens it (and opens it again after a failure, with back-off),
preprocesses each frame for the model and leaves the newest in the source's slot for the shared
inference loop (``runner``). A live source's older frame is replaced (counted as dropped); a file
read as fast as possible (``realtime = false``) waits for its slot to be taken, so every frame is
classified."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from edgeclf.errors import EdgeclfError, safe_text
from edgeclf.model.classifier import Classifier
from edgeclf.model.unknown import UnknownRule
from edgeclf.predict.smoothing import Smoother
from edgeclf.redact import redact_url
from edgeclf.service.config import SourceConfig
from edgeclf.service.state import Debouncer
from edgeclf.sources.base import Frame, Source
from edgeclf.sources.open import open_source

#: Seconds between attempts to open a source that failed: doubling from the first to the last.
RETRY_FIRST, RETRY_MOST = 1.0, 30.0
#: Sources on this machine, whose drivers can wedge until the process lets go of them.
LOCAL_DEVICES = ("camera", "csi")


@dataclass
class Item:
    """A frame ready for the model: the frame, its model input, its preprocessing time (ms)."""

    frame: Frame
    tensor: np.ndarray
    prep_ms: float


class SourceWorker:
    """A source's reader thread and everything the service keeps about the source."""

    def __init__(self, cfg: SourceConfig, clf: Classifier, rule: UnknownRule, cond: threading.Condition,
                 stop: threading.Event, log: Callable[[str], None], on_up: Callable[[str, bool], None],
                 on_reconnect: Callable[[str], None]) -> None:
        self.cfg, self.clf, self.rule = cfg, clf, rule
        self.name = cfg.name
        self.shown_uri = redact_url(cfg.uri)
        self._cond, self._stop, self.log = cond, stop, log
        self._on_up, self._on_reconnect = on_up, on_reconnect
        self.slot: Item | None = None
        self.state = "connecting"  # connected, reconnecting, ended, failed
        self.error: str | None = None
        self.opened = threading.Event()  # set once the first attempt to open is over (either way)
        self.last_frame: float | None = None  # time.monotonic() of the newest frame taken
        self.frames = 0  # frames classified
        self.dropped = 0  # frames replaced in the slot before the model took them
        self.debouncer = Debouncer(cfg.debounce_frames, cfg.debounce_seconds)
        self.smoother = Smoother(cfg.smooth) if cfg.smooth > 0 else None
        self.latest_image: np.ndarray | None = None
        self._source: Source | None = None
        self._thread = threading.Thread(target=self._run, name=f"edgeclf source {cfg.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    # ------------------------------------------------------------------ the reader
    def _run(self) -> None:
        wait = RETRY_FIRST
        while not self._stop.is_set():
            try:
                self._source = open_source(self.cfg.uri, every=self.cfg.every, timeout=self.cfg.timeout,
                                           loop=self.cfg.loop, realtime=self.cfg.realtime,
                                           warn=lambda m: self.log(f"{self.name}: {safe_text(m)}"),
                                           on_skip=lambda path, why: self.log(f"{self.name}: skipped {safe_text(str(path))}: {safe_text(why)}"))
            except EdgeclfError as e:
                self._failed(str(e))
                self._stop.wait(wait)
                wait = min(2 * wait, RETRY_MOST)
                continue
            except Exception as e:  # noqa: BLE001 (a bad camera must not end the service)
                self._failed(f"{self.shown_uri}: cannot open ({type(e).__name__}: {e})")
                self._stop.wait(wait)
                wait = min(2 * wait, RETRY_MOST)
                continue
            wait = RETRY_FIRST
            if self.state in ("failed", "reconnecting") and self.error is not None:
                self.log(f"{self.name}: {self.shown_uri} is back")
                self._on_reconnect(self.name)
            self._set_state("connected")
            self.error = None
            self.opened.set()
            ended = self._read(self._source)
            self._source.close()
            if ended or self._stop.is_set():
                break
            self._failed(f"{self.shown_uri}: the source stopped giving frames; opening it again")
        self.opened.set()

    def _read(self, src: Source) -> bool:
        """Frames into the slot until the source ends (True for a file that ended: no reopening) or stops."""
        reconnects = getattr(src, "reconnects", 0)
        try:
            for frame in src:
                if self._stop.is_set():
                    return True
                self._track_live_state(src, reconnects)
                reconnects = getattr(src, "reconnects", 0)
                t0 = time.perf_counter()
                item = Item(frame, self.clf.preprocess(frame.image), (time.perf_counter() - t0) * 1000)
                if not self._put(item, wait=not src.live):
                    return True
        except EdgeclfError as e:
            self.log(f"{self.name}: {safe_text(str(e))}")
            return False
        except Exception as e:  # noqa: BLE001 (one source's failure must not end the others)
            self.log(f"{self.name}: {self.shown_uri}: {type(e).__name__}: {safe_text(str(e))}")
            return False
        if src.kind in ("video", "image", "folder", "glob") and not self._stop.is_set():
            self._set_state("ended")
            self.log(f"{self.name}: {self.shown_uri}: no more frames")
            return True
        return False

    def _track_live_state(self, src: Source, reconnects_before: int) -> None:
        if getattr(src, "reconnects", 0) > reconnects_before:
            self._on_reconnect(self.name)

    def _put(self, item: Item, wait: bool) -> bool:
        with self._cond:
            if wait:
                self._cond.wait_for(lambda: self.slot is None or self._stop.is_set())
                if self._stop.is_set():
                    return False
            elif self.slot is not None:
                self.dropped += 1
            self.slot = item
            self._cond.notify_all()
        return True

    def _failed(self, error: str) -> None:
        first = self.error is None
        self.error = error
        self._set_state("failed" if self.state in ("connecting", "failed") else "reconnecting")
        if first:  # one line per outage, not one per retry
            self.log(f"{self.name}: {safe_text(error)} (retrying)")
        self.opened.set()

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self._on_up(self.name, state == "connected")

    # ------------------------------------------------------------------ state
    @property
    def source_state(self) -> str:
        """connected, reconnecting (the stream dropped: the capture thread reopens it), ended, failed."""
        src = self._source
        if self.state == "connected" and src is not None and getattr(src, "state", "connected") == "reconnecting":
            return "reconnecting"
        return self.state

    def problem(self, now: float) -> str | None:
        """Why this source is unhealthy (None: it is not): failed, or no frame within its timeout."""
        state = self.source_state
        if state in ("failed", "reconnecting"):
            return f"{self.name}: {state}" + (f" ({self.error})" if self.error else "")
        if state == "connected":
            since = self.last_frame
            if since is not None and now - since > self.cfg.timeout:
                return f"{self.name}: no frame for {now - since:.0f} s (timeout {self.cfg.timeout:g} s)"
        return None

    def stalled(self, now: float) -> bool:
        """Silent past its timeout where restarting the process may help, which is what the watchdog
        is for: connected but giving nothing (a hung reader), or a camera on this machine that gave
        frames and now fails to (a wedged driver). A network stream that is being reconnected, or a
        source that never opened, is handled here: a restart would change nothing."""
        if self.last_frame is None or now - self.last_frame <= self.cfg.timeout:
            return False
        state = self.source_state
        local = getattr(self._source, "kind", None) in LOCAL_DEVICES
        return state == "connected" or (local and state in ("reconnecting", "failed"))

    def close(self) -> None:
        """Stop reading; the source is released by the reader thread (or at exit, if it hangs)."""
        src = self._source
        if src is not None:
            try:
                src.close()
            except Exception:  # noqa: BLE001 (closing a broken capture must not stop the others closing)
                pass

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
