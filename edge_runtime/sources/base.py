"""What every source gives and is: a ``Frame`` to classify, and the ``Source`` that yields them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from edgeclf.errors import EdgeclfError
from edgeclf.redact import redact_url

#: ``on_skip(path, reason)``: told about every file a source skips (unreadable, not an image).
SkipHandler = Callable[[str, str], None]


@dataclass
class Frame:
    """One image to classify. ``index``: position in the file list, or frame number in a video or
    stream (for live sources it counts every captured frame, so gaps show the frames skipped to
    stay current). ``captured_at``: ``time.monotonic()`` when it was read."""

    image: np.ndarray
    source: str
    index: int
    captured_at: float


class Source:
    """An iterable of ``Frame``; close it (or use ``with``) to release files, devices and threads.
    ``spec``: what it was opened from, as shown (a URL's password masked, see ``edgeclf.redact``)."""

    kind = "source"
    live = False
    fps: float | None = None
    total: int | None = None  # frames it will give, when known in advance
    #: "connecting", "connected", "reconnecting" or "ended" (shown by ``--serve``'s health endpoint).
    state = "connected"

    def __init__(self, spec: str, every: int = 1, max_frames: int | None = None) -> None:
        if every < 1:
            raise EdgeclfError(f"--every must be at least 1 (got {every})")
        if max_frames is not None and max_frames < 0:
            raise EdgeclfError(f"--max-frames must be 0 or more (got {max_frames})")
        self.spec = redact_url(spec)  # what is shown and stored; the opener keeps the real URL
        self.every = every
        self.max_frames = max_frames
        self.skipped: list[dict] = []
        self.dropped = 0  # live sources: captured frames replaced by a newer one before use

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _limit(self, total: int) -> int:
        n = -(-total // self.every)
        return n if self.max_frames is None else min(n, self.max_frames)
