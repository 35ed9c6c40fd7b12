"""Parity of the ONNX export with the Keras model it came from."""

from __future__ import annotations

import numpy as np

PROB_TOLERANCE = 1e-4  # largest accepted absolute probability difference
TIE_MARGIN = 1e-4  # images whose two best classes are closer than this may legitimately flip


def compare(reference: np.ndarray, candidate: np.ndarray, tie_margin: float = TIE_MARGIN) -> dict:
    """Top-1 agreement and probability differences of ``candidate`` against ``reference`` [N, C].

    Images whose two best reference probabilities are within ``tie_margin`` are left out of the
    agreement: rounding alone may swap their top class.
    """
    top2 = np.sort(reference, axis=1)[:, -2:] if reference.shape[1] > 1 else np.zeros((len(reference), 2))
    decided = (top2[:, 1] - top2[:, 0]) > tie_margin
    agree = reference.argmax(1) == candidate.argmax(1)
    diff = np.abs(reference - candidate)
    return {
        "n": int(len(reference)),
        "n_ties": int((~decided).sum()),
        "top1_agreement": float(agree[decided].mean()) if decided.any() else 1.0,
        "max_abs_diff": float(diff.max()) if diff.size else 0.0,
        "mean_abs_diff": float(diff.mean()) if diff.size else 0.0,
    }


def parity_ok(figures: dict, tolerance: float = PROB_TOLERANCE) -> bool:
    """The fp32 export contract: every decided image agrees and no probability moves more than ``tolerance``."""
    return figures["top1_agreement"] == 1.0 and figures["max_abs_diff"] <= tolerance


def describe(figures: dict) -> str:
    return (
        f"top-1 agreement {figures['top1_agreement']:.2%} on {figures['n'] - figures['n_ties']} images "
        f"({figures['n_ties']} near-ties aside), max |dp| {figures['max_abs_diff']:.2e}"
    )
