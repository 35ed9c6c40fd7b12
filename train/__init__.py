"""Training a Keras CNN from a folder of images (needs the ``train`` extra: TensorFlow)."""

from .tf_quiet import import_tensorflow_quietly

import_tensorflow_quietly()
