"""The live page and HTTP API of a device: ``predict --serve`` (``server``'s ``LiveServer``;
``handler`` answers the requests, ``fanout`` sends the streams, ``address`` parses and checks the
addresses; the page is ``live.html``)."""

from .address import parse_address
from .server import LiveServer

__all__ = ["LiveServer", "parse_address"]
