"""How edgeclf writes files: atomically, never over an input, and marked as its own.

- Atomic writes: a file appears complete under its final name or not at all (``atomic_path``,
  ``write_json``), and file digests (``sha256_of``).
- Where an output (``--csv``, ``--save``, ``bench --plot``) may be written, checked before any work.
  The overwrite rule: an output never replaces an input (the model, the source file, a file of the
  source folder or glob), not even with ``--force``; it replaces an existing file only when edgeclf
  wrote that file as the same kind of output (a CSV with edgeclf's header, a PNG or video carrying
  edgeclf's mark) or when the user passes ``--force``. Folders that cannot be created or written to
  fail here, in one line, instead of after the work.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from edgeclf.errors import EdgeclfError, OutputError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds.

    The temporary name keeps the real suffix (or ``suffix``) because some writers (OpenCV,
    Keras) choose the format from it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The stem is cut so the temporary name stays within the file system's limit when the real one does.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem[:100]}.", suffix=suffix or path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; the final file gets normal permissions
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def _temp_pattern(path: Path, suffix: str | None = None) -> re.Pattern:
    # What atomic_path's mkstemp names look like: ".STEM." + 8 random characters + the suffix.
    return re.compile(rf"\.{re.escape(path.stem)}\.[a-z0-9_]{{8}}{re.escape(suffix or path.suffix)}")


def remove_stale_temps(path: str | os.PathLike, suffix: str | None = None) -> list[Path]:
    """Delete the temporary files ``atomic_path(path)`` left behind when its process was killed
    (SIGKILL, power loss: no ``finally`` ran). Call it only as the output's one writer, at the
    start of a new run of the same output. Returns what was removed."""
    path = Path(path)
    pattern = _temp_pattern(path, suffix)
    removed = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:  # no folder yet: nothing left behind
        return removed
    for entry in entries:
        if pattern.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


def sha256_of(path: str | os.PathLike) -> str:
    """SHA-256 of a file, read in 1 MiB chunks (models and weights files are tens of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


#: The first line edgeclf writes into a ``--csv`` file.
CSV_HEADER = ("source", "frame", "label", "index", "score", "latency_ms")
#: A PNG text chunk (keyword, value) that edgeclf's charts carry.
PNG_TEXT = (b"Software", b"edgeclf")
#: Appended to an annotated video as a container-level padding box/chunk that players skip.
VIDEO_MARK = b"edgeclf annotated video\n"
#: Containers the mark can be appended to without disturbing players.
MARKABLE_VIDEO = (".mp4", ".m4v", ".mov", ".avi")
#: A writer stops when less than this is free on the output's disk: OpenCV's video writer (and
#: FFmpeg under it) drop write errors silently, so a full disk would otherwise give a broken file.
MIN_FREE_BYTES = 1 << 20


def _head_tail(path: Path, n: int = 4096) -> tuple[bytes, bytes]:
    try:
        with open(path, "rb") as f:
            head = f.read(n)
            f.seek(max(0, os.fstat(f.fileno()).st_size - n))
            return head, f.read(n)
    except OSError:
        return b"", b""


def written_by_edgeclf(path: str | os.PathLike, kind: str | None = None) -> bool:
    """True when ``path`` is a file edgeclf wrote (by the marks above): a ``"csv"`` (``--csv``), a
    ``"png"`` (``--plot``) or a ``"video"`` (``--save``); of the given ``kind`` only, if given."""
    head, tail = _head_tail(Path(path))
    found = None
    if head.startswith(",".join(CSV_HEADER).encode()):
        found = "csv"
    elif head.startswith(b"\x89PNG\r\n\x1a\n") and b"\0".join(PNG_TEXT) in head:
        found = "png"
    elif tail.endswith(VIDEO_MARK):
        found = "video"
    return found is not None and kind in (None, found)


def video_mark(suffix: str) -> bytes:
    """The bytes appended to a finished video: an MP4 ``free`` box, an AVI ``JUNK`` chunk or a
    WebM ``Void`` element, all defined as padding that readers skip; empty for containers that have no such thing."""
    suffix = suffix.lower()
    if suffix in (".mp4", ".m4v", ".mov"):
        return struct.pack(">I", 8 + len(VIDEO_MARK)) + b"free" + VIDEO_MARK
    if suffix == ".avi":
        return b"JUNK" + struct.pack("<I", len(VIDEO_MARK)) + VIDEO_MARK  # even length: no pad byte
    if suffix == ".webm":  # an EBML Void element (ID 0xEC, a one-byte size)
        return b"\xec" + bytes([0x80 | len(VIDEO_MARK)]) + VIDEO_MARK
    return b""


def png_with_mark(png: bytes) -> bytes:
    """A PNG file's bytes with edgeclf's text chunk inserted after the header chunk."""
    import zlib

    data = b"\0".join(PNG_TEXT)
    chunk = struct.pack(">I", len(data)) + b"tEXt" + data + struct.pack(">I", zlib.crc32(b"tEXt" + data))
    end_ihdr = 8 + 8 + 13 + 4  # signature, IHDR length+type, IHDR data, CRC
    return png[:end_ihdr] + chunk + png[end_ihdr:]


_KINDS = {"--csv": "csv", "--plot": "png", "--save": "video"}


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_output(path: str | os.PathLike, option: str, inputs: Iterable[str | os.PathLike] = (),
                 force: bool = False) -> Path:
    """Fail in one line, before any work, when ``path`` cannot or may not be written (see the
    module docstring for the rule). Creates missing parent folders. Returns ``path``."""
    path = Path(path)
    try:
        return _check_output(path, option, inputs, force)
    except OSError as e:  # a name too long, a loop of links: what the system says, in one line
        raise EdgeclfError(f"{option} {path}: cannot use this path ({e.strerror or e})") from None


def _check_output(path: Path, option: str, inputs: Iterable[str | os.PathLike], force: bool) -> Path:
    try:
        name_max = os.pathconf(next((a for a in (path.parent, *path.parents) if a.is_dir()), Path(".")), "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    if len(os.fsencode(path.name)) > name_max:
        raise EdgeclfError(f"{option} {path}: file name longer than the {name_max} bytes this file system allows")
    if path.is_dir():
        raise EdgeclfError(f"{option} {path}: is a folder; give a file name")
    if path.exists():
        for given in inputs:
            if _same_file(path, Path(given)):
                raise EdgeclfError(f"{option} {path}: is an input of this command; edgeclf never overwrites its inputs")
        if not force and not written_by_edgeclf(path, _KINDS.get(option)):
            raise EdgeclfError(f"{option} {path}: file exists and edgeclf did not write it; "
                               "choose another name or pass --force to replace it")
    parent = path.parent
    ancestor = parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if ancestor.exists() and not ancestor.is_dir():
        raise EdgeclfError(f"{option} {path}: {ancestor} is a file, not a folder")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".edgeclf-probe.", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise EdgeclfError(f"{option} {path}: cannot write to folder {parent} ({e.strerror or e})") from None
    return path


def check_distinct(**paths: Path | None) -> None:
    """Two outputs of one command must not name the same file (``--csv x --save x``)."""
    given = [(opt, Path(p)) for opt, p in paths.items() if p is not None]
    for i, (a, pa) in enumerate(given):
        for b, pb in given[i + 1 :]:
            if pa.resolve() == pb.resolve():
                raise EdgeclfError(f"{a} and {b} name the same file {pa}")


def free_bytes(path: str | os.PathLike) -> int:
    """Bytes free to this user on the disk holding ``path`` (a file or folder)."""
    return shutil.disk_usage(Path(path) if Path(path).is_dir() else Path(path).parent).free


def disk_error(path: str | os.PathLike, option: str, e: OSError, done: str) -> OutputError:
    """The one-line error for a write that failed half-way (``done``: what was written so far)."""
    why = "the disk is full" if e.errno in (errno.ENOSPC, errno.EDQUOT) else (e.strerror or str(e))
    return OutputError(f"{option} {path}: cannot write ({why}) after {done}; the file was not kept")
