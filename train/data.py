"""Reading a class-per-folder data set for training: a seeded stratified split, then batches.

Images are decoded and resized once, through the runtime's own preprocessing, into the disk
cache (``edgeclf.train.imagecache``); the input pipeline reads shuffled batches of rows from it,
so memory stays flat whether the data set has 1,000 or 25,000 photos, and a second run on the
same photos at the same size decodes nothing.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeclf.errors import EdgeclfError, warn_skip
from edgeclf.image import IMAGE_EXTS, is_image_file, scan_class_folders, walk_folders
from edgeclf.train.imagecache import ImageCache, cached_images, default_cache_dir

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
        for root, names in walk_folders(folder):
            for name in names:
                if is_image_file(name):
                    continue
                path = root / name
                reason = f"unsupported file type ({path.suffix.lower() or 'no extension'}; edgeclf reads {', '.join(IMAGE_EXTS)})"
                skipped.append({"path": str(path), "reason": reason})
                on_skip(path, reason)
    return skipped


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


PIPELINE_RAM_BUDGET = 256 * 2**20  # bytes of tf.data buffers (prefetched/parallel batches)


@dataclass
class CachedSplit:
    """A split's readable images as rows of the image cache, with labels and paths."""

    cache: ImageCache
    rows: np.ndarray
    y: np.ndarray
    paths: list[Path]

    def __len__(self) -> int:
        return len(self.rows)


@dataclass
class TrainingData:
    """A run's data as read: its classes, both splits from the image cache, the files left out
    (unreadable or unsupported) and the digest of the file list that --resume checks."""

    class_names: list[str]
    train: CachedSplit
    val: CachedSplit
    skipped: list[dict]
    fingerprint: str


def load_cached_splits(train: Split, val: Split, size: tuple[int, int], skipped: list[dict],
                       progress=None) -> tuple[CachedSplit, CachedSplit]:
    """Both splits through one cache entry (the whole data set, so eval and export reuse it).

    With the cache off (``$EDGECLF_CACHE_DIR=none``) the entry goes to a temporary folder removed
    when the process ends: training still streams from disk, it just decodes again next time."""
    paths = train.paths + val.paths
    cache_dir = default_cache_dir()
    if cache_dir is None:
        cache_dir = Path(tempfile.mkdtemp(prefix="edgeclf-images-"))
        atexit.register(shutil.rmtree, cache_dir, True)
    cache = cached_images(paths, size, cache_dir=cache_dir, on_skip=warn_skip, progress=progress)
    skipped.extend(cache.skipped)
    labels = np.asarray(train.labels + val.labels, np.int64)
    ok = np.asarray(cache.ok, np.int64)
    is_train = ok < len(train.paths)

    def part(mask: np.ndarray) -> CachedSplit:
        return CachedSplit(cache, cache.rows[mask], labels[ok[mask]], [paths[i] for i in ok[mask]])

    return part(is_train), part(~is_train)


def split_dataset(split: CachedSplit, batch_size: int, shuffle_seed: int | None = None):
    """A tf.data pipeline of (uint8 images, labels) batches read from the cache by row.

    Only row numbers are shuffled (a few bytes each); each batch is read with ``os.pread`` in a
    ``numpy_function`` (which releases the GIL while reading), so no stage holds the data set."""
    import tensorflow as tf

    h, w = split.cache.size
    ds = tf.data.Dataset.from_tensor_slices((split.rows, split.y))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(split.rows), seed=shuffle_seed, reshuffle_each_iteration=True)

    def read(rows, y):
        # heal: a row damaged on disk (truncated, rewritten) is decoded again, not a TensorFlow error
        x = tf.numpy_function(lambda r: split.cache.read(r, heal=True), [rows], tf.uint8, stateful=False)
        return tf.ensure_shape(x, [None, h, w, 3]), y

    # tf.data's autotuner may otherwise grow its buffers up to half the machine's RAM; a fixed
    # budget (inherited by every stage built on this dataset) keeps the pipeline's memory flat.
    options = tf.data.Options()
    options.autotune.ram_budget = PIPELINE_RAM_BUDGET
    return ds.batch(batch_size).map(read, num_parallel_calls=tf.data.AUTOTUNE).with_options(options)
