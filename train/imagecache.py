"""A disk cache of decoded, resized images, so memory does not grow with the data set.

One entry per (set of files, input size, preprocessing): ``<key>.npy`` holds the images as
uint8 NHWC RGB rows (a plain .npy, readable with ``np.load(..., mmap_mode="r")``) and
``<key>.json`` lists the files (resolved path, byte size, mtime) with the reason any was
unreadable. The key is a digest of all of that, so a changed file, size or preprocessing makes a
new entry and an unchanged data set is decoded once: training, ``eval`` and export's calibration
all read the same entry. A request for a subset of an entry's files (a calibration sample of
the training split) is served from it.

Entries are written through a temporary file and renamed (the .json last, as the commit mark),
and rows are read back with ``os.pread`` rather than through a mapping, so a process that
streams a 20,000-image set holds one batch, not the file, in its resident memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from edgeclf.data import labelled
from edgeclf.data.labelled import decode_chunks
from edgeclf.errors import EdgeclfError, warn_skip
from edgeclf.image import COLOR_ORDER, RESIZE

CACHE_VERSION = 1
CACHE_ENV = "EDGECLF_CACHE_DIR"


def default_cache_dir() -> Path | None:
    """``$EDGECLF_CACHE_DIR`` (``none`` turns caching off), else ``~/.cache/edgeclf/images``."""
    env = os.environ.get(CACHE_ENV)
    if env is not None:
        return None if env.strip().lower() in ("", "none", "off") else Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgeclf" / "images"


def _stamps(paths: Sequence[Path]) -> list[list]:
    """[resolved path, bytes, mtime_ns] per file; a missing file gets -1s (it then reads as skipped)."""
    out = []
    for p in paths:
        try:
            st = os.stat(p)
            out.append([str(Path(p).resolve()), st.st_size, st.st_mtime_ns])
        except OSError:
            out.append([str(Path(p).absolute()), -1, -1])
    return out


def _preprocessing() -> dict:
    return {"version": CACHE_VERSION, "resize": RESIZE, "color_order": COLOR_ORDER, "opencv": cv2.__version__}


@dataclass
class ImageCache:
    """One cache entry opened for reading; ``rows[i]`` is the file row of the i-th readable request."""

    npy: Path
    offset: int  # bytes before the first row (the .npy header)
    size: tuple[int, int]
    rows: np.ndarray  # int64, one per readable requested path, in request order
    ok: list[int]  # indices of the readable requested paths
    skipped: list[dict] = field(default_factory=list)  # {"path", "reason"}
    built: bool = False  # True when this call decoded the images (False: served from the cache)

    @property
    def row_bytes(self) -> int:
        return self.size[0] * self.size[1] * 3

    def read(self, rows: np.ndarray) -> np.ndarray:
        """The images at file ``rows`` (any order) as a new uint8 array [len(rows), H, W, 3]."""
        rows = np.asarray(rows, np.int64).reshape(-1)
        out = np.empty((len(rows), *self.size, 3), np.uint8)
        flat = out.reshape(len(rows), self.row_bytes)  # also for no rows at all
        fd = os.open(self.npy, os.O_RDONLY)
        try:
            for i, r in enumerate(rows):
                # pread copies out of the page cache without mapping the file into this process.
                n = os.preadv(fd, [flat[i]], self.offset + int(r) * self.row_bytes)
                if n != self.row_bytes:
                    raise EdgeclfError(f"{self.npy}: image cache is truncated; delete it to rebuild")
        finally:
            os.close(fd)
        return out

    def load(self) -> np.ndarray:
        """All readable requested images in memory, in request order."""
        return self.read(self.rows)


def _write_npy(path: Path, paths: Sequence[Path], size: tuple[int, int], progress) -> list[str | None]:
    """Decode ``paths`` (``decode_chunks``) into a new .npy at ``path``; reasons per file."""
    h, w = size
    reasons: list[str | None] = []
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": (len(paths), h, w, 3)})
            for images, chunk_reasons in decode_chunks(paths, size, progress):
                f.write(images.tobytes())
                reasons += chunk_reasons
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return reasons


def _npy_offset(path: Path) -> int:
    with open(path, "rb") as f:
        major, _ = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        read(f)
        return f.tell()


def _find(cache_dir: Path, prefix: str, stamps: list[list], prep: dict) -> tuple[Path, dict] | None:
    """An existing entry holding every requested file unchanged, or None."""
    for meta_path in sorted(cache_dir.glob(f"{prefix}-*.json")):
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            continue
        if meta.get("preprocessing") != prep:
            continue
        index = {f[0]: (i, f[1], f[2]) for i, f in enumerate(meta.get("files", []))}
        if all(s[0] in index and index[s[0]][1:] == (s[1], s[2]) and s[1] >= 0 for s in stamps):
            npy = meta_path.with_suffix(".npy")
            if npy.is_file():
                return npy, meta
    return None


def cached_images(
    paths: Sequence[Path],
    size: tuple[int, int],
    cache_dir: Path | None = None,
    on_skip: Callable[[object, str], None] = warn_skip,
    progress: Callable[[int], None] | None = None,
) -> ImageCache:
    """Open (building it if needed) the cache entry for ``paths`` at ``size`` under ``cache_dir``.

    Unreadable files are reported through ``on_skip`` (every call, cached or not) and listed in
    ``skipped``; ``progress(n)`` advances once per file decoded, or by all at once on a hit."""
    cache_dir = _cache_folder(cache_dir)
    size = (int(size[0]), int(size[1]))
    prefix = f"{size[0]}x{size[1]}"
    stamps, prep = _stamps(paths), _preprocessing()
    found = _find(cache_dir, prefix, stamps, prep)
    if found is None:
        npy, meta = _build(cache_dir, prefix, paths, size, stamps, prep, progress)
    else:
        npy, meta = found
        if progress:
            progress(len(paths))
    index = {f[0]: (i, f[3]) for i, f in enumerate(meta["files"])}
    rows, ok, skipped = [], [], []
    for i, s in enumerate(stamps):
        row, reason = index[s[0]]
        if reason is None:
            rows.append(row)
            ok.append(i)
        else:
            skipped.append({"path": str(paths[i]), "reason": reason})
            on_skip(paths[i], reason)
    return ImageCache(npy, _npy_offset(npy), size, np.asarray(rows, np.int64), ok, skipped, built=found is None)


def _cache_folder(cache_dir: Path | None) -> Path:
    """``cache_dir`` (default: ``default_cache_dir()``), created if need be."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if cache_dir is None:
        raise EdgeclfError(f"image cache is off (${CACHE_ENV}=none); cannot open a cache entry")
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EdgeclfError(f"{cache_dir}: cannot create the image cache folder ({e.strerror or e}); set ${CACHE_ENV}") from None
    return cache_dir


def _build(cache_dir: Path, prefix: str, paths: Sequence[Path], size: tuple[int, int], stamps: list[list], prep: dict,
           progress: Callable[[int], None] | None) -> tuple[Path, dict]:
    """Decode ``paths`` into a new entry; its .npy and its metadata (written last, as the commit mark)."""
    digest = hashlib.sha256(json.dumps([prep, size, stamps]).encode()).hexdigest()[:20]
    npy, meta_path = cache_dir / f"{prefix}-{digest}.npy", cache_dir / f"{prefix}-{digest}.json"
    try:
        reasons = _write_npy(npy, paths, size, progress)
        meta = {"preprocessing": prep, "size": list(size), "files": [[*s, r] for s, r in zip(stamps, reasons)]}
        fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=f".{meta_path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(meta, f)
        os.replace(tmp, meta_path)  # the entry exists from here on
    except OSError as e:
        raise EdgeclfError(f"{cache_dir}: cannot write the image cache ({e.strerror or e}); free space or set ${CACHE_ENV}") from None
    return npy, meta


def load_files(
    paths: Sequence[Path],
    size: tuple[int, int],
    on_skip: Callable[[object, str], None] = warn_skip,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, list[int], list[dict]]:
    """``edgeclf.data.labelled.load_files`` through the disk cache unless it is off, so a data set
    that training, eval or export has already decoded at this size is read back, not decoded again."""
    if paths and default_cache_dir() is not None:
        cache = cached_images(paths, size, on_skip=on_skip, progress=progress)
        return cache.load(), cache.ok, cache.skipped
    return labelled.load_files(paths, size, on_skip, progress)
