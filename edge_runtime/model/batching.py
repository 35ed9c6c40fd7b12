"""Running a model over many inputs a batch at a time."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


def in_batches(
    fn: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray | Sequence,
    batch_size: int,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """``fn`` applied to ``x[i : i + batch_size]`` for each batch (the last may be shorter), the
    results concatenated along the first axis; ``progress(n)`` after each batch of ``n`` inputs.
    An empty ``x`` gives an empty float32 array of shape (0, 0)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1 (got {batch_size})")
    out = []
    for i in range(0, len(x), batch_size):
        batch = x[i : i + batch_size]
        out.append(np.asarray(fn(batch)))
        if progress:
            progress(len(batch))
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)
