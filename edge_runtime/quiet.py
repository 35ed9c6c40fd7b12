"""Silence what C/C++ libraries write straight to file descriptor 2, so edgeclf's errors stay one line."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator


@contextlib.contextmanager
def stderr_to_devnull() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null for the block (Python's ``sys.stderr`` setting cannot
    reach native log lines such as TensorFlow's or FFmpeg's). A no-op when stderr has no file
    descriptor (e.g. replaced by a StringIO under a test runner)."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, ValueError, OSError):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)
