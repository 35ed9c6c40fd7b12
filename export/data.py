"""The images the export checks run on: validation split, calibration set, parity set."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from edgeclf.errors import EdgeclfError
from edgeclf.image import list_images
from edgeclf.train.imagecache import load_files


@dataclass
class Images:
    x: np.ndarray  # uint8 RGB NHWC
    paths: list[Path]
    y: np.ndarray | None = None  # class indices when labelled


def load_images(
    paths: Sequence[Path],
    size: tuple[int, int],
    labels: Sequence[int] | None = None,
    progress: Callable[[int], None] | None = None,
) -> Images:
    """Read and resize through the runtime's preprocessing; unreadable files are skipped with a warning."""
    x, ok, _ = load_files(list(paths), size, progress=progress)
    y = None if labels is None else np.asarray([labels[i] for i in ok], np.int64)
    return Images(x, [Path(paths[i]) for i in ok], y)


def calibration_files(calib_dir: Path) -> list[Path]:
    """Every image file under ``calib_dir`` (class sub-folders or flat); errors name the folder."""
    if not calib_dir.exists():
        raise EdgeclfError(f"{calib_dir}: calibration folder does not exist")
    if not calib_dir.is_dir():
        raise EdgeclfError(f"{calib_dir}: calibration path is not a folder")
    files = list_images(calib_dir)
    if not files:
        raise EdgeclfError(f"{calib_dir}: calibration folder has no image files")
    return files


def sample(paths: Sequence[Path], n: int, seed: int) -> list[Path]:
    """``n`` of ``paths`` chosen at random (seeded), in their original order."""
    if len(paths) <= n:
        return list(paths)
    keep = np.sort(np.random.default_rng(seed).choice(len(paths), n, replace=False))
    return [paths[i] for i in keep]


def generated_images(n: int, size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Synthetic shapes, only for parity when a model comes with no real image at all."""
    from edgeclf.data.synthetic import SHAPES, draw_shape
    from edgeclf.image import resize_rgb

    rng = np.random.default_rng(seed)
    side = max(size)
    return np.stack([resize_rgb(draw_shape(SHAPES[i % len(SHAPES)], side, rng), size) for i in range(n)])
