"""A source's state: its debounced label. A new label becomes the state once it has been every
classified frame's label for ``frames`` frames in a row and for at least ``seconds`` seconds (both
configurable; ``unknown`` is a label like any other), so a flicker of one or two frames changes
nothing and a subscriber hears of a change once."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Change:
    """A state change: ``previous`` is None for the first state after start."""

    label: str
    previous: str | None
    score: float  # the mean score of the frames that held the new label
    at: float  # the time of the frame that completed the debounce


class Debouncer:
    """Feed it every classified frame's label; it returns a ``Change`` when the state changes."""

    def __init__(self, frames: int = 3, seconds: float = 0.0) -> None:
        if frames < 1 or seconds < 0:
            raise ValueError("frames must be at least 1 and seconds at least 0")
        self.frames, self.seconds = frames, seconds
        self.state: str | None = None
        self.since: float | None = None  # when the state began
        self.score: float = 0.0
        self._candidate: str | None = None
        self._count = 0
        self._first_at = 0.0
        self._score_sum = 0.0

    def update(self, label: str, score: float, at: float) -> Change | None:
        """One frame's ``label`` and ``score`` at time ``at`` (seconds, any clock used consistently)."""
        if label == self.state:
            self._candidate, self._count = None, 0
            self.score = 0.8 * self.score + 0.2 * score  # the state's score follows its frames
            return None
        if label != self._candidate:
            self._candidate, self._count, self._first_at, self._score_sum = label, 0, at, 0.0
        self._count += 1
        self._score_sum += score
        if self._count < self.frames or at - self._first_at < self.seconds:
            return None
        change = Change(label, self.state, self._score_sum / self._count, at)
        self.state, self.since, self.score = label, at, change.score
        self._candidate, self._count = None, 0
        return change
