"""``POST /api/classify``: classify one uploaded image with the model the device already runs.

The work is bounded: an upload is at most ``max_upload_bytes`` and ``PIXEL_LIMIT`` pixels; at most
``RUNNING`` uploads are decoded and classified at once (onnxruntime sessions are thread-safe, but
each call takes cores from the live loop), ``WAITING`` more may wait for a turn (holding their
bytes), and any beyond are told "busy" at once rather than queued without end.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeclf.errors import EdgeclfError, ImageReadError
from edgeclf.image import decode_image
from edgeclf.limits import PIXEL_LIMIT
from edgeclf.model.classifier import Prediction
from edgeclf.sinks.console import record

if TYPE_CHECKING:
    from edgeclf.model.classifier import Classifier

#: The default upload limit: 16 MiB, room for a 40-megapixel JPEG.
MAX_UPLOAD_BYTES = 16 * 1024 * 1024
#: Uploads classified at once, and uploads allowed to wait for a turn.
RUNNING, WAITING = 2, 4
#: The most seconds an upload's body may take to arrive (16 MiB at about 1 Mbit/s).
UPLOAD_READ_S = 150.0
#: The most seconds an admitted upload waits for a turn before it is told "busy".
TURN_WAIT_S = 30.0
#: Name of an upload in error messages and in the result's ``source``.
UPLOAD = "<upload>"


class ApiError(Exception):
    """An answer other than 200: HTTP status and a short reason for the JSON ``error``."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


class ClassifyApi:
    """Admission and classification of uploaded images for ``/api/classify``."""

    def __init__(self, classifier: Classifier | None, max_upload_bytes: int = MAX_UPLOAD_BYTES,
                 default_top: int = 3) -> None:
        self.classifier = classifier
        self.max_upload_bytes = max_upload_bytes
        self.default_top = default_top
        self._turns = threading.BoundedSemaphore(RUNNING)
        self._lock = threading.Lock()
        self._admitted = 0  # uploads being read, waiting for a turn or classified

    def check_request(self, length: str | None, chunked: bool, top: list[str]) -> tuple[int, int]:
        """(body length, top-k) for a request's headers and ``?top=``, or ``ApiError``: checked
        before a byte of the body is read."""
        clf = self.classifier
        if clf is None:
            raise ApiError(404, "no model: this server classifies no uploads")
        if chunked or length is None:
            raise ApiError(411, "Content-Length required (send the image file as the body)")
        if not (length.strip().isascii() and length.strip().isdigit()):  # "²" is a digit to isdigit, not to int
            raise ApiError(400, "Content-Length is not a number")
        size = int(length)
        if size > self.max_upload_bytes:
            raise ApiError(413, f"upload of {size} bytes is above the limit of {self.max_upload_bytes} bytes")
        if size == 0:
            raise ApiError(400, "empty body: send an image file (JPEG, PNG...)")
        n = len(clf.class_names)
        k = self.default_top if not top else _int(top[-1])
        if k is None or not 1 <= k <= n:
            raise ApiError(400, f"top must be a whole number from 1 to {n} (the number of classes)")
        return size, min(k, n)

    def admit(self) -> bool:
        """Take a place (False: too many uploads already: answer "busy"); ``leave()`` after."""
        with self._lock:
            if self._admitted >= RUNNING + WAITING:
                return False
            self._admitted += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self._admitted -= 1

    def classify(self, data: bytes, top: int) -> dict[str, Any]:
        """The ``predict --json`` record of ``data`` (an image file), with its size; ``ApiError``
        for an unusable image, a model failure, or no turn within ``TURN_WAIT_S``."""
        clf = self.classifier
        assert clf is not None  # check_request refused the request otherwise
        if not self._turns.acquire(timeout=TURN_WAIT_S):
            raise ApiError(503, "busy: too many uploads being classified; retry later")
        try:
            t0 = time.perf_counter()
            try:
                image = decode_image(data, UPLOAD, max_pixels=PIXEL_LIMIT)
            except ImageReadError as e:
                raise ApiError(400, f"not a usable image: {e.reason}") from None
            try:
                probs, scores = clf.classify_arrays(np.stack([clf.preprocess(image)]))
            except EdgeclfError as e:
                raise ApiError(500, f"the model failed: {e}") from None
            pred = Prediction.from_probs(probs[0], clf.class_names, None if scores is None else scores[0],
                                         clf.unknown_rule)
            latency_ms = (time.perf_counter() - t0) * 1000
        finally:
            self._turns.release()
        rec = record(UPLOAD, None, pred, latency_ms, top)
        rec.setdefault("top", [{"label": c, "score": round(p, 6)} for c, p in pred.top(top)])
        rec["image"] = {"width": int(image.shape[1]), "height": int(image.shape[0])}
        return rec


def _int(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) < 10 else None
