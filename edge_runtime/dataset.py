"""Labelled image folders read into memory through the shared preprocessing."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .errors import EdgeclfError, ImageReadError
from .imagecache import cached_images, default_cache_dir
from .images import read_image, scan_class_folders
from .preprocess import resize_rgb
from .sources import warn_skip


@dataclass
class LabelledImages:
    """Images resized to the model's input (RGB uint8, NHWC) with their labels and paths."""

    x: np.ndarray
    y: np.ndarray
    paths: list[Path]
    class_names: list[str]
    skipped: list[dict] = field(default_factory=list)  # {"path", "reason"}


def load_files(
    paths: Sequence[Path],
    size: tuple[int, int],
    on_skip: Callable[[object, str], None] = warn_skip,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, list[int], list[dict]]:
    """Read and resize ``paths``; returns (images, indices of the readable ones, skipped).

    Goes through the disk cache (``imagecache``) unless it is off, so a data set that training,
    eval or export has already decoded at this size is read back, not decoded again."""
    if paths and default_cache_dir() is not None:
        cache = cached_images(paths, size, on_skip=on_skip, progress=progress)
        return cache.load(), cache.ok, cache.skipped
    h, w = size
    out = np.empty((len(paths), h, w, 3), np.uint8)
    ok: list[int] = []
    skipped: list[dict] = []

    def load(i: int):
        try:
            out[i] = resize_rgb(read_image(paths[i]), size)
            return i, None
        except ImageReadError as e:
            return i, e.reason

    # OpenCV decodes and resizes without the GIL, so threads give a real speed-up.
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 2) * 2)) as pool:
        for i, reason in pool.map(load, range(len(paths))):
            if reason is None:
                ok.append(i)
            else:
                skipped.append({"path": str(paths[i]), "reason": reason})
                on_skip(paths[i], reason)
            if progress:
                progress(1)
    return out[ok], ok, skipped


def load_labelled(
    data_dir: str | os.PathLike,
    size: tuple[int, int],
    class_names: Sequence[str] | None = None,
    on_skip: Callable[[object, str], None] = warn_skip,
    progress: Callable[[int], None] | None = None,
) -> LabelledImages:
    """Read a class-per-folder data set. With ``class_names`` (a model's classes), the folder's
    classes must be among them and labels follow the model's index order."""
    found, files = scan_class_folders(data_dir)
    names = list(class_names) if class_names is not None else found
    unknown = [c for c in found if c not in names]
    if unknown:
        raise EdgeclfError(f"{data_dir}: class folders {unknown} are not classes of the model {names}")
    paths = [p for c in found for p in files[c]]
    labels = [names.index(c) for c in found for _ in files[c]]
    x, ok, skipped = load_files(paths, size, on_skip, progress)
    readable = {labels[i] for i in ok}
    for c in found:
        if names.index(c) not in readable:
            raise EdgeclfError(f"{Path(data_dir) / c}: class folder has no readable image")
    return LabelledImages(x, np.asarray([labels[i] for i in ok], np.int64), [paths[i] for i in ok], names, skipped)
