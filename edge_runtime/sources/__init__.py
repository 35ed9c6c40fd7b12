"""Where frames come from: image files, folders, globs, videos, cameras, camera modules and network
streams, all opened by one ``open_source(spec)`` (see ``open``). ``base`` holds ``Frame`` and
``Source``; ``files`` the file sources, ``live`` the capture-thread sources, ``csi`` the camera
modules, ``capture`` what they share about OpenCV captures."""

from .base import Frame, Source
from .open import open_source

__all__ = ["Frame", "Source", "open_source"]
