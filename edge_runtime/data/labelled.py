"""Labelled image folders read into memory through the shared preprocessing."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from edgeclf import sysinfo
from edgeclf.errors import EdgeclfError, ImageReadError, warn_skip
from edgeclf.image import RESIZE, read_image, resize_rgb, scan_class_folders


@dataclass
class LabelledImages:
    """Images resized to the model's input (RGB uint8, NHWC) with their labels and paths."""

    x: np.ndarray
    y: np.ndarray
    paths: list[Path]
    class_names: list[str]
    skipped: list[dict] = field(default_factory=list)  # {"path", "reason"}


#: Images decoded per chunk: bounds the decoding buffer (256 x 224x224x3 = 38 MB).
CHUNK = 256


def decode_chunks(
    paths: Sequence[Path], size: tuple[int, int], progress: Callable[[int], None] | None = None, resize: str = RESIZE
) -> Iterator[tuple[np.ndarray, list[str | None]]]:
    """Read and resize ``paths`` on every core, ``CHUNK`` at a time, in order: yields each chunk's
    images (one buffer, reused: copy what you keep) and per-file reasons (None: read; else the
    row is zeros). The one decode loop of edgeclf: training's image cache is filled by it too."""
    h, w = size
    buf = np.zeros((min(CHUNK, max(1, len(paths))), h, w, 3), np.uint8)

    def load(i: int, j: int) -> str | None:
        try:
            buf[j] = resize_rgb(read_image(paths[i]), size, resize)
            return None
        except ImageReadError as e:
            buf[j] = 0
            return e.reason

    # OpenCV decodes and resizes without the GIL: one thread per core keeps every core busy.
    with ThreadPoolExecutor(max_workers=sysinfo.cpu_cores()) as pool:
        for start in range(0, len(paths), CHUNK):
            n = min(CHUNK, len(paths) - start)
            reasons = []
            for reason in pool.map(lambda j: load(start + j, j), range(n)):
                reasons.append(reason)
                if progress:
                    progress(1)
            yield buf[:n], reasons


def load_files(
    paths: Sequence[Path],
    size: tuple[int, int],
    on_skip: Callable[[object, str], None] = warn_skip,
    progress: Callable[[int], None] | None = None,
    resize: str = RESIZE,
) -> tuple[np.ndarray, list[int], list[dict]]:
    """Read and resize ``paths`` (by the rule ``resize``); returns (images, indices of the readable ones, skipped)."""
    out = np.empty((len(paths), *size, 3), np.uint8)
    ok: list[int] = []
    skipped: list[dict] = []
    done = 0
    for images, reasons in decode_chunks(paths, size, progress, resize):
        for j, reason in enumerate(reasons):
            i = done + j
            if reason is None:
                out[len(ok)] = images[j]
                ok.append(i)
            else:
                skipped.append({"path": str(paths[i]), "reason": reason})
                on_skip(paths[i], reason)
        done += len(reasons)
    return out[: len(ok)], ok, skipped


def load_labelled(
    data_dir: str | os.PathLike,
    size: tuple[int, int],
    class_names: Sequence[str] | None = None,
    on_skip: Callable[[object, str], None] = warn_skip,
    progress: Callable[[int], None] | None = None,
    load: Callable[..., tuple[np.ndarray, list[int], list[dict]]] = load_files,
    resize: str = RESIZE,
) -> LabelledImages:
    """Read a class-per-folder data set. With ``class_names`` (a model's classes), the folder's
    classes must be among them and labels follow the model's index order. ``load`` reads the
    files (``load_files``, or training's cached twin with the same signature), resized by ``resize``."""
    found, files = scan_class_folders(data_dir)
    names = list(class_names) if class_names is not None else found
    unknown = [c for c in found if c not in names]
    if unknown:
        raise EdgeclfError(f"{data_dir}: class folders {unknown} are not classes of the model {names}")
    paths = [p for c in found for p in files[c]]
    labels = [names.index(c) for c in found for _ in files[c]]
    x, ok, skipped = load(paths, size, on_skip, progress, resize)
    readable = {labels[i] for i in ok}
    for c in found:
        if names.index(c) not in readable:
            raise EdgeclfError(f"{Path(data_dir) / c}: class folder has no readable image")
    return LabelledImages(x, np.asarray([labels[i] for i in ok], np.int64), [paths[i] for i in ok], names, skipped)
