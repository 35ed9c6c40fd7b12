"""Where frames come from: one ``open_source(spec)`` for files, folders, videos, cameras and streams.

Like jetson-inference's input URIs, the spec says what to open:

- ``photo.jpg`` an image; ``photos/`` a folder (recursive, sorted); ``"shots/*.png"`` a glob;
- ``clip.mp4`` a video file (``loop``: from the start again at its end; ``realtime``: at its own
  frame rate, read like a camera, so a file can stand in for one in demos and tests);
- ``0`` a camera index, ``/dev/video0`` a V4L2 camera;
- ``rtsp://...``, ``http(s)://...`` (MJPEG) a network stream;
- ``"nvarguscamerasrc ! ... ! appsink"`` a GStreamer pipeline, when OpenCV was built with GStreamer;
- ``csi://0`` a camera module on the CSI connector (``csi://0?width=1280&height=720&fps=30&flip=2``):
  on a Raspberry Pi through picamera2, on a Jetson through JetPack's OpenCV (see ``csi``).

File sources (``files``) give every frame, in order. Live sources (``live``: cameras, streams) read
in a capture thread that keeps only the newest frame, and reconnect when the stream drops.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, Callable

import cv2

from edgeclf.errors import EdgeclfError, warn, warn_skip
from edgeclf.image import is_image_file
from edgeclf.redact import redact_url
from edgeclf.sources.base import SkipHandler, Source
from edgeclf.sources.capture import CaptureFactory, capture_fps, cv2_capture, has_gstreamer, quiet_opencv
from edgeclf.sources.csi import open_csi
from edgeclf.sources.files import ImageFiles, PacedCapture, VideoCapture, VideoFile, files_matching, files_under
from edgeclf.sources.live import LiveSource

STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
_GLOB_CHARS = re.compile(r"[*?\[]")

_warn = warn


def check_timeout(timeout: float) -> float:
    """``--timeout``: a finite number of seconds above 0 (at most a day), else a one-line error."""
    if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and 0 < timeout <= 86400):
        raise EdgeclfError(f"--timeout {timeout}: must be a number of seconds above 0 and at most 86400")
    return float(timeout)


def _live_capture(spec: str, timeout: float) -> tuple[str, Any, int, list[int]] | None:
    """What OpenCV opens for a camera, network stream or GStreamer pipeline: (kind, target, backend,
    params); None when ``spec`` names none of them (or a file of that name exists)."""
    path = Path(spec)
    if re.fullmatch(r"\d+", spec) and not path.exists():
        return "camera", int(spec), cv2.CAP_ANY, []
    if re.fullmatch(r"/dev/video\d+", spec):
        if not path.exists():
            raise EdgeclfError(f"{spec}: camera device does not exist")
        return "camera", spec, cv2.CAP_V4L2, []
    if spec.lower().startswith(STREAM_SCHEMES):
        ms = int(timeout * 1000)
        return "stream", spec, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
    if "!" in spec and not path.exists():
        if not has_gstreamer():
            raise EdgeclfError("GStreamer pipeline given, but this OpenCV was built without GStreamer")
        return "gstreamer", spec, cv2.CAP_GSTREAMER, []
    return None


def _live_opener(spec: str, capture_factory: CaptureFactory, timeout: float) -> tuple[Callable[[], Any], str] | None:
    """How ``LiveSource`` (re)opens what ``spec`` names, and its kind; None when it is not live."""
    if spec.lower().startswith("csi://"):
        return open_csi(spec, capture_factory)
    found = _live_capture(spec, timeout)
    if found is None:
        return None
    kind, target, api, params = found

    def opener() -> Any:
        cap = capture_factory(target, api, params)
        if kind == "camera" and cap is not None and cap.isOpened():
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # ask the driver for a short queue, where it listens
        return cap

    return opener, kind


def _paced_video(spec: str, capture_factory: CaptureFactory, loop: bool) -> Callable[[], PacedCapture]:
    """A video file as a live capture at its own frame rate (25 when it states none). The file is
    opened here, so that an unreadable one fails in one line before the capture thread starts."""
    cap = VideoCapture(spec, capture_factory)
    paced = PacedCapture(cap, capture_fps(cap) or 25.0, loop)
    return lambda: paced


def _not_a_source(spec: str, path: Path) -> EdgeclfError:
    """Why ``spec`` names nothing open_source can read, in one line."""
    if path.is_symlink() and not path.exists():
        return EdgeclfError(f"{spec}: broken link (its target does not exist)")
    if path.exists():
        return EdgeclfError(f"{spec}: not a file, folder, camera or stream (a pipe or a device)")
    return EdgeclfError(f"{spec}: no such file or folder")


def open_source(
    spec: str | os.PathLike,
    every: int = 1,
    max_frames: int | None = None,
    timeout: float = 10.0,
    reconnect_for: float | None = None,
    on_skip: SkipHandler = warn_skip,
    capture_factory: CaptureFactory = cv2_capture,
    warn: Callable[[str], None] = _warn,
    loop: bool = False,
    realtime: bool = False,
) -> Source:
    """Open what ``spec`` names (see the module docstring). Raises EdgeclfError in one line when it
    does not exist or cannot be opened (a camera, or a URL that does not answer within ``timeout``).

    ``loop`` and ``realtime`` apply to video files: play again from the start at the end; read at
    the video's own frame rate (25 when it states none), as a live source."""
    spec = str(spec)
    check_timeout(timeout)
    quiet_opencv()
    common: dict[str, Any] = dict(every=every, max_frames=max_frames)
    live = _live_opener(spec, capture_factory, timeout)
    if live is not None:
        opener, kind = live
        return LiveSource(spec, kind, opener, timeout=timeout, reconnect_for=reconnect_for, warn=warn, **common)
    path = Path(spec)
    if path.is_dir():
        return ImageFiles(spec, files_under(path), "folder", on_skip=on_skip, **common)
    if path.is_file():
        if is_image_file(path):
            return ImageFiles(spec, [path], "image", on_skip=on_skip, **common)
        if path.stat().st_size == 0:
            raise EdgeclfError(f"{spec}: empty file (0 bytes)")
        if not realtime:
            return VideoFile(spec, loop=loop, capture_factory=capture_factory, **common)
        paced = _paced_video(spec, capture_factory, loop)
        return LiveSource(spec, "video", paced, timeout=timeout, warn=warn, reconnect=False, **common)
    if _GLOB_CHARS.search(spec):
        return ImageFiles(spec, files_matching(spec), "glob", on_skip=on_skip, **common)
    raise _not_a_source(redact_url(spec), path)
