"""``--model auto --budget-ms MS``: the largest rung of the EfficientNet-Lite ladder whose int8 ONNX
model classifies a frame within MS milliseconds on the machine that trains.

Each rung is measured, not estimated: its network (untrained: weights do not change the time) is
converted with tf2onnx, quantized to int8 as export does (QDQ, per-channel weights) on a few
generated frames, and timed through onnxruntime at ``threads`` threads (median of many single-frame
runs after a warm-up). The figures are cached per CPU and library version, so the next run
answers at once.
"""

from __future__ import annotations

import hashlib
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from edgeclf.errors import EdgeclfError
from edgeclf.outfiles import write_json

LADDER = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")  # fastest first
RUNS = 40


def pick_model(budget_ms: float, threads: int = 1, say: Callable[[str], None] = print) -> tuple[str, dict]:
    """The most capable rung within ``budget_ms``, and every rung's measured int8 latency (ms)."""
    measured = {}
    for name in LADDER:
        measured[name] = int8_latency_ms(name, threads)
        if measured[name] > budget_ms:  # the ladder only gets slower
            break
    on = f"int8, {threads} thread{'s' if threads > 1 else ''}, on this machine"
    fitting = [n for n, ms in measured.items() if ms <= budget_ms]
    if not fitting:
        fastest = LADDER[0]
        raise EdgeclfError(f"--budget-ms {budget_ms:g}: no model fits; the fastest, {fastest}, takes "
                           f"{measured[fastest]:.1f} ms per frame ({on})")
    figures = ", ".join(f"{n} {ms:.1f} ms" for n, ms in measured.items())
    say(f"--model auto: {fitting[-1]}, the most capable within {budget_ms:g} ms per frame ({figures}; {on})")
    return fitting[-1], {"budget_ms": budget_ms, "threads": threads, "int8_latency_ms": measured}


def int8_latency_ms(name: str, threads: int = 1) -> float:
    """Median single-frame latency of ``name``'s int8 ONNX model on this machine (cached)."""
    import onnxruntime as ort

    from .imagecache import default_cache_dir
    from .models import ARCHITECTURES

    size = ARCHITECTURES[name].default_size
    key = _cache_key(name, size, threads, ort.__version__)
    cache = default_cache_dir()
    cached = cache / "latency" / f"{key}.json" if cache is not None else None
    if cached is not None and cached.is_file():
        try:
            return float(json.loads(cached.read_text())["ms"])
        except (OSError, ValueError, KeyError, TypeError):
            pass  # a damaged entry is measured again
    ms = _measure(name, size, threads)
    if cached is not None:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            write_json(cached, {"model": name, "size": size, "threads": threads, "ms": ms})
        except OSError:
            pass  # a read-only cache costs a re-measurement next time, nothing else
    return ms


def _cache_key(name: str, size: int, threads: int, ort_version: str) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    text = json.dumps([name, size, threads, ort_version, cpu])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _measure(name: str, size: int, threads: int) -> float:
    with tempfile.TemporaryDirectory(prefix="edgeclf-budget-") as tmp:
        return time_int8(build_int8(name, size, Path(tmp)), threads)


def build_int8(name: str, size: int, folder: Path) -> Path:
    """``name``'s network (untrained, 2 classes) as an int8 ONNX file in ``folder``."""
    import tensorflow as tf
    import tf2onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from .models import ARCHITECTURES

    model = ARCHITECTURES[name].build(2, size, weights=None)
    spec = (tf.TensorSpec((1, size, size, 3), tf.float32, name="image"),)
    frames = iter([_frame(size, seed) for seed in range(4)])

    class Frames(CalibrationDataReader):
        def get_next(self):
            x = next(frames, None)
            return None if x is None else {"image": x}

    fp32, int8 = folder / f"{name}.fp32.onnx", folder / f"{name}.int8.onnx"
    tf2onnx.convert.from_keras(model, input_signature=spec, opset=17, output_path=str(fp32))
    quantize_static(str(fp32), str(int8), Frames(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return int8


def time_int8(path: Path, threads: int) -> float:
    """Median single-frame latency (ms) of the ONNX model at ``path`` at ``threads`` threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    size = sess.get_inputs()[0].shape[1]
    feed = {sess.get_inputs()[0].name: _frame(size, 0)}
    for _ in range(5):
        sess.run(None, feed)
    times = []
    for _ in range(RUNS):
        t = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t) * 1000)
    return float(np.median(times))


def _frame(size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (1, size, size, 3)).astype(np.float32)
