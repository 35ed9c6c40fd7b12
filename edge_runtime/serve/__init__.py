"""The live page and HTTP API of a device: ``predict --serve`` and ``edgeclf serve`` (``server``'s
``LiveServer``; ``handler`` answers the requests, ``fanout`` sends the streams, ``address`` parses
and checks the addresses, ``auth`` the API token, ``api`` classifies uploads, ``metrics`` is
``/metrics``; the page is ``live.html``)."""

from .address import parse_address
from .server import LiveServer

__all__ = ["LiveServer", "parse_address"]
