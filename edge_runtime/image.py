"""Images in: finding, bounding and decoding image files robustly (any size, grey, 16-bit, alpha,
corrupt), and the one preprocessing function shared by training, export calibration and the runtime.

Training reads images through exactly ``resize_rgb``, so the device sees the same pixels the model
was trained on. Rescaling/normalisation lives inside the model; this only resizes and reorders.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import threading
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from edgeclf.errors import EdgeclfError, ImageReadError
from edgeclf.limits import PIXEL_LIMIT

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

# PIXEL_LIMIT (``limits``; the package's __init__ also hands it to OpenCV): images above it are
# refused by their header before decoding, except JPEGs, which are decoded at 1/2, 1/4 or 1/8
# scale to fit (decompression bombs: a 1 MB PNG can declare 20000x20000 pixels).
#: Image files above this size are refused before they are read.
MAX_FILE_BYTES = 256 << 20


class _PixelBudget:
    """Pixels being decoded at once, across threads: ``eval`` and training decode in a thread pool,
    and four 40-megapixel PNGs decoding together would need gigabytes. A decode waits until the
    pixels in flight leave room for it (one image alone always may)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        pixels = min(pixels, self.limit)
        with self._cond:
            self._cond.wait_for(lambda: self.used == 0 or self.used + pixels <= self.limit)
            self.used += pixels
        try:
            yield
        finally:
            with self._cond:
                self.used -= pixels
                self._cond.notify_all()


_BUDGET = _PixelBudget(2 * PIXEL_LIMIT)


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTS


def walk_folders(folder: str | os.PathLike, hidden: bool = False) -> Iterator[tuple[Path, list[str]]]:
    """Each folder under ``folder`` with the names of its files, sorted: ``folder`` first, then
    depth first in name order (``os.walk``'s order). Links to folders are not walked into; hidden
    files and folders are left out unless ``hidden``; a folder that cannot be listed is passed over.

    Iterative (``os.walk`` recurses, and Python's stack ends near 1,000 levels of folders), and a
    folder whose path is longer than the system allows (PATH_MAX) is still listed, opened one name
    at a time: its files are then skipped one by one, with the reason, when they are read."""
    stack = [Path(folder)]
    while stack:
        here = stack.pop()
        try:
            entries = sorted(_entries(here))
        except OSError:
            continue
        shown = [(name, kind) for name, kind in entries if hidden or not name.startswith(".")]
        yield here, [name for name, kind in shown if kind == "file"]
        stack.extend(here / name for name, kind in reversed(shown) if kind == "folder")


def _entries(folder: Path) -> list[tuple[str, str]]:
    """(name, kind) of what ``folder`` holds: kind "folder" to walk into, "link" for a link to a
    folder, "file" for anything else."""
    fd = None
    try:
        listing = os.scandir(folder)
    except OSError as e:
        if e.errno != errno.ENAMETOOLONG:
            raise
        fd = _open_long_folder(folder)
        listing = os.scandir(fd)
    try:
        with listing:
            return [(e.name, ("link" if e.is_symlink() else "folder") if e.is_dir() else "file") for e in listing]
    finally:
        if fd is not None:
            os.close(fd)


def _open_long_folder(folder: Path) -> int:
    """A descriptor of ``folder``, whose path is too long to open at once, opened name by name."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    fd = os.open(folder.parts[0], flags)
    try:
        for name in folder.parts[1:]:
            fd, parent = os.open(name, flags, dir_fd=fd), fd
            os.close(parent)
    except BaseException:
        os.close(fd)
        raise
    return fd


def list_images(folder: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Image files under ``folder`` by extension, sorted; hidden files and folders are ignored."""
    found: list[Path] = []
    for root, files in walk_folders(folder):
        found.extend(root / f for f in files if is_image_file(f))
        if not recursive:
            break
    return sorted(found)


def scan_class_folders(data_dir: str | os.PathLike) -> tuple[list[str], dict[str, list[Path]]]:
    """Class names (sorted sub-folder names) and each class's image files.

    Raises EdgeclfError, naming the folder, when the layout cannot be trained on.
    """
    data_dir = Path(data_dir)
    if not data_dir.exists():
        raise EdgeclfError(f"{data_dir}: data folder does not exist")
    if not data_dir.is_dir():
        raise EdgeclfError(f"{data_dir}: not a folder (expected one sub-folder per class)")
    classes = sorted(p.name for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise EdgeclfError(f"{data_dir}: no class folders (expected one sub-folder per class, e.g. cats/ dogs/)")
    if len(classes) < 2:
        raise EdgeclfError(f"{data_dir}: only one class folder ({classes[0]}); at least 2 classes are needed")
    files = {c: list_images(data_dir / c) for c in classes}
    for c, paths in files.items():
        if not paths:
            raise EdgeclfError(f"{data_dir / c}: class folder has no image files ({', '.join(IMAGE_EXTS)})")
    return classes, files


def _looks_truncated(data: bytes) -> bool:
    # A complete JPEG ends with the EOI marker (FFD9); scan data byte-stuffs FF, so FFD9 near the
    # end only appears when the file is whole. Trailing padding after EOI is common, hence the window.
    if data[:2] == b"\xff\xd8":
        return b"\xff\xd9" not in data[-1024:]
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return b"IEND" not in data[-64:]
    return False


def to_bgr8(img: np.ndarray) -> np.ndarray:
    """Any decoded image (grey, BGRA, 16-bit, float) as 8-bit 3-channel BGR."""
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        img = np.clip(img.astype(np.float32) * (255.0 if img.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.shape[2] == 1:
        return cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2BGR)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    return img


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) from a JPEG's frame header without decoding it; None if not found."""
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            i += 2
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            return int.from_bytes(data[i + 5 : i + 7], "big"), int.from_bytes(data[i + 7 : i + 9], "big")
        if marker == 0xDA:  # start of scan: no frame header before it
            return None
        i += 2 + length
    return None


def _le(b: bytes) -> int:
    return int.from_bytes(b, "little")


def image_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) from an image file's header (JPEG, PNG, BMP, WebP, GIF) without decoding
    it; None for other formats or a header too short to tell."""
    if data[:2] == b"\xff\xd8":
        return jpeg_size(data)
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        return int.from_bytes(data[20:24], "big"), int.from_bytes(data[16:20], "big")
    if data[:2] == b"BM" and len(data) >= 26:
        if _le(data[14:18]) == 12:  # OS/2 header: 16-bit sizes
            return _le(data[20:22]), _le(data[18:20])
        return abs(int.from_bytes(data[22:26], "little", signed=True)), abs(int.from_bytes(data[18:22], "little", signed=True))
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        chunk = data[12:16]
        if chunk == b"VP8 ":
            return _le(data[28:30]) & 0x3FFF, _le(data[26:28]) & 0x3FFF
        if chunk == b"VP8L":
            bits = _le(data[21:25])
            return ((bits >> 14) & 0x3FFF) + 1, (bits & 0x3FFF) + 1
        if chunk == b"VP8X":
            return _le(data[27:30]) + 1, _le(data[24:27]) + 1
    if data[:4] == b"GIF8" and len(data) >= 10:
        return _le(data[8:10]), _le(data[6:8])
    return None


_REDUCED = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2))


def _decode_flags(data: bytes, size: tuple[int, int] | None, max_pixels: int) -> int:
    """IMREAD_UNCHANGED, or for a JPEG above ``max_pixels`` the mildest reduced decode (1/2, 1/4,
    1/8: the JPEG decoder skips the detail, far faster and smaller than decoding it all) under it."""
    if size is None or size[0] * size[1] <= max_pixels or data[:2] != b"\xff\xd8":
        return cv2.IMREAD_UNCHANGED
    for factor, flag in reversed(_REDUCED):
        if (size[0] // factor) * (size[1] // factor) <= max_pixels:
            return flag | cv2.IMREAD_IGNORE_ORIENTATION
    return cv2.IMREAD_REDUCED_COLOR_8 | cv2.IMREAD_IGNORE_ORIENTATION


def decode_image(data: bytes, path: str | os.PathLike = "<bytes>", max_pixels: int | None = None) -> np.ndarray:
    """Decode image file bytes as 8-bit BGR (HxWx3). Raises ImageReadError with a short reason."""
    if not data:
        raise ImageReadError(path, "empty file (0 bytes)")
    # Checked before decoding: whether libjpeg returns a half-grey image or nothing for a cut
    # file varies with the OpenCV build, and either way the file must not be used.
    if _looks_truncated(data):
        raise ImageReadError(path, "truncated image file")
    max_pixels = min(max_pixels or PIXEL_LIMIT, PIXEL_LIMIT)
    size = image_size(data)
    flags = _decode_flags(data, size, max_pixels)
    factor = next((f for f, flag in _REDUCED if flags & ~cv2.IMREAD_IGNORE_ORIENTATION == flag), 1)
    pixels = (size[0] // factor) * (size[1] // factor) if size else 0
    if pixels > PIXEL_LIMIT:
        raise ImageReadError(path, f"{size[1]}x{size[0]} pixels, above edgeclf's limit of {PIXEL_LIMIT / 1e6:g} megapixels")
    try:
        with _BUDGET.hold(pixels):
            img = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error as e:  # e.g. more pixels than OpenCV's safety limit
        if "CV_IO_MAX_IMAGE_PIXELS" in str(e):  # a format whose header edgeclf does not read
            raise ImageReadError(path, f"more pixels than edgeclf's limit of {PIXEL_LIMIT / 1e6:g} megapixels") from None
        raise ImageReadError(path, f"cannot decode ({str(e).strip().splitlines()[-1][:100]})") from None
    if img is None or img.size == 0:
        raise ImageReadError(path, "not a readable image (corrupt or unsupported format)")
    return to_bgr8(img)


def read_image(path: str | os.PathLike, max_pixels: int | None = None) -> np.ndarray:
    """Read an image file as 8-bit BGR (HxWx3). Raises ImageReadError with a short reason.

    Images above ``PIXEL_LIMIT`` are refused by their header before decoding, except JPEGs, which
    are decoded at 1/2, 1/4 or 1/8 scale to fit (a 20000x20000 photo takes 0.2 s and 20 MB instead
    of 1.5 s and 1.2 GB). ``max_pixels`` (runtime use) lowers the size above which JPEGs are
    decoded reduced.
    """
    path = Path(path)
    try:
        st = path.stat()
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError
        if not stat.S_ISREG(st.st_mode):  # a FIFO or a device would block the read or never end
            raise ImageReadError(path, "not a regular file (a pipe, socket or device)")
        if st.st_size > MAX_FILE_BYTES:
            raise ImageReadError(path, f"{st.st_size / 2**20:.0f} MiB file, above edgeclf's limit of "
                                 f"{MAX_FILE_BYTES // 2**20} MiB for one image")
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except IsADirectoryError:
        raise ImageReadError(path, "is a folder, not an image") from None
    except OSError as e:
        raise ImageReadError(path, f"cannot read ({e.strerror or e})") from None
    return decode_image(data, path, max_pixels)


COLOR_ORDER = "RGB"
#: The resize of models trained from this version on (recorded in their metadata and run.json).
#: Halving a side is an exact 2-pixel average (cv2.INTER_LINEAR at exactly half the size gives the
#: same pixels as cv2.INTER_AREA's 2x2 path) and runs at SIMD speed; INTER_AREA at any other ratio
#: runs a general loop 4-6x slower (a 640x480 frame to 224x224: 0.82 ms against 0.15 ms; 1920x1080:
#: 4.5 ms against 0.75; one x86 core), a large part of a live pipeline's work beside a fast model.
RESIZE = "stretch to input size; each side halved (2-pixel averages) while at least twice as large, then cv2.INTER_LINEAR"
#: The resize of models trained before it: the runtime still gives them exactly these pixels.
RESIZE_AREA = "stretch to input size; cv2.INTER_AREA when shrinking, cv2.INTER_LINEAR when enlarging"
RESIZES = (RESIZE, RESIZE_AREA)


def resize_rgb(image_bgr: np.ndarray, size: tuple[int, int], resize: str = RESIZE) -> np.ndarray:
    """BGR uint8 image of any size -> RGB uint8 array of shape (height, width, 3), by ``resize``
    (one of ``RESIZES``: the rule the model was trained with)."""
    return cv2.cvtColor(resize_bgr(image_bgr, size, resize), cv2.COLOR_BGR2RGB)


def resize_bgr(image_bgr: np.ndarray, size: tuple[int, int], resize: str = RESIZE) -> np.ndarray:
    """``resize_rgb``'s pixels still in BGR order: what to keep of a photo that a model of this
    input will read later (``resize_rgb`` of the result gives the same array)."""
    if resize not in RESIZES:
        raise EdgeclfError(f"unknown resize rule {resize!r}")
    h, w = size
    if resize == RESIZE:
        while True:  # each side on its own, so a panorama is not aliased along its long side
            ky, kx = (2 if image_bgr.shape[0] >= 2 * h else 1), (2 if image_bgr.shape[1] >= 2 * w else 1)
            if kx == ky == 1:
                break
            src_h, src_w = image_bgr.shape[0] // ky * ky, image_bgr.shape[1] // kx * kx  # an odd last row or column is left out
            image_bgr = cv2.resize(image_bgr[:src_h, :src_w], (src_w // kx, src_h // ky), interpolation=cv2.INTER_LINEAR)
    src_h, src_w = image_bgr.shape[:2]
    if (src_h, src_w) != (h, w):
        interp = cv2.INTER_AREA if src_h >= h and src_w >= w and resize == RESIZE_AREA else cv2.INTER_LINEAR
        image_bgr = cv2.resize(image_bgr, (w, h), interpolation=interp)
    return image_bgr


def resize_of(preprocessing: str | dict | None) -> str:
    """The resize rule a model's or run's ``preprocessing`` record names (a JSON string or an
    object): ``RESIZE_AREA`` for models trained before ``RESIZE``, else ``RESIZE`` (models with
    no record, or another tool's)."""
    if isinstance(preprocessing, str):
        try:
            preprocessing = json.loads(preprocessing)
        except ValueError:
            preprocessing = None
    if isinstance(preprocessing, dict) and preprocessing.get("resize") == RESIZE_AREA:
        return RESIZE_AREA
    return RESIZE


#: Frames kept for display (``--save``, ``--show``, ``--serve``) are scaled down to fit this many
#: pixels on their longer side: enough for any screen, and a 40-megapixel photo held for display
#: costs 11 MB instead of 120.
DISPLAY_MAX = 1920


def fit_within(image: np.ndarray, max_width: int, max_height: int | None = None) -> np.ndarray:
    """``image`` scaled down (never up, aspect kept, ``INTER_AREA``) to fit ``max_width`` x
    ``max_height`` (default: the same as the width); the same array when it already fits. The
    one display downscale of edgeclf: predict's kept frames, the live view's snapshots."""
    h, w = image.shape[:2]
    max_height = max_width if max_height is None else max_height
    scale = min(max_width / w, max_height / h)
    if scale >= 1:
        return image
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
