"""The one preprocessing function shared by training, export calibration and the runtime.

Training reads images through exactly this code, so the device sees the same pixels the model
was trained on. Rescaling/normalisation lives inside the model; this only resizes and reorders.
"""

from __future__ import annotations

import cv2
import numpy as np

COLOR_ORDER = "RGB"
RESIZE = "stretch to input size; cv2.INTER_AREA when shrinking, cv2.INTER_LINEAR when enlarging"


def resize_rgb(image_bgr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """BGR uint8 image of any size -> RGB uint8 array of shape (height, width, 3)."""
    h, w = size
    src_h, src_w = image_bgr.shape[:2]
    if (src_h, src_w) != (h, w):
        interp = cv2.INTER_AREA if src_h >= h and src_w >= w else cv2.INTER_LINEAR
        image_bgr = cv2.resize(image_bgr, (w, h), interpolation=interp)
    return cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
