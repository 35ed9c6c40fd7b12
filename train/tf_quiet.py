"""Import TensorFlow without the screenful of C++ log lines it prints on every start."""

from __future__ import annotations

import contextlib
import os
import sys


@contextlib.contextmanager
def _stderr_to_devnull():
    # TensorFlow's C++ logging writes straight to file descriptor 2 before any Python-level
    # setting applies (TF_CPP_MIN_LOG_LEVEL does not silence the absl/oneDNN start-up lines).
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


def import_tensorflow_quietly() -> None:
    """Import TensorFlow and Keras once, with start-up logging silenced."""
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with _stderr_to_devnull():
        import tensorflow as tf  # noqa: F401
        import keras  # noqa: F401

    tf.get_logger().setLevel("ERROR")
