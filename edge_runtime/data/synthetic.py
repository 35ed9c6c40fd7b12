"""A small synthetic data set (coloured shapes on noisy backgrounds) for the demo and the tests.

Only numpy and OpenCV: it runs on the device and in CI, with nothing to download.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from edgeclf.errors import EdgeclfError

SHAPES = ("circle", "square", "triangle")


def draw_shape(shape: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """One BGR image of ``shape`` with random colour, scale, position and rotation."""
    base = rng.integers(0, 110, 3)
    img = np.clip(base + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
    img = cv2.GaussianBlur(img, (3, 3), 0)
    # A bright shape of any hue on a dark noisy background: always visible, never a colour cue.
    colour = tuple(int(c) for c in rng.integers(150, 256, 3))
    r = rng.uniform(0.25, 0.4) * size
    cx, cy = rng.uniform(r + 1, max(r + 1, size - r - 1), 2)
    angle = rng.uniform(0, 2 * np.pi)
    if shape == "circle":
        cv2.circle(img, (int(cx), int(cy)), int(r), colour, -1, cv2.LINE_AA)
    else:
        n = 4 if shape == "square" else 3
        angles = angle + np.arange(n) * 2 * np.pi / n
        pts = np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], axis=1)
        cv2.fillPoly(img, [pts.astype(np.int32)], colour, cv2.LINE_AA)
    return img


def make_shapes_dataset(
    out_dir: str | os.PathLike, per_class: int = 60, size: int = 64, seed: int = 0, ext: str = ".png"
) -> Path:
    """Write ``per_class`` images of each shape to ``out_dir/<shape>/``; returns ``out_dir``."""
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    for shape in SHAPES:
        (out / shape).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            path = out / shape / f"{shape}_{i:04d}{ext}"
            if not cv2.imwrite(str(path), draw_shape(shape, size, rng)):  # OpenCV reports a failed write only so
                raise EdgeclfError(f"{path}: cannot write the generated image (disk full or folder not writable?)")
    return out


def make_shapes_video(
    path: str | os.PathLike, frames: int = 90, size: int = 128, fps: float = 15.0, hold: int = 15, seed: int = 0
) -> list[str]:
    """Write an MP4 that shows each shape for ``hold`` frames in turn; returns the label per frame."""
    rng = np.random.default_rng(seed)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (size, size))
    if not writer.isOpened():
        raise RuntimeError(f"{path}: OpenCV cannot write MP4 video here")
    labels = []
    for i in range(frames):
        shape = SHAPES[(i // hold) % len(SHAPES)]
        if i % hold == 0:
            frame = draw_shape(shape, size, rng)
        writer.write(frame)
        labels.append(shape)
    writer.release()
    return labels
