"""Passwords kept out of what edgeclf shows or stores: a stream URL's ``user:password@`` (also inside a
GStreamer pipeline's ``location=``), a ``password=`` query parameter, and rtspsrc/souphttpsrc's
``user-pw=`` / ``proxy-pw=`` properties. Sources mask their spec once, where its display name is made
(``Source.spec``), so every output (console, ``--json``, CSV, live server, errors) gets the masked one;
the real spec stays with the code that opens the stream."""

from __future__ import annotations

import re

MASK = "***"

# scheme://user:password@ : the user-info ends at the authority's last "@" (a password may hold
# an unescaped "@"); "/", "?", "#", whitespace and quotes end the authority, as in a URL parser.
# "scheme:/user:..." too: what pathlib makes of a URL given where a path is expected.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*:/{1,2}[^\s/?#@:'\"]*:)[^\s/?#'\"]*(@)")
# ?password=... and GStreamer's user-pw=... / proxy-pw=... (a quoted value as a whole)
_NAMED = re.compile(r"(?i)(\b(?:password|passwd|pwd|user-pw|proxy-pw)=)(\"[^\"]*\"|'[^']*'|[^\s&;#!'\"]*)")


def redact_url(text: str) -> str:
    """``text`` (a URL, a GStreamer pipeline, a file path) with every password in it replaced by
    ``***``: ``rtsp://user:secret@cam/live`` -> ``rtsp://user:***@cam/live``. Other text is unchanged."""
    text = _USERINFO.sub(lambda m: m.group(1) + MASK + m.group(2), text)
    return _NAMED.sub(lambda m: m.group(1) + MASK, text)
