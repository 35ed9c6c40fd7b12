"""Sources read from files: images (one, a folder's or a glob's) and video files, every frame in
order; and ``PacedCapture``, a video file read at its own frame rate as if it were a camera."""

from __future__ import annotations

import fnmatch
import glob
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import cv2
import numpy as np

from edgeclf.errors import EdgeclfError, ImageReadError, warn_skip
from edgeclf.image import is_image_file, read_image, walk_folders
from edgeclf.limits import PIXEL_LIMIT
from edgeclf.redact import redact_url
from edgeclf.sources.base import Frame, SkipHandler, Source
from edgeclf.sources.capture import CaptureFactory, capture_fps, check_frame_size, cv2_capture


def files_under(folder: Path) -> list[Path]:
    """Every non-hidden file under ``folder``, recursively, sorted (non-images are skipped later,
    with a warning, so nothing is silently ignored)."""
    return sorted(root / f for root, files in walk_folders(folder) for f in files)


def files_matching(pattern: str) -> list[Path]:
    """The files a glob pattern matches (``**`` recursive), sorted; EdgeclfError when there are none."""
    if "**" in Path(pattern).parts:
        matches = sorted(_deep_matches(pattern))
    else:  # glob.glob recurses for ``**`` only; other patterns go as deep as they have parts
        matches = sorted(Path(p) for p in glob.glob(pattern) if Path(p).is_file())
    if not matches:
        raise EdgeclfError(f"{redact_url(pattern)}: no files match this pattern")
    return matches


def _deep_matches(pattern: str) -> Iterator[Path]:
    """The files ``glob.glob(pattern, recursive=True)`` gives, found by walking the
    pattern's fixed leading folders with ``walk_folders`` (any depth, any path length) and matching
    each file's path below them part by part."""
    parts = Path(pattern).parts
    fixed = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    base, wanted = Path(*parts[:fixed]) if fixed else Path("."), parts[fixed:]
    for root, files in walk_folders(base, hidden=True):
        below = root.relative_to(base).parts
        for name in files:
            if _parts_match((*below, name), wanted) and _is_file(root / name):
                yield root / name


def _parts_match(parts: Sequence[str], wanted: Sequence[str]) -> bool:
    """Whether path ``parts`` match glob pattern parts ``wanted``, as glob does: ``**`` stands for
    any number of parts, no wildcard matches a hidden name (a leading dot must be written)."""
    def step(states: set[int], part: str) -> set[int]:
        after = set()
        for i in states:
            if i < len(wanted) and not (part.startswith(".") and not wanted[i].startswith(".")):
                if wanted[i] == "**":
                    after.add(i)
                elif fnmatch.fnmatchcase(part, wanted[i]):
                    after.add(i + 1)
        return _skip_stars(after, wanted)

    states = _skip_stars({0}, wanted)
    for part in parts:
        states = step(states, part)
    return len(wanted) in states


def _skip_stars(states: set[int], wanted: Sequence[str]) -> set[int]:
    """``states`` and, as ``**`` may stand for no part at all, the positions past each ``**``."""
    out = set(states)
    for i in sorted(states):
        while i < len(wanted) and wanted[i] == "**":
            i += 1
            out.add(i)
    return out


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a path longer than the system allows: it is skipped, with the reason, when read
        return True


class ImageFiles(Source):
    """Image files in order; unreadable ones are reported to ``on_skip``, counted, and skipped."""

    def __init__(self, spec: str, paths: Sequence[Path], kind: str, every: int = 1, max_frames: int | None = None,
                 on_skip: SkipHandler = warn_skip) -> None:
        super().__init__(spec, every, max_frames)
        self.kind = kind
        self.paths = list(paths)
        self.on_skip = on_skip
        self.total = self._limit(len(self.paths))

    def __iter__(self) -> Iterator[Frame]:
        given = 0
        for i in range(0, len(self.paths), self.every):
            if self.max_frames is not None and given >= self.max_frames:
                return
            path = self.paths[i]
            try:
                if not is_image_file(path):
                    raise ImageReadError(path, f"not an image file ({path.suffix or 'no extension'})")
                image = read_image(path, max_pixels=PIXEL_LIMIT)
            except ImageReadError as e:
                self.skipped.append({"path": e.path, "reason": e.reason})
                self.on_skip(e.path, e.reason)
                continue
            given += 1
            yield Frame(image, str(path), i, time.monotonic())


def _open_video(spec: str, capture_factory: CaptureFactory) -> Any:
    cap = capture_factory(spec, cv2.CAP_ANY, [])
    if not cap.isOpened():
        raise EdgeclfError(f"{spec}: not an image or a video OpenCV can read")
    try:
        check_frame_size(cap, spec)
    except EdgeclfError:
        cap.release()
        raise
    return cap


class VideoCapture:
    """A video file's capture that can start again from its first frame: ``rewind()`` reopens the
    file (which works for every container, where seeking does not) and counts frames per pass."""

    def __init__(self, spec: str, capture_factory: CaptureFactory = cv2_capture) -> None:
        self.spec = spec
        self._factory = capture_factory
        self.cap = _open_video(spec, capture_factory)
        self.taken = 0  # frames read or grabbed since the file was last opened

    def read(self) -> tuple[bool, np.ndarray | None]:
        ok, image = self.cap.read()
        self.taken += bool(ok and image is not None)
        return ok, image

    def grab(self) -> bool:
        ok = self.cap.grab()
        self.taken += bool(ok)
        return ok

    def rewind(self) -> bool:
        """Start again from the first frame; False when this pass gave no frame (an empty video
        would loop for ever). Raises EdgeclfError when the file can no longer be opened."""
        if self.taken == 0:
            return False
        self.cap.release()
        self.cap = _open_video(self.spec, self._factory)
        self.taken = 0
        return True

    def isOpened(self) -> bool:  # noqa: N802 (cv2.VideoCapture's interface)
        return self.cap.isOpened()

    def get(self, prop: int) -> float:
        return self.cap.get(prop)

    def release(self) -> None:
        self.cap.release()


class VideoFile(Source):
    """Every frame of a video file, in order (``every`` N-th one); with ``loop``, from the start
    again at the end (frame numbers restart too)."""

    kind = "video"

    def __init__(self, spec: str, every: int = 1, max_frames: int | None = None, loop: bool = False,
                 capture_factory: CaptureFactory = cv2_capture) -> None:
        super().__init__(spec, every, max_frames)
        self.loop = loop
        self.cap = VideoCapture(spec, capture_factory)
        self.fps = capture_fps(self.cap)
        count = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.total = self._limit(count) if count > 0 and not loop else None

    def __iter__(self) -> Iterator[Frame]:
        given = 0
        i = 0
        while self.max_frames is None or given < self.max_frames:
            if i % self.every:
                ok = self.cap.grab()  # skipped frames are not converted, only demuxed/decoded
                image = None
            else:
                ok, image = self.cap.read()
            if not ok or (image is None and not i % self.every):
                if self.loop and self.cap.rewind():
                    i = 0
                    continue
                self.state = "ended"
                return
            if image is not None:
                yield Frame(image, self.spec, i, time.monotonic())
                given += 1
            i += 1
        self.state = "ended"

    def close(self) -> None:
        self.cap.release()


class PacedCapture:
    """A video file read like a camera: ``read()`` returns each frame at its time in the video
    (``fps``), and with ``loop`` starts again at the end. Give it to ``LiveSource`` so a slow model
    skips frames, as it would on a camera, instead of slowing the video down."""

    def __init__(self, cap: VideoCapture, fps: float, loop: bool = False) -> None:
        self.cap = cap
        self.fps = fps
        self.loop = loop
        self._start: float | None = None
        self._n = 0  # frames read since _start

    def isOpened(self) -> bool:  # noqa: N802 (cv2.VideoCapture's interface)
        return self.cap.isOpened()

    def get(self, prop: int) -> float:
        return self.fps if prop == cv2.CAP_PROP_FPS else self.cap.get(prop)

    def read(self) -> tuple[bool, np.ndarray | None]:
        now = time.monotonic()
        if self._start is None:
            self._start = now
        due = self._start + self._n / self.fps
        if due > now:
            time.sleep(due - now)
        elif now - due > 1.0:  # far behind (the process was paused): restart the clock, don't race
            self._start, self._n = now, 0
        ok, image = self.cap.read()
        if (not ok or image is None) and self.loop:
            try:
                if self.cap.rewind():
                    ok, image = self.cap.read()
            except EdgeclfError:  # the file went away: the source ends
                return False, None
        if ok and image is not None:
            self._n += 1
        return ok, image

    def release(self) -> None:
        self.cap.release()
