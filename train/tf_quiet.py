"""Import TensorFlow without the screenful of C++ log lines it prints on every start."""

from __future__ import annotations

import os
import sys

from edgeclf.quiet import stderr_to_devnull


def import_tensorflow_quietly() -> None:
    """Import TensorFlow and Keras once, with start-up logging silenced."""
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # TensorFlow's C++ logging writes straight to file descriptor 2 before any Python-level
    # setting applies (TF_CPP_MIN_LOG_LEVEL does not silence the absl/oneDNN start-up lines).
    with stderr_to_devnull():
        import keras  # noqa: F401
        import tensorflow as tf  # noqa: F401

    tf.get_logger().setLevel("ERROR")
