"""Bounds on what untrusted input may cost: files, models and network peers are all untrusted.

No heavy imports here: the package's ``__init__`` reads ``PIXEL_LIMIT`` before OpenCV loads.
"""

#: The most pixels edgeclf decodes in one image or frame (see ``image.read_image``). Also handed
#: to OpenCV's own check, for formats whose header edgeclf does not read.
PIXEL_LIMIT = 40_000_000
