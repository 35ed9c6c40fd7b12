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


@contextlib.contextmanager
def captured_output() -> Iterator[list[str]]:
    """Collect what the block writes to file descriptors 1 and 2, native libraries included, into
    the yielded list (one string, after the block): onnxruntime prints its provider failures there
    in many lines, on stdout too, which belongs to ``--json``."""
    import io
    import tempfile

    got: list[str] = []
    try:
        fds = [sys.stdout.fileno(), sys.stderr.fileno()]
    except (AttributeError, ValueError, OSError):
        fds = []
    with tempfile.TemporaryFile() as tmp, contextlib.redirect_stdout(io.StringIO()) as py_out:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = [os.dup(fd) for fd in fds]
        try:
            for fd in fds:
                os.dup2(tmp.fileno(), fd)
            yield got
        finally:
            for fd, old in zip(fds, saved):
                os.dup2(old, fd)
                os.close(old)
            tmp.seek(0)
            got.append(tmp.read().decode(errors="replace") + py_out.getvalue())
