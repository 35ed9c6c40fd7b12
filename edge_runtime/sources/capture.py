"""OpenCV captures as the sources use them: how one is made (``CaptureFactory``, swapped in tests),
OpenCV kept quiet, and the checks on what a capture reports (frame size, frame rate, GStreamer)."""

from __future__ import annotations

import os
import re
from typing import Any, Callable, Sequence

import cv2

from edgeclf.errors import EdgeclfError
from edgeclf.limits import PIXEL_LIMIT

#: ``capture_factory(target, api_preference, params)`` -> an object like ``cv2.VideoCapture``.
CaptureFactory = Callable[[Any, int, Sequence[int]], Any]


def cv2_capture(target: Any, api: int, params: Sequence[int]) -> cv2.VideoCapture:
    return cv2.VideoCapture(target, api, list(params))


def quiet_opencv() -> None:
    """Keep OpenCV's and FFmpeg's own log lines off stderr: edgeclf reports problems in one line."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # read when FFmpeg is first used
    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    except AttributeError:  # older OpenCV builds
        pass


def has_gstreamer() -> bool:
    return bool(re.search(r"GStreamer:\s*YES", cv2.getBuildInformation()))


def check_frame_size(cap: Any, spec: str) -> None:
    """Refuse a video or stream whose frames are above edgeclf's pixel limit, before one is decoded:
    the file or peer chooses the frame size, and every frame held costs width x height x 3 bytes."""
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
    if w * h > PIXEL_LIMIT:
        raise EdgeclfError(f"{spec}: {w}x{h} frames, above edgeclf's limit of {PIXEL_LIMIT / 1e6:g} megapixels")


def capture_fps(cap: Any) -> float | None:
    """The frame rate a capture states, when it is a plausible one (many state 0 or nonsense)."""
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0)
    return fps if 0 < fps < 1000 else None
