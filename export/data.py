"""The images the export checks run on: validation split, calibration set, the training photos
the int8 model is also judged on, parity set."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from edgeclf import sysinfo
from edgeclf.errors import EdgeclfError
from edgeclf.image import RESIZE, list_images, scan_class_folders
from edgeclf.progress import Step
from edgeclf.train.imagecache import load_files
from edgeclf.train.keras_model import RunSource

from .options import ExportOptions

MIN_PARITY_IMAGES = 100  # the floor for the Keras/ONNX parity check
HOLDOUT_FRACTION = 0.3  # of a labelled --calib folder, when the run has no validation split
# The int8 guard judges on the validation split and, up to this many photos in all, the run's
# training photos (a seeded stratified sample beyond it): one photo of 48 must not decide.
MAX_JUDGED = 2000
JUDGED_MEMORY_SHARE = 8  # the training photos judged on hold at most 1/8 of the available memory


@dataclass
class Images:
    """Images read for a check, with the files they came from."""

    x: np.ndarray  # uint8 RGB NHWC
    paths: list[Path]
    y: np.ndarray | None = None  # class indices when labelled


def load_images(
    paths: Sequence[Path],
    size: tuple[int, int],
    labels: Sequence[int] | None = None,
    progress: Callable[[int], None] | None = None,
    resize: str = RESIZE,
) -> Images:
    """Read and resize through the runtime's preprocessing (by the model's rule ``resize``);
    unreadable files are skipped with a warning."""
    x, ok, _ = load_files(list(paths), size, progress=progress, resize=resize)
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


def stratified_sample(paths: Sequence[Path], labels: Sequence[int], n: int, seed: int) -> list[int]:
    """Indices of ``n`` of ``paths`` (seeded), each class keeping its share (largest remainders),
    in their original order; all of them when ``n`` covers them."""
    if n >= len(paths):
        return list(range(len(paths)))
    if n <= 0:
        return []
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(int(label), []).append(i)
    classes = sorted(by_class)
    quota = np.array([n * len(by_class[c]) / len(paths) for c in classes])
    take = np.floor(quota).astype(int)
    for j in np.argsort(-(quota - take), kind="stable")[: n - int(take.sum())]:
        take[j] += 1
    rng = np.random.default_rng(seed)
    keep = [i for c, k in zip(classes, take) for i in rng.choice(by_class[c], int(k), replace=False)]
    return sorted(int(i) for i in keep)


def generated_images(n: int, size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Synthetic shapes, only for parity when a model comes with no real image at all."""
    from edgeclf.data.synthetic import SHAPES, draw_shape
    from edgeclf.image import resize_rgb

    rng = np.random.default_rng(seed)
    side = max(size)
    return np.stack([resize_rgb(draw_shape(SHAPES[i % len(SHAPES)], side, rng), size) for i in range(n)])


@dataclass
class CheckImages:
    """The images every check runs on, all read before anything is written."""

    val: Images  # labelled: the int8 models are judged on them (and their validation accuracy measured)
    calib: Images | None  # with --int8 or --format tflite: calibration images (the same for both)
    parity: np.ndarray  # for the Keras/ONNX parity check: validation first, then calibration / training
    real: bool  # False when the model came with no image at all and the parity images are generated
    # With --int8 or --format tflite: the run's training photos the int8 models are also judged on (labelled), and how
    # many of them were calibration photos (used only when the others do not fill MAX_JUDGED).
    train: Images | None = None
    n_train_calibrated: int = 0


def read_check_images(src: RunSource, class_names: list[str], size: tuple[int, int], opts: ExportOptions,
                      calib_files: list[Path] | None, step: Step) -> CheckImages:
    """The validation split, the calibration set (with --int8 or --format tflite) and the parity images of ``src``."""
    val_paths, val_labels = _labelled_split(src)
    calib = None
    if opts.quantizes:
        calib_paths, val_paths, val_labels = _calibration_and_eval_paths(src, opts, calib_files, class_names,
                                                                         val_paths, val_labels)
        calib = load_images(calib_paths, size, progress=step("reading calibration images", len(calib_paths)), resize=src.resize)
        if len(calib.x) == 0:
            where = opts.calib_dir if opts.calib_dir is not None else "the run's training split"
            raise EdgeclfError(f"{where}: no readable calibration image")
    val = load_images(val_paths, size, val_labels, progress=step("reading validation images", len(val_paths)),
                      resize=src.resize)
    if opts.quantizes and len(val.x) == 0:
        raise EdgeclfError(f"{src.model_path}: no readable validation image to judge the int8 model on")
    train, n_calibrated = None, 0
    if opts.quantizes:
        train, n_calibrated = _judged_training_photos(src, val, calib, size, opts.seed, step)
    parity = _parity_images(src, val, calib, size, opts, step)
    real = len(val.x) > 0 or (calib is not None and len(calib.x) > 0) or bool(src.split_paths("train"))
    return CheckImages(val, calib, parity, real, train, n_calibrated)


def _judged_training_photos(src: RunSource, val: Images, calib: Images, size: tuple[int, int], seed: int,
                            step: Step) -> tuple[Images, int]:
    """The run's training photos (run.json) the int8 model is judged on besides the validation
    split: up to MAX_JUDGED photos in all and 1/JUDGED_MEMORY_SHARE of the available memory, a
    seeded stratified sample beyond that; photos not used for calibration first, calibration photos
    only to fill what they leave. Returns the photos and how many were calibration photos."""
    room = min(MAX_JUDGED - len(val.x),
               sysinfo.available_memory_bytes() // JUDGED_MEMORY_SHARE // (size[0] * size[1] * 3))
    taken = {p.resolve() for p in val.paths}
    calibrated = {p.resolve() for p in calib.paths}
    fresh: tuple[list[Path], list[int]] = ([], [])
    used: tuple[list[Path], list[int]] = ([], [])
    for p in src.split_paths("train"):
        label = src.label_of(p)
        r = p.resolve()
        if label is None or r in taken:
            continue
        taken.add(r)
        pool = used if r in calibrated else fresh
        pool[0].append(p)
        pool[1].append(label)
    paths, labels = [], []
    for pool in (fresh, used):
        keep = stratified_sample(pool[0], pool[1], max(0, room - len(paths)), seed)
        paths += [pool[0][i] for i in keep]
        labels += [pool[1][i] for i in keep]
    if not paths:  # no training split recorded (a bare .keras with --calib), or the validation split fills it
        return Images(np.empty((0, *size, 3), np.uint8), [], np.zeros(0, np.int64)), 0
    images = load_images(paths, size, labels, progress=step("reading training images to judge int8 on", len(paths)),
                         resize=src.resize)
    return images, sum(p.resolve() in calibrated for p in images.paths)


def bank_photos(src: RunSource, images: CheckImages, seed: int, step: Step) -> Images:
    """Up to ``unknown.MAX_BANK`` of the run's training photos (a seeded stratified sample, the same
    with or without --int8), for the unknown score's reference. Empty when run.json records no
    training split."""
    from .unknown import MAX_BANK

    held = {p.resolve() for p in images.val.paths}
    paths, labels = [], []
    for p in src.split_paths("train"):
        label = src.label_of(p)
        if label is not None and p.resolve() not in held:
            paths.append(p)
            labels.append(label)
    if not paths:
        return Images(np.empty((0, *images.val.x.shape[1:]), np.uint8), [], np.zeros(0, np.int64))
    keep = stratified_sample(paths, labels, MAX_BANK, seed)
    size = tuple(images.val.x.shape[1:3])
    return load_images([paths[i] for i in keep], size, [labels[i] for i in keep],
                       progress=step("reading training photos (unknown score)", len(keep)), resize=src.resize)


def is_labelled(folder: Path) -> bool:
    """Whether ``folder`` holds one sub-folder of images per class."""
    try:
        scan_class_folders(folder)
        return True
    except EdgeclfError:
        return False


def _labelled_split(src: RunSource) -> tuple[list[Path], list[int]]:
    paths, labels = [], []
    for p in src.split_paths("val"):
        label = src.label_of(p)
        if label is not None:
            paths.append(p)
            labels.append(label)
    return paths, labels


def _calibration_and_eval_paths(src: RunSource, opts: ExportOptions, calib_files: list[Path] | None,
                                class_names: list[str], val_paths: list[Path], val_labels: list[int]):
    """Calibration files (never judged on) and the labelled files the int8 model is judged on."""
    if calib_files is None:
        pool = src.split_paths("train")
        if not pool:
            raise EdgeclfError(f"{src.model_path}: no training images recorded in run.json; pass --calib DATA_DIR")
    else:
        pool = calib_files
    if not val_paths and opts.calib_dir is not None and is_labelled(opts.calib_dir):
        held = _held_out(opts.calib_dir, class_names, opts.seed)
        if held is not None:
            val_paths, val_labels = held
            taken = set(val_paths)
            pool = [p for p in pool if p not in taken]
    if not val_paths:
        raise EdgeclfError(
            f"{src.model_path}: {opts.quantize_flag} needs labelled validation images (the run has no validation split); "
            "pass --calib with one sub-folder per class"
        )
    judged = {p.resolve() for p in val_paths}
    pool = [p for p in pool if p.resolve() not in judged]
    if not pool:
        raise EdgeclfError(f"{opts.calib_dir or src.model_path}: no calibration image left outside the validation split")
    return sample(pool, opts.calib_size, opts.seed), val_paths, val_labels


def _held_out(calib_dir: Path, class_names: list[str], seed: int) -> tuple[list[Path], list[int]] | None:
    """No validation split: part of each class of the labelled calibration folder, to judge on
    (None when its classes are not the model's)."""
    found, files = scan_class_folders(calib_dir)
    if not all(c in class_names for c in found):
        return None
    held = {p for c in found for p in sample(files[c], max(1, int(len(files[c]) * HOLDOUT_FRACTION)), seed)}
    paths = sorted(held)
    return paths, [class_names.index(p.relative_to(calib_dir).parts[0]) for p in paths]


def _parity_images(src: RunSource, val: Images, calib: Images | None, size: tuple[int, int], opts: ExportOptions,
                   step: Step) -> np.ndarray:
    """Real images for the parity check: validation first, then calibration / training images."""
    x = np.concatenate([val.x] + ([calib.x] if calib is not None else []))[: opts.parity_size]
    want = min(opts.parity_size, MIN_PARITY_IMAGES)
    if len(x) < want:
        used = set(val.paths) | set(calib.paths if calib is not None else [])
        extra = sample([p for p in src.split_paths("train") if p not in used], want - len(x), opts.seed)
        if extra:
            more = load_images(extra, size, progress=step("reading parity images", len(extra)), resize=src.resize)
            x = np.concatenate([x, more.x])
    if len(x) == 0:
        x = generated_images(want, size, opts.seed)
    return x
