"""The annotated frame: label, score and frames per second drawn on it, as ``--save``, ``--show``
and the live view (``--serve``) show it."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable

import cv2
import numpy as np

from edgeclf.model.classifier import Prediction
from edgeclf.model.unknown import UNKNOWN_LABEL
from edgeclf.sinks.rate import WINDOW_S, FrameRate

if TYPE_CHECKING:  # for the hints only (see base)
    from edgeclf.predict.options import Result


def annotate(image_bgr: np.ndarray, pred: Prediction, fps: float | None = None, top: int = 1) -> np.ndarray:
    """A copy of the frame (scaled up to at least 320 px wide so the text is legible) with the
    label, score and frames per second drawn on it."""
    img = image_bgr
    if img.shape[1] < 320:
        scale = 320 / img.shape[1]
        img = cv2.resize(img, (320, max(1, round(img.shape[0] * scale))), interpolation=cv2.INTER_NEAREST)
    else:
        img = img.copy()
    lines = ([UNKNOWN_LABEL] if pred.unknown else []) + [f"{c} {p:.2f}" for c, p in pred.top(max(1, top))]
    if fps:
        lines.append(f"{fps:.1f} fps (last {WINDOW_S:g} s)")  # rate.LIVE_LABEL, short enough for a 320 px frame
    font, fs, th = cv2.FONT_HERSHEY_SIMPLEX, max(0.5, img.shape[1] / 900), max(1, img.shape[1] // 400)
    y = 0
    for i, text in enumerate(lines):
        (w, h), base = cv2.getTextSize(text, font, fs, th)
        y += h + base + 6
        cv2.rectangle(img, (0, y - h - base - 6), (w + 12, y), (0, 0, 0), -1)
        colour = ((80, 200, 255) if pred.unknown else (80, 255, 80)) if i == 0 else (230, 230, 230)
        cv2.putText(img, text, (6, y - base - 3), font, fs, colour, th, cv2.LINE_AA)
    return img


class Annotator:
    """The annotated frame that ``--save`` and ``--show`` share: drawn once per result however
    many sinks show it, with the frame rate of ``rate.FrameRate`` (the live view's own)."""

    def __init__(self, top: int, clock: Callable[[], float] = time.perf_counter) -> None:
        self.top = top
        self.fps: float | None = None
        self._rate = FrameRate(clock)
        self._result: Result | None = None
        self._image: np.ndarray | None = None

    def __call__(self, result: Result) -> np.ndarray:
        if result is not self._result:
            self.fps = self._rate.tick()
            self._result = result
            self._image = annotate(result.frame.image, result.prediction, self.fps, self.top)
        return self._image
