"""Classification metrics shared by every evaluator (Keras, ONNX fp32, ONNX int8), each accuracy
figure with its 95% Wilson score interval: how far the number of photos lets it be trusted."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile: two-sided 95% intervals


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval (lo, hi) of a proportion ``successes / n``, 95% by default.

    Unlike the textbook p +- z*sqrt(p(1-p)/n), it stays inside [0, 1] and is not empty at 0/n or
    n/n (10 of 10 right: 72.2% to 100%). ``n == 0`` says nothing: (0, 1)."""
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"wilson_interval: need 0 <= successes <= n (got {successes} of {n})")
    if n == 0:
        return 0.0, 1.0
    p, z2 = successes / n, z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # at 0/n and n/n the bound is exactly 0 or 1: no rounding just inside it
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


def classification_report(y_true: Sequence[int], y_pred: Sequence[int], class_names: Sequence[str]) -> dict:
    """Accuracy, per-class precision/recall/support and the confusion matrix (row = true class),
    each accuracy figure with its 95% Wilson interval (``*_ci95``: [lo, hi]) from its own count:
    accuracy from every image, a class's recall from its images (support), its precision from
    the images predicted as it (predicted)."""
    n = len(class_names)
    t = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.int64)
    cm = np.zeros((n, n), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    per_class = {}
    for i, name in enumerate(class_names):
        tp = int(cm[i, i])
        predicted = int(cm[:, i].sum())
        support = int(cm[i, :].sum())
        per_class[name] = {
            "precision": tp / predicted if predicted else 0.0,
            "recall": tp / support if support else 0.0,
            "support": support,
            "predicted": predicted,
            "precision_ci95": list(wilson_interval(tp, predicted)),
            "recall_ci95": list(wilson_interval(tp, support)),
        }
    total = int(cm.sum())
    right = int(np.trace(cm))
    return {
        "accuracy": right / total if total else 0.0,
        "accuracy_ci95": list(wilson_interval(right, total)),
        "ci": "95% Wilson score interval",
        "per_class": per_class,
        "confusion": cm.tolist(),
        "n_images": total,
    }
