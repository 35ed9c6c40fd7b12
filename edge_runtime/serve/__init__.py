"""The live page and HTTP API of a device: ``predict --serve`` (see ``server``; the page is
``live.html``)."""

from .server import LiveServer, parse_address

__all__ = ["LiveServer", "parse_address"]
