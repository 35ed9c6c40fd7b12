"""edgeclf's edge runtime: what ships to the device (numpy, OpenCV, onnxruntime; never TensorFlow)."""

__version__ = "0.1.0"

import os as _os

from edgeclf.limits import PIXEL_LIMIT

# OpenCV reads its pixel limit once, when it loads, so it is set here, before any edgeclf module
# imports cv2 (a program that imported cv2 before edgeclf keeps OpenCV's default).
_os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(PIXEL_LIMIT))

# The runtime's public face: ``from edgeclf import Classifier, open_source``. Loaded on first use,
# so ``import edgeclf`` (and ``edgeclf --help``) does not pay for OpenCV and onnxruntime.
_PUBLIC = {
    "Classifier": "model.classifier",
    "Prediction": "model.prediction",
    "open_source": "sources",
    "LiveServer": "serve",
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    if name in _PUBLIC:
        import importlib

        value = getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
        globals()[name] = value  # later look-ups are plain attribute reads
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})


from typing import TYPE_CHECKING as _TYPE_CHECKING

if _TYPE_CHECKING:  # for type checkers and IDEs
    from edgeclf.model.classifier import Classifier, Prediction  # noqa: F401
    from edgeclf.serve.server import LiveServer  # noqa: F401
    from edgeclf.sources.open import open_source  # noqa: F401
