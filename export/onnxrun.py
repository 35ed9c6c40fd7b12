"""Running exported ONNX models in onnxruntime for the export checks (parity, accuracy, latency)."""

from __future__ import annotations

import os
import time
from typing import Callable

import numpy as np
import onnxruntime as ort

from edgeclf import metadata as md


def session(model: str | os.PathLike | bytes, threads: int | None = None) -> ort.InferenceSession:
    """A CPU session with every graph optimisation on (what the edge runtime uses: it fuses
    Conv+ReLU and turns QDQ pairs into QLinear* int8 kernels)."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    src = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])


def predict(sess: ort.InferenceSession, x: np.ndarray, batch_size: int = 32, progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Probabilities [N, classes] for uint8 RGB images [N, H, W, 3]."""
    out = []
    for i in range(0, len(x), batch_size):
        out.append(sess.run([md.OUTPUT_NAME], {md.INPUT_NAME: x[i : i + batch_size]})[0])
        if progress:
            progress(len(x[i : i + batch_size]))
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


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
