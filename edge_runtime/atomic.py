"""Atomic file writes (a file appears complete under its final name or not at all), and file digests."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterator


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
