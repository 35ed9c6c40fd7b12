"""edgeclf's edge runtime: what ships to the device (numpy, OpenCV, onnxruntime; never TensorFlow)."""

__version__ = "0.1.0"

import os as _os

#: The most pixels edgeclf decodes in one image (see ``images.read_image``). Also handed to OpenCV's
#: own check, for formats whose header edgeclf does not read: OpenCV reads that setting once, when
#: it loads, so it is set here, before any edgeclf module imports cv2 (a program that imported
#: cv2 before edgeclf keeps OpenCV's default).
PIXEL_LIMIT = 40_000_000
_os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(PIXEL_LIMIT))
