"""Reading a class-per-folder data set for training: a seeded stratified split, then arrays.

Images are decoded and resized once, through the runtime's own preprocessing, and kept in
memory as uint8 (1,000 photos at 128x128 take 49 MB), so every epoch runs at model speed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_runtime.dataset import load_files, warn_skip
from edge_runtime.errors import EdgeclfError
from edge_runtime.images import IMAGE_EXTS, is_image_file, scan_class_folders

from .run_record import check_class_names


@dataclass
class Split:
    """File lists of one split, with labels in class-index order."""

    paths: list[Path] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)


def stratified_split(files: dict[str, list[Path]], val_split: float, seed: int) -> tuple[Split, Split]:
    """Hold out ``val_split`` of every class (at least one image where a class has two or more)."""
    if not 0.0 < val_split < 1.0:
        raise EdgeclfError(f"--val-split must be between 0 and 1 (got {val_split})")
    rng = np.random.default_rng(seed)
    train, val = Split(), Split()
    for idx, cls in enumerate(sorted(files)):
        paths = list(files[cls])
        order = rng.permutation(len(paths))
        n_val = int(round(len(paths) * val_split))
        n_val = min(max(n_val, 1 if len(paths) >= 2 else 0), len(paths) - 1)
        for rank, i in enumerate(order):
            target = val if rank < n_val else train
            target.paths.append(paths[i])
            target.labels.append(idx)
    return train, val


def plan_splits(data_dir: Path, val_dir: Path | None, val_split: float, seed: int) -> tuple[list[str], Split, Split]:
    """Class names and the train/validation file lists, from --val-split or a --val folder."""
    class_names, files = scan_class_folders(data_dir)
    check_class_names(class_names, data_dir)
    if val_dir is None:
        train, val = stratified_split(files, val_split, seed)
        return class_names, train, val
    val_classes, val_files = scan_class_folders(val_dir)
    if val_classes != class_names:
        raise EdgeclfError(f"{val_dir}: class folders {val_classes} differ from {data_dir}'s {class_names}")
    def whole(fs: dict[str, list[Path]]) -> Split:
        s = Split()
        for idx, cls in enumerate(class_names):
            s.paths += fs[cls]
            s.labels += [idx] * len(fs[cls])
        return s
    return class_names, whole(files), whole(val_files)


def unsupported_files(folders: list[Path], on_skip=warn_skip) -> list[dict]:
    """Files in the class folders that are not of an image type edgeclf reads (.gif, .txt, ...):
    warned about and returned as skipped entries, so that none is left out silently.
    Hidden files (.DS_Store) are not data and pass unmentioned, as list_images ignores them."""
    skipped = []
    for folder in folders:
        for root, dirs, names in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(names):
                if name.startswith(".") or is_image_file(name):
                    continue
                path = Path(root) / name
                reason = f"unsupported file type ({path.suffix.lower() or 'no extension'}; edgeclf reads {', '.join(IMAGE_EXTS)})"
                skipped.append({"path": str(path), "reason": reason})
                on_skip(path, reason)
    return skipped


def load_split(split: Split, size: tuple[int, int], skipped: list[dict], progress=None):
    """Arrays (x uint8 NHWC RGB, y) and kept paths; unreadable files are warned about and recorded."""
    x, ok, skip = load_files(split.paths, size, on_skip=warn_skip, progress=progress)
    skipped.extend(skip)
    return x, np.asarray([split.labels[i] for i in ok], np.int64), [split.paths[i] for i in ok]


def check_memory(where: Path, n_images: int, size: int, total_bytes: int | None = None) -> None:
    """Training keeps every image in memory (and TensorFlow a copy): refuse, before reading any,
    a data set that cannot fit in this machine's memory rather than swap or die half-way."""
    if total_bytes is None:
        try:
            total_bytes = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):  # not on every platform: then nothing to compare with
            return
    need = 2 * n_images * size * size * 3
    if need > 0.8 * total_bytes:
        raise EdgeclfError(f"{where}: {n_images} images at {size}x{size} need about {need / 1e9:.1f} GB of memory, "
                           f"more than this machine's {total_bytes / 1e9:.1f} GB allow; use a smaller --img-size or fewer images")


def check_classes(data_dir: Path, class_names: list[str], y_train: np.ndarray, y_val: np.ndarray) -> None:
    """Every class needs readable images, and at least one in the training split."""
    for idx, cls in enumerate(class_names):
        if not np.any(y_train == idx):
            if not np.any(y_val == idx):
                raise EdgeclfError(f"{data_dir / cls}: class folder has no readable image")
            raise EdgeclfError(f"{data_dir / cls}: no readable image left for training after the validation split")


def data_fingerprint(paths: list[Path]) -> str:
    """A short digest of the file list, so --resume can refuse a changed data set."""
    import hashlib

    h = hashlib.sha256()
    for p in paths:
        h.update(os.fsencode(p))
    return h.hexdigest()[:16]
