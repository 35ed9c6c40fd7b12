"""Training a Keras CNN from a folder of images (needs the ``train`` extra: TensorFlow)."""
