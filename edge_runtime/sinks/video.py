"""``--save OUT.mp4``: the annotated frames as a video (``VideoSink``), written by ``VideoOutput``:
atomic, and checked for a full disk, which OpenCV's writer does not report."""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from edgeclf.errors import EdgeclfError, OutputError
from edgeclf.image import IMAGE_EXTS
from edgeclf.outfiles import MIN_FREE_BYTES, atomic_path, disk_error, free_bytes, video_mark
from edgeclf.predict.options import Result
from edgeclf.quiet import stderr_to_devnull
from edgeclf.sinks.annotation import Annotator
from edgeclf.sinks.base import Sink

_MP4 = ("avc1", "mp4v")
#: The codecs tried for a container, best first: H.264 and VP8 play in browsers, where OpenCV's
#: FFmpeg can encode them (pip's opencv-python cannot encode H.264); MPEG-4 Part 2, the fallback
#: every build has, does not.
CODECS = {".mp4": _MP4, ".m4v": _MP4, ".mov": _MP4, ".webm": ("VP80", "VP90")}
OTHER_CODECS = ("MJPG",)  # .avi, .mkv...
CODEC_NAMES = {
    "avc1": "H.264 (avc1)", "VP80": "VP8", "VP90": "VP9", "MJPG": "Motion JPEG",
    "mp4v": "MPEG-4 Part 2 (mp4v), which browsers do not play: this OpenCV cannot encode H.264; "
            "--save NAME.webm writes VP8, which they play",
}
_chosen: dict[str, str] = {}  # suffix -> the fourcc that opened there


def _open_writer(path: str | os.PathLike, fourcc: str, fps: float, size: tuple[int, int]) -> cv2.VideoWriter | None:
    """An open writer, or None where OpenCV cannot write this codec (FFmpeg's own complaint silenced)."""
    with stderr_to_devnull():
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    if writer.isOpened():
        return writer
    writer.release()
    return None


def _probe(path: Path) -> str | None:
    """The first of the container's codecs OpenCV can write, tried on a tiny video beside ``path``."""
    for fourcc in CODECS.get(path.suffix.lower(), OTHER_CODECS):
        fd, tmp = tempfile.mkstemp(prefix=".edgeclf-probe.", suffix=path.suffix, dir=path.parent)
        os.close(fd)
        try:
            writer = _open_writer(tmp, fourcc, 10.0, (64, 48))
            if writer is not None:
                writer.release()
                return fourcc
        finally:
            with contextlib.suppress(FileNotFoundError):  # FFmpeg removes a file it failed to start
                os.unlink(tmp)
    return None


def _no_room(path: Path) -> EdgeclfError:
    return EdgeclfError(f"--save {path}: cannot write (the disk is full: only {free_bytes(path.parent) // 1024} KiB free)")


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
        #: The codec written (``CODECS``): the one ``check_format`` found for this kind of file.
        self.fourcc = _chosen.get(self.path.suffix.lower()) or self.check_format(self.path)

    @staticmethod
    def check_format(path: str | os.PathLike) -> str:
        """Fail in one line, before any work, when OpenCV cannot write a video of this type or the
        disk has no room for one; returns the codec it will write (``CODECS``)."""
        path = Path(path)
        if path.suffix.lower() in (*IMAGE_EXTS, ""):  # FFmpeg would write a numbered image sequence
            raise EdgeclfError(f"--save {path}: give a video file name (.mp4, .webm or .avi)")
        if free_bytes(path.parent) < MIN_FREE_BYTES:
            raise _no_room(path)
        try:
            fourcc = _probe(path)
        except OSError as e:
            raise _no_room(path) if e.errno in (errno.ENOSPC, errno.EDQUOT) else \
                EdgeclfError(f"--save {path}: cannot write here ({e.strerror or e})") from None
        if fourcc is None:
            if free_bytes(path.parent) < MIN_FREE_BYTES:
                raise _no_room(path)
            raise EdgeclfError(f"--save {path}: OpenCV cannot write this video format (try .mp4, .webm or .avi)")
        _chosen[path.suffix.lower()] = fourcc
        return fourcc

    @property
    def codec(self) -> str:
        """What the video is written in, for people: ``H.264 (avc1)``, ``VP8``..."""
        return CODEC_NAMES.get(self.fourcc, self.fourcc)

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
            self._writer = _open_writer(tmp, self.fourcc, self.fps, self._size)
            if self._writer is None:
                self._stack.__exit__(RuntimeError, RuntimeError("cannot write"), None)
                raise EdgeclfError(f"{self.path}: OpenCV cannot write this video format (try .mp4, .webm or .avi)")
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


class VideoSink(Sink):
    """``--save OUT.mp4``: the annotated frames as a video (``VideoOutput``). A run that ends
    before its first frame writes nothing, and says so."""

    def __init__(self, path: Path, fps: float, annotator: Annotator) -> None:
        self.file = VideoOutput(path, fps)
        self.annotator = annotator
        self._closed = False

    def write(self, result: Result) -> None:
        self.file.write(self.annotator(result))

    def close(self, keep: bool = True) -> None:
        if self._closed:
            return
        self._closed = True
        self.file.close(keep=keep)
        if keep and self.file.frames == 0:
            self.warning = f"--save: no frames, {self.file.path} not written"
        elif keep:
            print(f"edgeclf: --save {self.file.path}: {self.file.frames} frames in {self.file.codec}", file=sys.stderr)
