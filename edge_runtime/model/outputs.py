"""What a model's output rows are: probabilities (edgeclf's models end in a softmax) or logits that
the model's metadata declares (``output: logits``), which the runtime turns into probabilities.

Any other output (logits without that key, sigmoid scores, raw features) would be shown as
"probabilities" and scores that mean nothing; ``as_probabilities`` refuses it in one line.
"""

from __future__ import annotations

import numpy as np

from edgeclf.errors import EdgeclfError, safe_text
from edgeclf.model import metadata as md

#: How far a row of probabilities may sum from 1 (float16 and int8 models round a little).
SUM_TOLERANCE = 0.01


def output_kind(meta: dict[str, str], path: object) -> str:
    """``probabilities`` (the default) or ``logits``, as the model's metadata says; a one-line
    error for any other value."""
    kind = meta.get(md.OUTPUT, md.PROBABILITIES).strip().lower()
    if kind not in (md.PROBABILITIES, md.LOGITS):
        raise EdgeclfError(f"{path}: metadata {md.OUTPUT} {safe_text(meta[md.OUTPUT])[:40]!r} is not "
                           f"{md.PROBABILITIES!r} or {md.LOGITS!r}")
    return kind


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits."""
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def as_probabilities(rows: np.ndarray, kind: str, path: object) -> np.ndarray:
    """``rows`` [N, classes] as probabilities: softmaxed when ``kind`` is logits, else checked
    (non-negative, each row summing to 1); a one-line EdgeclfError when they are not."""
    if kind == md.LOGITS:
        return softmax(rows.astype(np.float32, copy=False))
    sums = rows.sum(axis=1)
    bad = np.flatnonzero((rows < -1e-6).any(axis=1) | (np.abs(sums - 1) > SUM_TOLERANCE))
    if len(bad):
        row = rows[bad[0]]
        raise EdgeclfError(
            f"{path}: model output is not probabilities (values {row.min():.3g} to {row.max():.3g}, summing to "
            f"{sums[bad[0]]:.3g}); end the model in a softmax, or set its metadata {md.OUTPUT}={md.LOGITS} "
            "to have edgeclf apply one")
    return rows
