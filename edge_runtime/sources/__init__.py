"""Where frames come from: image files, folders, globs, videos, cameras, camera modules and network
streams, all opened by one ``open_source(spec)`` (see ``open``)."""

from .open import Frame, Source, open_source

__all__ = ["Frame", "Source", "open_source"]
