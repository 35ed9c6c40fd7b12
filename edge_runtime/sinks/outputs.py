"""What ``edgeclf predict`` writes: human lines, JSON lines, CSV, annotated video, a window (each
result reaches them through the sinks of ``sinks.py``)."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import IO, Any, Sequence

import cv2
import numpy as np

from edgeclf.errors import EdgeclfError, OutputError, safe_text
from edgeclf.image import IMAGE_EXTS
from edgeclf.model.classifier import Prediction
from edgeclf.outfiles import CSV_HEADER, MIN_FREE_BYTES, atomic_path, disk_error, free_bytes, video_mark
from edgeclf.quiet import stderr_to_devnull


def record(source: str, frame: int | None, pred: Prediction, latency_ms: float, top: int = 1) -> dict[str, Any]:
    """The JSON object for one result (``--json``): fixed keys first, then every class's probability.
    ``source`` has control characters and undecodable bytes escaped (see ``errors.safe_text``), so
    it prints as one line and writes to any UTF-8 file."""
    rec: dict[str, Any] = {
        "source": safe_text(source),
        "frame": frame,
        "label": pred.label,
        "index": pred.index,
        "score": round(pred.score, 6),
        "probs": {c: round(p, 6) for c, p in pred.probs.items()},
        "latency_ms": round(latency_ms, 3),
    }
    if top > 1:
        rec["top"] = [{"label": c, "score": round(p, 6)} for c, p in pred.top(top)]
    return rec


def human_line(source: str, frame: int | None, pred: Prediction, top: int = 1) -> str:
    """``photos/cat1.jpg  cats  0.973`` (``clip.mp4#12`` for frames; more classes with --top)."""
    where = safe_text(source) if frame is None else f"{safe_text(source)}#{frame}"
    if top <= 1:
        return f"{where}  {pred.label}  {pred.score:.3f}"
    return f"{where}  " + ", ".join(f"{c} {p:.3f}" for c, p in pred.top(top))


#: A spreadsheet runs a cell that starts with one of these as a formula (``=HYPERLINK(...)``).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_text(text: str) -> str:
    """A text cell that a spreadsheet shows as text: file names, stream URLs and class names come
    from files and models edgeclf does not trust, so one starting like a formula gets a leading
    apostrophe (OWASP's CSV-injection rule); numbers are written as they are."""
    return "'" + text if text.startswith(FORMULA_START) else text


class CsvOutput:
    """``--csv FILE``: one row per result, flushed as it goes, renamed into place when closed
    (also after Ctrl-C, so what was classified is kept; an error leaves no half-written file).
    A write that fails (a full disk) raises ``OutputError`` and discards the file."""

    def __init__(self, path: str | os.PathLike, class_names: Sequence[str]) -> None:
        self.path = Path(path)
        self.rows = 0
        self._closed = False
        self._stack = contextlib.ExitStack()
        tmp = self._stack.enter_context(atomic_path(path))
        self._file: IO[str] = self._stack.enter_context(open(tmp, "w", newline="", encoding="utf-8"))
        self._writer = csv.writer(self._file)
        self.class_names = list(class_names)
        self._guard(self._writer.writerow, [*CSV_HEADER, *(csv_text(f"prob_{c}") for c in self.class_names)])

    def _guard(self, write: Any, row: list) -> None:
        try:
            write(row)
            self._file.flush()
        except OSError as e:
            self.close(keep=False)
            raise disk_error(self.path, "--csv", e, f"{self.rows} rows") from None

    def write(self, rec: dict[str, Any]) -> None:
        frame = "" if rec["frame"] is None else rec["frame"]
        probs = [f"{rec['probs'][c]:.6f}" for c in self.class_names]
        self._guard(self._writer.writerow, [csv_text(rec["source"]), frame, csv_text(rec["label"]), rec["index"],
                                            f"{rec['score']:.6f}", f"{rec['latency_ms']:.3f}", *probs])
        self.rows += 1

    def close(self, keep: bool = True) -> None:
        if self._closed:
            return
        self._closed = True
        if not keep:
            with contextlib.suppress(OSError):  # closing may flush into the same full disk
                self._stack.__exit__(RuntimeError, RuntimeError("discarded"), None)
            return
        try:
            self._stack.close()
        except OSError as e:  # the last flush, on close, met a full disk; atomic_path removed the file
            raise disk_error(self.path, "--csv", e, f"{self.rows} rows") from None


def annotate(image_bgr: np.ndarray, pred: Prediction, fps: float | None = None, top: int = 1) -> np.ndarray:
    """A copy of the frame (scaled up to at least 320 px wide so the text is legible) with the
    label, score and frames per second drawn on it."""
    img = image_bgr
    if img.shape[1] < 320:
        scale = 320 / img.shape[1]
        img = cv2.resize(img, (320, max(1, round(img.shape[0] * scale))), interpolation=cv2.INTER_NEAREST)
    else:
        img = img.copy()
    lines = [f"{c} {p:.2f}" for c, p in pred.top(max(1, top))]
    if fps:
        lines.append(f"{fps:.1f} fps")
    font, fs, th = cv2.FONT_HERSHEY_SIMPLEX, max(0.5, img.shape[1] / 900), max(1, img.shape[1] // 400)
    y = 0
    for i, text in enumerate(lines):
        (w, h), base = cv2.getTextSize(text, font, fs, th)
        y += h + base + 6
        cv2.rectangle(img, (0, y - h - base - 6), (w + 12, y), (0, 0, 0), -1)
        colour = (80, 255, 80) if i == 0 else (230, 230, 230)
        cv2.putText(img, text, (6, y - base - 3), font, fs, colour, th, cv2.LINE_AA)
    return img


def _fourcc(path: Path) -> str:
    return "mp4v" if path.suffix.lower() in (".mp4", ".m4v", ".mov") else "MJPG"


class VideoOutput:
    """``--save OUT.mp4``: annotated frames written to a video, renamed into place when closed.
    Frames of another size than the first (a folder of photos) are resized to it.

    OpenCV's VideoWriter reports no write error (a full disk gives a short or unplayable file and
    no warning), so this checks for itself: the disk's free space every ``check_every`` frames
    (a statvfs call, microseconds),
    and on close a re-open of the finished file, which must hold every frame written. A failure
    raises ``OutputError`` and leaves nothing under the final name."""

    def __init__(self, path: str | os.PathLike, fps: float, check_every: int = 1) -> None:
        self.path = Path(path)
        self.fps = fps
        self.frames = 0
        self.check_every = check_every
        self._stack = contextlib.ExitStack()
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None
        self._tmp: Path | None = None
        self._closed = False

    @staticmethod
    def check_format(path: str | os.PathLike) -> None:
        """Fail in one line, before any work, when OpenCV cannot write a video of this type (a
        tiny one is opened beside ``path``, then removed)."""
        path = Path(path)
        if path.suffix.lower() in (*IMAGE_EXTS, ""):  # FFmpeg would write a numbered image sequence
            raise EdgeclfError(f"--save {path}: give a video file name (.mp4 or .avi)")
        fd, tmp = tempfile.mkstemp(prefix=".edgeclf-probe.", suffix=path.suffix, dir=path.parent)
        os.close(fd)
        try:
            with stderr_to_devnull():  # FFmpeg's own complaint; the error below says it in one line
                writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*_fourcc(path)), 10.0, (64, 48))
                ok = writer.isOpened()
                writer.release()
        finally:
            os.unlink(tmp)
        if not ok:
            raise EdgeclfError(f"--save {path}: OpenCV cannot write this video format (try .mp4 or .avi)")

    def _discard(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):  # closing may flush into the same full disk
            self._stack.__exit__(RuntimeError, RuntimeError("discarded"), None)

    def _fail(self, e: OSError) -> OutputError:
        self._discard()
        return disk_error(self.path, "--save", e, f"{self.frames} frames")

    def write(self, image_bgr: np.ndarray) -> None:
        if self._writer is None:
            tmp = self._tmp = self._stack.enter_context(atomic_path(self.path))
            self._size = (image_bgr.shape[1] // 2 * 2, image_bgr.shape[0] // 2 * 2)  # codecs want even sizes
            fourcc = cv2.VideoWriter_fourcc(*_fourcc(self.path))
            self._writer = cv2.VideoWriter(str(tmp), fourcc, self.fps, self._size)
            if not self._writer.isOpened():
                self._stack.__exit__(RuntimeError, RuntimeError("cannot write"), None)
                raise EdgeclfError(f"{self.path}: OpenCV cannot write this video format (try .mp4 or .avi)")
            self._stack.callback(self._writer.release)  # before atomic_path removes a discarded file
        if (image_bgr.shape[1], image_bgr.shape[0]) != self._size:
            image_bgr = cv2.resize(image_bgr, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(image_bgr)
        self.frames += 1
        if (self.frames - 1) % self.check_every == 0 and free_bytes(self._tmp) < MIN_FREE_BYTES:
            raise self._fail(OSError(28, "No space left on device"))

    def _finish(self) -> None:
        """Release the writer, then check the file: it opens, holds every frame, its last frame
        decodes; then append edgeclf's mark (how a later run knows it may replace the file)."""
        self._writer.release()
        try:
            if free_bytes(self._tmp) < MIN_FREE_BYTES // 4:  # the index or trailer may be missing
                raise OSError(28, "No space left on device")
            cap = cv2.VideoCapture(str(self._tmp))
            try:
                count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if cap.isOpened() else 0
                if count != self.frames:
                    raise OSError(f"the finished file holds {count} of {self.frames} frames")
                cap.set(cv2.CAP_PROP_POS_FRAMES, count - 1)
                ok, _ = cap.read()
                if not ok:
                    raise OSError("the finished file's last frame does not decode")
            finally:
                cap.release()
            with open(self._tmp, "ab") as f:
                f.write(video_mark(self.path.suffix))
        except OSError as e:
            raise self._fail(e) from None

    def close(self, keep: bool = True) -> None:
        if self._closed:
            return
        if not keep or self._writer is None:
            self._discard()
            return
        self._closed = True
        self._finish()
        try:
            self._stack.close()
        except OSError as e:  # the rename into place failed (the folder went away or went read-only)
            raise disk_error(self.path, "--save", e, f"{self.frames} frames") from None


class Display:
    """``--show``: a window with the annotated frames, where a display exists. Closes on q or Esc."""

    WINDOW = "edgeclf"

    def __init__(self) -> None:
        self.available = False
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            self.reason = "no display ($DISPLAY is not set)"
            return
        try:
            cv2.namedWindow(self.WINDOW, cv2.WINDOW_NORMAL)
            self.available = True
        except cv2.error:
            self.reason = "this OpenCV has no GUI support (opencv-python-headless); install opencv-python"

    def show(self, image_bgr: np.ndarray) -> bool:
        """Show a frame; False once the user closed the window or pressed q/Esc."""
        cv2.imshow(self.WINDOW, image_bgr)
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), 27):
            return False
        try:
            return cv2.getWindowProperty(self.WINDOW, cv2.WND_PROP_VISIBLE) >= 1
        except cv2.error:
            return True

    def close(self) -> None:
        if self.available:
            with contextlib.suppress(cv2.error):
                cv2.destroyWindow(self.WINDOW)


def print_line(text: str, stream: IO[str] | None = None) -> None:
    stream = stream or sys.stdout
    stream.write(text + "\n")
    stream.flush()


def json_line(rec: dict[str, Any]) -> str:
    return json.dumps(rec, ensure_ascii=False)
