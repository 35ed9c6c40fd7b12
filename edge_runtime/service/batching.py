"""Whether the service classifies its sources' waiting frames in one call or one by one: measured
on the machine that runs it, not assumed. On a GPU one call for several frames costs little more
than one frame; on a CPU onnxruntime already spreads one frame over every thread, so a batch may
save nothing and only makes the first frame wait for the others."""

from __future__ import annotations

import statistics

#: calls of each kind (with at least 2 frames waiting) before the choice is made
TRIALS = 30
#: a batch must be this much cheaper per frame to be chosen: it delays the batch's first frame
MARGIN = 0.95


class BatchChooser:
    """``batch = true`` or ``false`` fixes the mode; ``"auto"`` alternates the two for the first
    ``TRIALS`` calls of each with several frames waiting, then keeps the one whose inference costs
    less per frame."""

    def __init__(self, setting: bool | str) -> None:
        self.choice: bool | None = setting if isinstance(setting, bool) else None
        self.per_frame_s: dict[bool, list[float]] = {True: [], False: []}

    def batched(self, frames: int) -> bool:
        """Whether to classify these ``frames`` waiting frames in one call."""
        if self.choice is not None:
            return self.choice
        return frames < 2 or len(self.per_frame_s[True]) <= len(self.per_frame_s[False])

    def record(self, batched: bool, frames: int, infer_s: float) -> bool | None:
        """One call's (or one round of single calls') inference time; the choice when it is made now."""
        if self.choice is not None or frames < 2:
            return None
        self.per_frame_s[batched].append(infer_s / frames)
        if min(len(v) for v in self.per_frame_s.values()) < TRIALS:
            return None
        self.choice = self.median_ms(True) < MARGIN * self.median_ms(False)
        return self.choice

    def median_ms(self, batched: bool) -> float:
        times = self.per_frame_s[batched]
        return 1000 * statistics.median(times) if times else float("nan")

    def describe(self) -> str:
        """The choice in words, with the figures it rests on."""
        return (f"batching across sources {'on' if self.choice else 'off'}: {self.median_ms(True):.2f} ms a frame "
                f"in one call, {self.median_ms(False):.2f} ms one by one (medians of {TRIALS} calls each)")
