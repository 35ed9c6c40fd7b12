"""``--collect DIR``: keep the frames worth a person's look, sorted for training.

A frame is kept when it is ``unknown``, when its top two classes are close (margin below
``--collect-margin``), or, on a video, camera or stream, when its label differs from the frame
before (the smoothed label, with ``--smooth``). It goes to ``DIR/<label>/`` (``unknown`` too) as
a JPEG with a JSON sidecar (time, source with passwords masked, frame, label, nearest class,
probabilities, unknown score, why it was kept): sort the folders by hand, then train on them
(``edgeclf train DATA --from RUN``). Bounded, for a device that runs for months: at most one frame
per ``--collect-interval`` seconds from a stream, at most ``--collect-max`` frames and
``--collect-max-mb`` megabytes in DIR, the oldest of its own files (``edgeclf-*.jpg`` and their
sidecars) removed first; nothing else in DIR is ever touched.
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import cv2

from edgeclf.errors import EdgeclfError, OutputError, safe_text
from edgeclf.outfiles import write_bytes, write_text
from edgeclf.redact import redact_url
from edgeclf.sinks.base import Sink

if TYPE_CHECKING:
    from edgeclf.predict.options import Result

PREFIX = "edgeclf-"
JPEG_QUALITY = 90


def check_collect(folder: Path, source: str) -> None:
    """A one-line error when ``--collect`` cannot be a folder, or would write into the folder of
    photos being classified (the new files would be read as input) or hold it."""
    if folder.exists() and not folder.is_dir():
        raise EdgeclfError(f"--collect {folder}: exists and is not a folder")
    src = Path(source)
    if src.exists():
        s, c = src.resolve(), folder.resolve()
        root = s if s.is_dir() else s.parent
        if c == root or root in c.parents or c in s.parents:
            raise EdgeclfError(f"--collect {folder}: inside or around the source {source}; collect into another folder")


class CollectSink(Sink):
    """Saves the frames worth a look (see the module docstring)."""

    def __init__(self, folder: Path, model: str, numbered: bool, margin: float = 0.2, interval: float = 1.0,
                 max_files: int = 1000, max_bytes: int = 500 << 20, clock=time.monotonic) -> None:
        self.folder, self.model, self.numbered = Path(folder), model, numbered
        self.margin, self.interval, self.max_files, self.max_bytes = margin, interval, max_files, max_bytes
        self.clock = clock
        self.folder.mkdir(parents=True, exist_ok=True)
        self.kept: list[tuple[float, Path, int]] = self._existing()  # (mtime, jpeg, bytes with sidecar), oldest first
        self.saved = 0
        self._last_label: dict[str, str] = {}
        self._last_save = -float("inf")

    def _existing(self) -> list[tuple[float, Path, int]]:
        """What earlier runs collected here (only edgeclf's own files count, and may be removed)."""
        found = []
        for jpg in self.folder.glob(f"*/{PREFIX}*.jpg"):
            side = jpg.with_suffix(".json")
            try:
                found.append((jpg.stat().st_mtime, jpg, jpg.stat().st_size + (side.stat().st_size if side.exists() else 0)))
            except OSError:
                continue
        return sorted(found)

    def reasons(self, result: Result) -> list[str]:
        pred = result.prediction
        why = []
        if pred.unknown:
            why.append("unknown")
        top = pred.top(2)
        if len(top) > 1 and top[0][1] - top[1][1] < self.margin:
            why.append("low margin")
        if self.numbered:
            last = self._last_label.get(result.frame.source)
            self._last_label[result.frame.source] = pred.label
            if last is not None and last != pred.label:
                why.append("label changed")
        return why

    def write(self, result: Result) -> None:
        why = self.reasons(result)
        if not why:
            return
        now = self.clock()
        if self.numbered and now - self._last_save < self.interval:
            return
        self._last_save = now
        try:
            self._save(result, why)
        except OSError as e:
            raise OutputError(f"--collect {self.folder}: cannot write ({e.strerror or e}); {self.saved} frames kept") from None

    def _save(self, result: Result, why: list[str]) -> None:
        pred = result.prediction
        ok, buf = cv2.imencode(".jpg", result.frame.image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            return
        stamp = datetime.now(timezone.utc)
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(redact_url(result.frame.source)).name)[:40] or "source"
        frame = "" if result.frame.index is None or not self.numbered else f"-{result.frame.index}"
        name = f"{PREFIX}{stamp:%Y%m%dT%H%M%S.%fZ}-{slug}{frame}"
        sub = self.folder / _folder_name(pred.label)
        sub.mkdir(exist_ok=True)
        side = {
            "time": stamp.isoformat(), "source": safe_text(redact_url(result.frame.source)),
            "frame": result.frame.index if self.numbered else None, "model": self.model, "label": pred.label,
            "best": pred.best, "score": round(pred.score, 6), "probs": {c: round(p, 6) for c, p in pred.probs.items()},
            "unknown_score": None if pred.unknown_score is None else round(pred.unknown_score, 6), "reasons": why,
        }
        text = json.dumps(side, ensure_ascii=False, indent=1)
        size = len(buf) + len(text.encode())
        self._make_room(size)
        write_bytes(sub / f"{name}.jpg", buf.tobytes())  # the image first: a sidecar never names a missing file
        write_text(sub / f"{name}.json", text)
        self.kept.append((time.time(), sub / f"{name}.jpg", size))
        self.saved += 1

    def _make_room(self, size: int) -> None:
        """Remove the oldest collected frames until one more of ``size`` bytes fits the bounds."""
        total = sum(s for *_, s in self.kept)
        while self.kept and (len(self.kept) + 1 > self.max_files or total + size > self.max_bytes):
            _, jpg, s = self.kept.pop(0)
            for f in (jpg, jpg.with_suffix(".json")):
                f.unlink(missing_ok=True)
            total -= s



def _folder_name(label: str) -> str:
    """A class name as a folder name: path separators and a leading dot replaced."""
    name = label.replace("/", "_").replace("\\", "_")
    return "_" + name[1:] if name.startswith(".") else name
