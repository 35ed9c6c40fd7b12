"""Running exported ONNX models in onnxruntime for the export checks (parity, accuracy, latency).

Sessions come from ``edgeclf.model.session.open_session``: the checks measure the models as the runtime
runs them (same optimisation, threads and spinning)."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import onnxruntime as ort

from edgeclf.model import metadata as md
from edgeclf.model.batching import in_batches


def predict(sess: ort.InferenceSession, x: np.ndarray, batch_size: int = 32, progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Probabilities [N, classes] for uint8 RGB images [N, H, W, 3]."""
    return in_batches(lambda batch: sess.run([md.OUTPUT_NAME], {md.INPUT_NAME: batch})[0], x, batch_size, progress)


def latency_ms(sessions: dict[str, ort.InferenceSession], frame: np.ndarray, rounds: int = 5, runs: int = 40) -> dict[str, float]:
    """Median per-frame latency (batch 1) of each session, measured interleaved in ``rounds`` so
    that drifting machine load hits every model alike."""
    feed = {md.INPUT_NAME: frame[None]}
    for s in sessions.values():  # warm-up: first runs allocate and pack weights
        for _ in range(5):
            s.run(None, feed)
    samples: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(rounds):
        for name, s in sessions.items():
            t = time.perf_counter()
            for _ in range(runs):
                s.run(None, feed)
            samples[name].append((time.perf_counter() - t) / runs * 1000)
    return {k: float(np.median(v)) for k, v in samples.items()}
