"""How compare.py measures: interleaved turns of every runner under each condition, which of
edgeclf's adaptive arms ran in each, and the peak memory and first-inference time of a fresh process
running one format."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
from compare_runners import Runner, label


def interleaved_timings(runners: list[Runner], x: np.ndarray, batch: np.ndarray, rounds: int, turn_s: float,
                        max_calls: int, progress: Callable[[str], None],
                        conditions: dict[str, Callable[[], None]] | None = None,
                        settle_s: float = 0.0) -> dict[str, tuple[dict, dict]]:
    """Per-frame and per-batch times (seconds) of every runner under each condition, taken in turns.

    Each round gives every runner a turn of about ``turn_s`` seconds of single-frame calls (on
    different images) and one batch call; odd rounds go in reverse order so no runner always
    follows the same neighbour. Slow runners get fewer calls per turn, never fewer turns.
    ``conditions`` (name -> function that brings it about, e.g. pausing or resuming a co-tenant)
    take turns the same way inside every round, so idle and loaded figures share the same minutes.
    ``settle_s``: every turn first runs 1-1.5x that long untimed, single frames then batches, so a
    runtime that adapts to the load (edgeclf's default) is timed in the condition, not in its change.
    """
    conditions = conditions or {"idle": lambda: None}
    out = {c: ({r.name: [] for r in runners}, {r.name: [] for r in runners}) for c in conditions}
    names = list(conditions)
    i = 0
    for rnd in range(rounds):
        progress(f"round {rnd + 1}/{rounds}")
        for cond in names if rnd % 2 == 0 else names[::-1]:
            conditions[cond]()
            per_frame, per_batch = out[cond]
            i = _turns(runners if rnd % 2 == 0 else runners[::-1], x, batch, turn_s, max_calls, per_frame, per_batch, i,
                       settle_s)
    return out


_SETTLE_RNG = random.Random(0)


def _turns(runners: list[Runner], x: np.ndarray, batch: np.ndarray, turn_s: float, max_calls: int,
           per_frame: dict, per_batch: dict, i: int, settle_s: float = 0.0) -> int:
    """One turn of every runner; returns the next image index."""
    for r in runners:
        if settle_s > 0:
            _settle(r, x, batch, settle_s)
        end = time.perf_counter() + turn_s
        n = 0
        while n < 2 or (time.perf_counter() < end and n < max_calls):
            frame = x[i % len(x)][None]
            i += 1
            t0 = time.perf_counter()
            r.one(frame)
            per_frame[r.name].append(r.own_time() if r.own_time else time.perf_counter() - t0)
            n += 1
        t0 = time.perf_counter()
        r.predict(batch)
        per_batch[r.name].append(r.own_time() if r.own_time else time.perf_counter() - t0)
    return i


def _settle(r: Runner, x: np.ndarray, batch: np.ndarray, settle_s: float) -> None:
    """Untimed single frames, then as long of batches."""
    for call, arg in ((r.one, x[:1]), (r.predict, batch)):
        # 1-1.5x, drawn per turn: a fixed length would line the timed calls up with
        # anything periodic in a runtime (edgeclf's probes every 1-2 s)
        end = time.perf_counter() + settle_s * (1 + 0.5 * _SETTLE_RNG.random())
        while True:
            call(arg)
            if time.perf_counter() >= end:
                break


class ArmLog:
    """Calls per way of running (edgeclf's adaptive arms) of each adaptive runner, per condition,
    its untimed settling included: which arm the timed figures came from."""

    def __init__(self, runners: list[Runner]) -> None:
        self.runners = [r for r in runners if r.arm_calls is not None and r.arm_calls()]
        self.by: dict[str, dict[str, dict[str, int]]] = {}
        self.cond: str | None = None
        self.snap = self._now()

    def _now(self) -> dict[str, dict[str, int]]:
        return {r.name: r.arm_calls() for r in self.runners}

    def enter(self, cond: str | None) -> None:
        """The turns of ``cond`` start (None: the timing is over)."""
        now = self._now()
        if self.cond is not None:
            for name, calls in now.items():
                into = self.by.setdefault(self.cond, {}).setdefault(name, {})
                for arm, n in calls.items():
                    into[arm] = into.get(arm, 0) + n - self.snap[name].get(arm, 0)
        self.cond, self.snap = cond, now

    def notes(self) -> list[str]:
        out = []
        for cond, per in self.by.items():
            for name, calls in per.items():
                total = sum(calls.values()) or 1
                shares = ", ".join(f"{arm} {100 * n / total:.0f}%" for arm, n in sorted(calls.items(), key=lambda kv: -kv[1]) if n)
                out.append(f"{label(name)}, {cond}: calls per way of running (untimed settling included): {shares}")
        return out


PROBE_CODE = r"""
import json, os, sys, time
import numpy as np
fmt, path, h, w, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
x = np.random.default_rng(0).integers(0, 256, (1, h, w, 3), dtype=np.uint8)
# first_ms: what a fresh process pays before its first answer (the engine's import, the model's
# load, the first run), Python and numpy already up as in every process that has images to run.
t0 = time.perf_counter()
if fmt == "baseline":
    run = lambda: None
elif fmt.startswith("keras"):
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    import keras
    m = keras.models.load_model(path, compile=False)
    xf = x.astype(np.float32)
    run = (lambda: m.predict(xf, verbose=0)) if fmt == "keras_predict" else (lambda: m(xf, training=False))
elif fmt.startswith(("onnx", "edgeclf")):  # edgeclf's Classifier, on the .onnx or the .tflite
    from edgeclf.model.classifier import Classifier  # as the timings: its adaptive sessions when threads is 0
    c = Classifier(path, threads=threads or None)
    run = lambda: c.predict_arrays(x)
elif fmt.startswith("litert"):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf
        Interpreter = tf.lite.Interpreter
    it = Interpreter(model_path=path, num_threads=threads); it.allocate_tensors()
    d = it.get_input_details()[0]
    xi = x.astype(d["dtype"])
    run = lambda: (it.set_tensor(d["index"], xi), it.invoke())
elif fmt.startswith("opencv"):
    import cv2
    cv2.setNumThreads(threads)
    net = cv2.dnn.readNetFromONNX(path)
    run = lambda: (net.setInput(x), net.forward())
else:  # the other engines: opened as compare.py opens them (engine_open imports only numpy)
    sys.path.insert(0, sys.argv[6])
    import engine_open as eo
    if fmt.startswith("openvino"):
        predict = eo.open_openvino(path, threads)
    elif fmt.startswith("ort_openvino"):
        predict = eo.open_ort_openvino(path, threads)[0]
    else:
        import pathlib
        predict = eo.open_ncnn(pathlib.Path(path), threads)
    run = lambda: predict(x)
run()
first_ms = (time.perf_counter() - t0) * 1e3
for _ in range(19):
    run()
# VmHWM: ru_maxrss would carry over the parent's peak across fork+exec.
hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"rss_mb": int(hwm.split()[1]) / 1024, "first_ms": first_ms}))
"""


def probe_format(fmt: str, path: Path | None, size: tuple[int, int], threads: int,
                 env: dict[str, str] | None = None) -> dict[str, float] | None:
    """A fresh process that loads only this runtime and model and runs it 20 times: its peak
    resident memory (``rss_mb``) and the time from before the engine's import to the end of its
    first run (``first_ms``); None when the probe fails (said on stderr). ``env``: what that
    runtime needs in its environment, e.g. onnxruntime-openvino's folder."""
    args = [sys.executable, "-c", PROBE_CODE, fmt, str(path or ""), str(size[0]), str(size[1]), str(threads),
            str(Path(__file__).resolve().parent)]
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=300, check=True,
                             env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})})
        said = json.loads(out.stdout.strip().splitlines()[-1])
        return {"rss_mb": float(said["rss_mb"]), "first_ms": float(said["first_ms"])}
    except (subprocess.SubprocessError, ValueError, IndexError, KeyError, TypeError) as e:
        err = getattr(e, "stderr", None) or ""
        print(f"warning: memory probe for {fmt} failed: {e} {err.strip().splitlines()[-1:] }", file=sys.stderr)
        return None


def peak_memory_mb(fmt: str, path: Path | None, size: tuple[int, int], threads: int,
                   env: dict[str, str] | None = None) -> float | None:
    """Peak resident memory of ``probe_format``'s process alone (callers that want only that)."""
    probe = probe_format(fmt, path, size, threads, env)
    return probe["rss_mb"] if probe else None
