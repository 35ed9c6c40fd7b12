"""``Prediction``: what the classifier answers for one image."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from edgeclf.model.unknown import UNKNOWN_LABEL, UnknownRule


@dataclass(frozen=True)
class Prediction:
    """One image's result: the label (the top class, or ``unknown`` when the image is none of the
    classes), its class index (None when unknown), the top class's probability, every class's
    probability, and the unknown score (how far the image is from the training photos; None when
    the model has none)."""

    label: str
    index: int | None
    score: float
    probs: dict[str, float]
    unknown_score: float | None = None

    @property
    def unknown(self) -> bool:
        return self.index is None

    @property
    def best(self) -> str:
        """The most probable class, even when the label is ``unknown``."""
        return self.top(1)[0][0]

    def top(self, k: int) -> list[tuple[str, float]]:
        """The ``k`` most probable classes as (label, probability), best first."""
        return sorted(self.probs.items(), key=lambda kv: -kv[1])[: max(1, k)]

    @classmethod
    def from_probs(cls, probs: np.ndarray, class_names: Sequence[str], unknown_score: float | None = None,
                   rule: UnknownRule | None = None) -> "Prediction":
        i = int(np.argmax(probs))
        p, score = float(probs[i]), None if unknown_score is None else float(unknown_score)
        if rule is not None and rule.is_unknown(class_names[i], p, score):
            return cls(UNKNOWN_LABEL, None, p, {c: float(q) for c, q in zip(class_names, probs)}, score)
        return cls(class_names[i], i, p, {c: float(q) for c, q in zip(class_names, probs)}, score)
