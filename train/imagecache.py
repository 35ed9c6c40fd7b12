"""A disk cache of decoded, resized images, so memory does not grow with the data set.

One entry per (set of files, input size, preprocessing): ``<key>.npy`` holds the images as
uint8 NHWC RGB rows (a plain .npy, readable with ``np.load(..., mmap_mode="r")``) and
``<key>.json`` lists the files (resolved path, byte size, SHA-256 of the bytes) with the reason
any was unreadable, and a CRC-32 of every row. The key is a digest of all of that, so a changed
file (even one rewritten with the same size and modification time), size or preprocessing makes
a new entry and an unchanged data set is decoded once: training, ``eval`` and export's
calibration all read the same entry. A request for a subset of an entry's files (a calibration
sample of the training split) is served from it.

Hashing the files is cheap next to decoding them: 1,000 photos (23 MB) take 0.05 s with SHA-256
(0.13 s from a cold start), about 1 s for 20,000. What is read back is checked too: an entry whose
.npy does not have the length its header says is rebuilt when opened, and every row read is
checked against its CRC-32 (0.06 ms for a 224x224 row, 1.2 s of CPU per epoch of 20,000 images);
a damaged row is decoded again from its image file, with one warning, and the entry is dropped so
that the next run rebuilds it. The CRCs guard against accidents (a truncated or rewritten file),
not an attacker: whoever can rewrite the .npy can rewrite its .json too.

Entries are written through a temporary file and renamed (the .json last, as the commit mark),
and rows are read back with ``os.pread`` rather than through a mapping, so a process that
streams a 20,000-image set holds one batch, not the file, in its resident memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from edgeclf.data import labelled
from edgeclf.data.labelled import decode_chunks
from edgeclf.errors import EdgeclfError, ImageReadError, warn, warn_skip
from edgeclf.image import COLOR_ORDER, MAX_FILE_BYTES, RESIZE, read_image, resize_rgb

CACHE_VERSION = 2  # 2: files keyed on their content, rows carry CRC-32s
CACHE_ENV = "EDGECLF_CACHE_DIR"


def default_cache_dir() -> Path | None:
    """``$EDGECLF_CACHE_DIR`` (``none`` turns caching off), else ``~/.cache/edgeclf/images``."""
    env = os.environ.get(CACHE_ENV)
    if env is not None:
        return None if env.strip().lower() in ("", "none", "off") else Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgeclf" / "images"


def _stamps(paths: Sequence[Path]) -> list[list]:
    """[resolved path, bytes, SHA-256 of the bytes] per file; a missing file gets -1 (it then reads
    as skipped). A file that is not regular or too big to be an image (it reads as skipped too) is
    stamped with its modification time instead: reading it whole would block or cost minutes."""
    return [_stamp(Path(p)) for p in paths]


def _stamp(path: Path) -> list:
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_FILE_BYTES:
            return [str(path.resolve()), st.st_size, f"mtime {st.st_mtime_ns}"]
        with open(path, "rb") as f:
            return [str(path.resolve()), st.st_size, hashlib.file_digest(f, "sha256").hexdigest()]
    except OSError:
        return [str(path.absolute()), -1, ""]


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
    files: list[str] = field(default_factory=list)  # the image file of each row of the .npy
    crcs: list[int] = field(default_factory=list)  # the CRC-32 of each row of the .npy
    _damaged: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def row_bytes(self) -> int:
        return self.size[0] * self.size[1] * 3

    def read(self, rows: np.ndarray, heal: bool = False) -> np.ndarray:
        """The images at file ``rows`` (any order) as a new uint8 array [len(rows), H, W, 3].

        A row cut short or unlike the one written raises EdgeclfError; with ``heal`` it is decoded
        again from its image file instead (see ``_decode_again``)."""
        rows = np.asarray(rows, np.int64).reshape(-1)
        out = np.empty((len(rows), *self.size, 3), np.uint8)
        flat = out.reshape(len(rows), self.row_bytes)  # also for no rows at all
        fd = os.open(self.npy, os.O_RDONLY)
        try:
            for i, r in enumerate(rows):
                # pread copies out of the page cache without mapping the file into this process.
                n = os.preadv(fd, [flat[i]], self.offset + int(r) * self.row_bytes)
                if n == self.row_bytes and zlib.crc32(flat[i]) == self.crcs[r]:
                    continue
                problem = "truncated" if n != self.row_bytes else "changed since it was written"
                if not heal:
                    raise EdgeclfError(f"{self.npy}: image cache is {problem}; delete it to rebuild")
                out[i] = self._decode_again(int(r), problem)
        finally:
            os.close(fd)
        return out

    def load(self) -> np.ndarray:
        """All readable requested images in memory, in request order (damaged rows decoded again)."""
        return self.read(self.rows, heal=True)

    def _decode_again(self, row: int, problem: str) -> np.ndarray:
        """Row ``row`` from its image file; the first time, one warning and the entry dropped (its
        .json, the commit mark, removed) so that the next run rebuilds it."""
        if not self._damaged.is_set():
            self._damaged.set()
            warn(f"{self.npy}: image cache is {problem}; decoding its images again (rebuilt on the next run)")
            self.npy.with_suffix(".json").unlink(missing_ok=True)
        try:
            return resize_rgb(read_image(self.files[row]), self.size)
        except ImageReadError as e:  # gone since the entry was built: a blank row, as for unreadable files
            warn(f"{e.path}: {e.reason}; a blank image in its place")
            return np.zeros((*self.size, 3), np.uint8)


def _write_npy(path: Path, paths: Sequence[Path], size: tuple[int, int], progress) -> tuple[list[str | None], list[int]]:
    """Decode ``paths`` (``decode_chunks``) into a new .npy at ``path``; the reason per file
    (None: read) and the CRC-32 per row."""
    h, w = size
    reasons: list[str | None] = []
    crcs: list[int] = []
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": (len(paths), h, w, 3)})
            for images, chunk_reasons in decode_chunks(paths, size, progress):
                f.write(images.tobytes())
                reasons += chunk_reasons
                crcs += [zlib.crc32(row) for row in images.reshape(len(images), -1)]
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return reasons, crcs


def _intact_offset(npy: Path, meta: dict) -> int | None:
    """The .npy's header length when the file is whole (the shape and length its .json promises),
    else None."""
    n, (h, w) = len(meta.get("files", [])), meta.get("size", (0, 0))
    try:
        with open(npy, "rb") as f:
            major, _ = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(f)
            offset, length = f.tell(), os.fstat(f.fileno()).st_size
    except (OSError, ValueError):
        return None
    whole = shape == (n, h, w, 3) and dtype == np.uint8 and length == offset + n * h * w * 3
    return offset if whole and len(meta.get("row_crc32", [])) == n else None


def _find(cache_dir: Path, prefix: str, stamps: list[list], prep: dict) -> tuple[Path, dict, int] | None:
    """An existing, whole entry holding every requested file unchanged (its .npy, .json and header
    length), or None. A damaged entry found on the way is removed, with a warning."""
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
            offset = _intact_offset(npy, meta)
            if offset is not None:
                return npy, meta, offset
            warn(f"{npy}: image cache entry is damaged (missing, truncated or not the file written); rebuilding it")
            meta_path.unlink(missing_ok=True)
            npy.unlink(missing_ok=True)
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
        offset = _intact_offset(npy, meta)
        if offset is None:  # changed between the rename and this read: another process at work
            raise EdgeclfError(f"{npy}: the image cache entry just written changed; run again")
    else:
        npy, meta, offset = found
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
    return ImageCache(npy, offset, size, np.asarray(rows, np.int64), ok, skipped, built=found is None,
                      files=[f[0] for f in meta["files"]], crcs=meta["row_crc32"])


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
        reasons, crcs = _write_npy(npy, paths, size, progress)
        meta = {"preprocessing": prep, "size": list(size), "files": [[*s, r] for s, r in zip(stamps, reasons)],
                "row_crc32": crcs}
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
    resize: str = RESIZE,
) -> tuple[np.ndarray, list[int], list[dict]]:
    """``edgeclf.data.labelled.load_files`` through the disk cache unless it is off, so a data set
    that training, eval or export has already decoded at this size is read back, not decoded again.
    The cache holds this version's resize only: a model trained with an older one reads its files afresh."""
    if paths and default_cache_dir() is not None and resize == RESIZE:
        cache = cached_images(paths, size, on_skip=on_skip, progress=progress)
        return cache.load(), cache.ok, cache.skipped
    return labelled.load_files(paths, size, on_skip, progress, resize)
