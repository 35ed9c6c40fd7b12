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


def auroc(known: Sequence[float], unknown: Sequence[float]) -> float:
    """Area under the ROC curve of a score that should be higher for ``unknown`` than for
    ``known``: the chance an unknown photo scores above a known one (ties count half)."""
    k, u = np.asarray(known, np.float64), np.asarray(unknown, np.float64)
    if not len(k) or not len(u):
        raise ValueError("auroc: needs scores of both kinds")
    s = np.concatenate([k, u])
    ranks = np.empty(len(s))
    ranks[np.argsort(s, kind="mergesort")] = np.arange(1, len(s) + 1)
    _, inv, counts = np.unique(s, return_inverse=True, return_counts=True)
    ranks = (np.bincount(inv, ranks) / counts)[inv]  # tied scores share their mean rank
    return float((ranks[len(k):].sum() - len(u) * (len(u) + 1) / 2) / (len(k) * len(u)))


def accepted_at(known: Sequence[float], unknown: Sequence[float], keep: float = 0.95) -> float:
    """The share of ``unknown`` scores at or below the threshold that keeps ``keep`` of the
    ``known`` ones (the false-accept rate at 95% in-class acceptance, "FPR95")."""
    t = float(np.quantile(np.asarray(known, np.float64), keep))
    return float((np.asarray(unknown, np.float64) <= t).mean())
