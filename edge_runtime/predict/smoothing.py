"""``--smooth``: the moving average a live label is decided on."""

from __future__ import annotations

import numpy as np


class Smoother:
    """Exponential moving average of the probabilities and of the unknown score, so a live label,
    ``unknown`` included, does not flicker: ``avg = alpha * newest + (1 - alpha) * avg``, with
    ``alpha`` in (0, 1] (``--smooth-alpha``, checked by ``PredictOptions.validate``). The decision
    (a class or ``unknown``) is taken on the averages."""

    def __init__(self, alpha: float) -> None:
        self.alpha = alpha
        self.avg: np.ndarray | None = None
        self.score: float | None = None

    def __call__(self, probs: np.ndarray, score: float | None = None) -> tuple[np.ndarray, float | None]:
        probs = np.asarray(probs, np.float64)
        self.avg = probs if self.avg is None else self.alpha * probs + (1 - self.alpha) * self.avg
        if score is not None:
            self.score = float(score) if self.score is None else self.alpha * float(score) + (1 - self.alpha) * self.score
        return self.avg, (self.score if score is not None else None)
