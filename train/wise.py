"""WiSE-FT (Wortsman et al. 2022): the kept model is the fine-tuned weights averaged with the
weights fine-tuning started from (the linear probe's), ``share`` of the way towards the tuned ones.

Fine-tuning on a few hundred photos moves the backbone away from features that generalise; the
average keeps most of what fine-tuning gained and what the probe knew. Measured on four small
data sets (benchmarks/results/lpft_wise.md), the 0.5 average at the last epoch was at least as
good as both the probe and the plain fine-tune on each. Costs nothing at inference time: the
network is the same, only its weights differ.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeclf.outfiles import atomic_path

PROBE_WEIGHTS = "probe.weights.h5"  # the weights fine-tuning starts from, kept in the run folder until it ends
DEFAULT_SHARE = 0.5


def save_start(model, out: Path) -> None:
    """Keep ``model``'s weights (the probe's) for the average taken when the run ends."""
    with atomic_path(out / PROBE_WEIGHTS, suffix=".weights.h5") as tmp:
        model.save_weights(tmp)


def average_into(out: Path, share: float) -> bool:
    """Replace ``out``/model.keras by ``(1 - share)`` x the probe's weights + ``share`` x its own.
    False (nothing changed) when the run kept no probe weights or ``share`` is 1."""
    start = out / PROBE_WEIGHTS
    if share >= 1.0 or not start.is_file():
        return False
    import keras

    model = keras.models.load_model(out / "model.keras", compile=False)
    tuned = model.get_weights()
    model.load_weights(start)
    model.set_weights(averaged(model.get_weights(), tuned, share))
    with atomic_path(out / "model.keras", suffix=".keras") as tmp:
        model.save(tmp)
    return True


def averaged(probe: list[np.ndarray], tuned: list[np.ndarray], share: float) -> list[np.ndarray]:
    """``(1 - share)`` x ``probe`` + ``share`` x ``tuned``, weight by weight."""
    # BatchNorm statistics and frozen layers are equal in both: the average leaves them as they are.
    return [((1 - share) * p + share * t).astype(t.dtype) if np.issubdtype(t.dtype, np.floating) else t
            for p, t in zip(probe, tuned)]
