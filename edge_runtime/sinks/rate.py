"""Frames per second: the one definition every live figure uses (the overlay that ``--save``,
``--show`` and ``--serve`` draw, ``/api/health``, the live page), and the run's mean (the summary).

The live rate is results per second over the last ``WINDOW_S`` seconds, measured when results
come out of the model: results come in bursts when frames are classified in batches, and a mean
of the gaps between them would count each burst's near-zero gaps; a longer window would lag
behind a change of rate."""

from __future__ import annotations

import collections
import time
from typing import Callable

#: The live rate's window, in seconds.
WINDOW_S = 1.0
#: A live rate with no result for this long is 0: the source has stalled or ended.
STALL_S = 2.0
#: What the live rate measures, as the page, the overlay and ``/api/health`` label it.
LIVE_LABEL = f"results/s over the last {WINDOW_S:g} s"
#: What the run's figure measures (the summary's): after the start-up (the model loaded and warmed,
#: the source and outputs opened), which the summary reports apart.
RUN_LABEL = "results/s after the start-up"


class FrameRate:
    """Results per second over the last ``WINDOW_S`` seconds (at least the last two results, so a
    source slower than one frame a window still has a rate). ``tick()`` once per result; ``value()``
    the rate, 0 before the second result and once none came for ``STALL_S`` seconds."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._times: collections.deque[float] = collections.deque()

    def tick(self) -> float:
        """Count one result now; returns the rate it makes."""
        t = self._times
        t.append(self._clock())
        while len(t) > 2 and t[-1] - t[1] >= WINDOW_S:
            t.popleft()
        return self.value(t[-1])

    def value(self, now: float | None = None) -> float:
        t = list(self._times)  # a snapshot: another thread may tick meanwhile
        now = self._clock() if now is None else now
        if len(t) < 2 or now - t[-1] > STALL_S:
            return 0.0
        return (len(t) - 1) / max(t[-1] - t[0], 1e-6)


def mean_rate(count: int, seconds: float) -> float:
    """The run's figure: results per second over the run after its start-up (``count`` / ``seconds``)."""
    return count / seconds if seconds > 0 else 0.0
