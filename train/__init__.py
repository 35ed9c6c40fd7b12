"""Training a Keras CNN from a folder of images (needs the ``train`` extra: TensorFlow).

Importing the package loads nothing heavy: the modules that need Keras import TensorFlow
(quietly) themselves, so ``edgeclf train`` and ``demo`` check their arguments first.
"""
