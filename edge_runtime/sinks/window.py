"""``--show``: the annotated frames in a window (``WindowSink``), where a display exists
(``Display``); closing it (or q, Esc) ends the run."""

from __future__ import annotations

import contextlib
import os
import sys

import cv2
import numpy as np

from edgeclf.errors import warn
from edgeclf.predict.options import Result
from edgeclf.sinks.annotation import Annotator
from edgeclf.sinks.base import Sink


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


class WindowSink(Sink):
    """``--show``: the annotated frames in a window; closing it (or q, Esc) ends the run."""

    def __init__(self, display: Display, annotator: Annotator) -> None:
        self.display = display
        self.annotator = annotator

    @classmethod
    def open(cls, annotator: Annotator) -> WindowSink | None:
        """The window, or None (and a warning) where none can open: no display, or no GUI in OpenCV."""
        display = Display()
        if not display.available:
            warn(f"--show: {display.reason}; not showing")
            return None
        return cls(display, annotator)

    def write(self, result: Result) -> None:
        if not self.display.show(self.annotator(result)):
            self.stop_requested = True

    def close(self, keep: bool = True) -> None:
        self.display.close()
