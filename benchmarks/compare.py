"""Is edgeclf the fastest way to run this model? The same model and images through every runtime.

Measures, in one run and interleaved (A B C ... C B A ...) so machine noise hits all alike:
Keras ``model.predict`` per frame and a direct Keras call, ONNX fp32 and int8 in onnxruntime
(through edgeclf's ``Classifier``), LiteRT fp32 and int8 converted from the same Keras model,
and OpenCV DNN on the ONNX files. Reports per-frame latency (p50, p99), batch throughput,
accuracy on the same labelled images, file size and peak memory (each format in its own
process), with ratios against ONNX int8, and checks the goals of issues 5 and 14. With
``--cotenant`` every format is also timed while a second process keeps one core busy decoding a
video, idle and loaded turns alternating inside every round.

    python benchmarks/compare.py --run RUN_DIR [--onnx-dir DIR] [--data DIR] [--out benchmarks/results]

See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]

import numpy as np

from edgeclf import sysinfo
from edgeclf.bench import charts as cvplot, peak
from edgeclf.data.labelled import load_files, load_labelled
from edgeclf.errors import EdgeclfError, first_line
from edgeclf.model.batching import in_batches
from edgeclf.outfiles import write_json, write_text

REFERENCE = "onnx_int8"
LABELS = {
    "keras_predict": "Keras model.predict",
    "keras_call": "Keras model(x)",
    "onnx_fp32": "ONNX fp32 (onnxruntime)",
    "onnx_int8": "ONNX int8 (onnxruntime)",
    "litert_fp32": "LiteRT fp32",
    "litert_int8": "LiteRT int8",
    "opencv_fp32": "OpenCV DNN fp32 ONNX",
    "opencv_int8": "OpenCV DNN int8 ONNX",
}


@dataclass
class Runner:
    """One way of running the model: a per-frame call, a batch call, and what it is."""

    name: str
    runtime: str
    file: Path | None
    predict: Callable[[np.ndarray], np.ndarray]  # uint8 RGB NHWC batch (any N) -> probs [N, C]
    one: Callable[[np.ndarray], np.ndarray] | None = None  # fastest path for one frame [1, H, W, 3]
    notes: list[str] = field(default_factory=list)
    arm_calls: Callable[[], dict[str, int]] | None = None  # an adaptive runner's calls so far per way of running

    def __post_init__(self) -> None:
        if self.one is None:
            self.one = self.predict


# ---------------------------------------------------------------------------------------- the data
def load_run(run_dir: Path) -> dict:
    path = run_dir / "run.json"
    if not path.is_file():
        raise EdgeclfError(f"{run_dir}: not a run folder (no run.json)")
    if not (run_dir / "model.keras").is_file():
        raise EdgeclfError(f"{run_dir}: no model.keras")
    from edgeclf.train.run_record import read_run_record

    return read_run_record(path).to_dict()  # validated: a hand-edited run.json is a one-line error


def load_images(run: dict, data: Path | None) -> tuple[np.ndarray, np.ndarray, str]:
    """Labelled images at the model's input size: ``data`` or the run's validation split."""
    size = tuple(run["input_size"])
    names = run["class_names"]
    if data is not None:
        li = load_labelled(data, size, names)
        return li.x, li.y, str(data)
    val = run.get("splits", {}).get("val") or []
    if not val:
        raise EdgeclfError("run.json has no validation split (splits.val); pass --data DIR")
    base = Path(run.get("data_dir") or ".")
    paths = [Path(p) if Path(p).is_absolute() else base / p for p in val]
    x, ok, _ = load_files(paths, size)
    y = np.array([names.index(paths[i].parent.name) for i in ok], np.int64)
    return x, y, f"validation split of {_shown(run.get('data_dir'))} ({len(paths)} files)"


def _shown(path: str | None) -> str:
    """A path as the results name it: relative to the repository when it can be (run.json holds
    absolute paths, which name this machine)."""
    if not path:
        return "?"
    try:
        return os.path.relpath(path, ROOT) if Path(path).is_absolute() else path
    except ValueError:
        return path


# ------------------------------------------------------------------------------------- the runners
def keras_runners(run_dir: Path, threads: int) -> tuple[list[Runner], object]:
    import tensorflow as tf

    notes = []
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
    except RuntimeError:  # TensorFlow already started in this process (compare.main called from Python)
        notes.append(f"TensorFlow was already initialised: its thread count is its own, not {threads}")
    import keras

    model = keras.models.load_model(run_dir / "model.keras", compile=False)

    def predict(x: np.ndarray) -> np.ndarray:
        return model.predict(x.astype(np.float32), batch_size=32, verbose=0)

    def call(x: np.ndarray) -> np.ndarray:
        return model(x.astype(np.float32), training=False).numpy()

    f = run_dir / "model.keras"
    rt = f"keras {keras.__version__} / tensorflow {tf.__version__}"
    return [Runner("keras_predict", rt, f, predict, notes=list(notes)), Runner("keras_call", rt, f, call, notes=list(notes))], model


def onnx_runner(name: str, path: Path, threads: int) -> Runner:
    import onnxruntime as ort

    from edgeclf.model.classifier import Classifier

    clf = Classifier(path, threads=threads)
    return Runner(name, f"onnxruntime {ort.__version__}", path, clf.predict_arrays, arm_calls=clf.thread_calls)


def convert_litert(model, calib: np.ndarray, out_dir: Path) -> tuple[Path, Path]:
    """fp32 and full-integer int8 (uint8 input, float output) .tflite files from the Keras model."""
    import tensorflow as tf

    def converter():
        try:
            return tf.lite.TFLiteConverter.from_keras_model(model)
        except Exception:  # noqa: BLE001 - Keras 3 models go through a SavedModel instead
            saved = out_dir / "saved_model"
            model.export(str(saved), format="tf_saved_model")
            return tf.lite.TFLiteConverter.from_saved_model(str(saved))

    fp32 = out_dir / "model.tflite"
    int8 = out_dir / "model.int8.tflite"
    with contextlib.redirect_stdout(sys.stderr):  # Keras prints its SavedModel signature on stdout
        fp32.write_bytes(converter().convert())
        c = converter()
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        c.representative_dataset = lambda: ([calib[i : i + 1].astype(np.float32)] for i in range(len(calib)))
        c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        c.inference_input_type = tf.uint8  # raw pixels in, like the ONNX model's uint8 input
        int8.write_bytes(c.convert())
    return fp32, int8


def litert_calibration(run: dict, fallback: np.ndarray | None, n: int,
                       rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """``n`` images to calibrate LiteRT int8 on, and a note saying which: from the run's training
    split, else the first of ``fallback`` (the evaluation images)."""
    train_paths = [Path(p) for p in run.get("splits", {}).get("train", [])]
    if train_paths:
        pick = rng.choice(len(train_paths), size=min(n, len(train_paths)), replace=False)
        calib, _, _ = load_files([train_paths[i] for i in pick], tuple(run["input_size"]))
        return calib, f"LiteRT int8 calibrated on {len(calib)} training images"
    if fallback is None or len(fallback) == 0:
        raise EdgeclfError("run.json has no training split to calibrate LiteRT int8 on")
    return fallback[:n], f"LiteRT int8 calibrated on {len(fallback[:n])} of the evaluation images (run has no training split)"


def litert_interpreter_class() -> tuple[type, str]:
    try:
        from ai_edge_litert import __version__ as v
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, f"ai-edge-litert {v}"
    except ImportError:
        import tensorflow as tf

        return tf.lite.Interpreter, f"tf.lite {tf.__version__}"


def litert_runner(name: str, path: Path, threads: int) -> Runner:
    Interpreter, runtime = litert_interpreter_class()
    interpreters: dict[int, tuple] = {}

    def interp_for(n: int):
        # One interpreter per batch size: resizing in place re-plans the graph every call.
        if n not in interpreters:
            it = Interpreter(model_path=str(path), num_threads=threads)
            inp = it.get_input_details()[0]
            if inp["shape"][0] != n:
                it.resize_tensor_input(inp["index"], [n, *inp["shape"][1:]])
            it.allocate_tensors()
            interpreters[n] = (it, it.get_input_details()[0], it.get_output_details()[0])
        return interpreters[n]

    def predict(x: np.ndarray) -> np.ndarray:
        it, inp, out = interp_for(len(x))
        if inp["dtype"] == np.float32:
            feed = x.astype(np.float32)
        else:
            scale, zp = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            feed = x if (scale == 1.0 and zp == 0 and inp["dtype"] == np.uint8) else \
                np.clip(np.round(x / scale + zp), info.min, info.max).astype(inp["dtype"])
        it.set_tensor(inp["index"], feed)
        it.invoke()
        y = it.get_tensor(out["index"])
        if out["dtype"] != np.float32:
            scale, zp = out["quantization"]
            y = (y.astype(np.float32) - zp) * scale
        return y

    return Runner(name, runtime, path, predict)


def opencv_runner(name: str, path: Path, threads: int) -> Runner:
    import cv2

    cv2.setNumThreads(threads)
    net = cv2.dnn.readNetFromONNX(str(path))

    def predict(x: np.ndarray) -> np.ndarray:
        net.setInput(np.ascontiguousarray(x))
        return np.asarray(net.forward()).reshape(len(x), -1)

    return Runner(name, f"OpenCV {cv2.__version__} dnn", path, predict)


# ----------------------------------------------------------------------------------- measurement
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
            for call, arg in ((r.one, x[:1]), (r.predict, batch)):
                # 1-1.5x, drawn per turn: a fixed length would line the timed calls up with
                # anything periodic in a runtime (edgeclf's probes every 1-2 s)
                end = time.perf_counter() + settle_s * (1 + 0.5 * _SETTLE_RNG.random())
                while True:
                    call(arg)
                    if time.perf_counter() >= end:
                        break
        end = time.perf_counter() + turn_s
        n = 0
        while n < 2 or (time.perf_counter() < end and n < max_calls):
            frame = x[i % len(x)][None]
            i += 1
            t0 = time.perf_counter()
            r.one(frame)
            per_frame[r.name].append(time.perf_counter() - t0)
            n += 1
        t0 = time.perf_counter()
        r.predict(batch)
        per_batch[r.name].append(time.perf_counter() - t0)
    return i


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
                out.append(f"{LABELS.get(name, name)}, {cond}: calls per way of running (untimed settling included): {shares}")
        return out


# ------------------------------------------------------------------------------------ co-tenant
COTENANT_CODE = r"""
import sys, cv2
cv2.setNumThreads(1)  # one core: what a capture/decoding process beside the classifier uses
path = sys.argv[1]
print("ready", flush=True)  # imports done: from here on it only decodes
while True:
    cap = cv2.VideoCapture(path)
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        cv2.cvtColor(cv2.resize(frame, (320, 240), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
    cap.release()
"""


class CoTenant:
    """A second process that keeps one core busy decoding a video in a loop (OpenCV, one thread,
    FFmpeg told to use one thread too), paused (SIGSTOP) for idle turns and resumed for loaded ones."""

    def __init__(self, video: Path) -> None:
        env = {**os.environ, "OPENCV_FFMPEG_CAPTURE_OPTIONS": "threads;1", "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, "-c", COTENANT_CODE, str(video)], env=env, stdout=subprocess.PIPE, text=True)
        # Paused once its imports are done, so neither its start-up nor an unpaused first idle
        # turn counts as load.
        self.proc.stdout.readline()
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.loaded_s = 0.0
        self._since: float | None = None
        self.cpu0 = self.cpu_s()

    def cpu_s(self) -> float:
        """CPU seconds the co-tenant has used (utime + stime from /proc)."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return float("nan")

    def load(self) -> None:
        if self._since is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self._since = time.perf_counter()
            time.sleep(0.05)  # let it get going before the turn starts

    def idle(self) -> None:
        if self._since is not None:
            os.kill(self.proc.pid, signal.SIGSTOP)
            self.loaded_s += time.perf_counter() - self._since
            self._since = None

    def close(self) -> dict:
        """Stop it; returns how much of a core it used while it ran."""
        self.idle()
        used = self.cpu_s() - self.cpu0
        self.proc.kill()
        self.proc.wait()
        return {"loaded_s": round(self.loaded_s, 2), "cpu_s": round(used, 2),
                "core_share": round(used / self.loaded_s, 3) if self.loaded_s else None}


def cotenant_video(path: Path) -> Path:
    """A 480x480 MP4 of shapes (240 frames), long enough that decoding it is steady work."""
    from edgeclf.data.synthetic import make_shapes_video

    make_shapes_video(path, frames=240, size=480, fps=30.0, hold=8)
    return path


def accuracy(r: Runner, x: np.ndarray, y: np.ndarray, bs: int = 32) -> tuple[float, np.ndarray]:
    preds = np.argmax(in_batches(r.predict, x, bs), axis=1)
    return float(np.mean(preds == y)), preds


# ---------------------------------------------------------------------------------- peak memory
PROBE_CODE = r"""
import json, os, sys
import numpy as np
fmt, path, h, w, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
x = np.random.default_rng(0).integers(0, 256, (1, h, w, 3), dtype=np.uint8)
if fmt == "baseline":
    run = lambda: None
elif fmt.startswith("keras"):
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    import keras
    m = keras.models.load_model(path, compile=False)
    xf = x.astype(np.float32)
    run = (lambda: m.predict(xf, verbose=0)) if fmt == "keras_predict" else (lambda: m(xf, training=False))
elif fmt.startswith("onnx"):
    from edgeclf.classifier import Classifier  # as the timings: its adaptive sessions when threads is 0
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
for _ in range(20):
    run()
# VmHWM: ru_maxrss would carry over the parent's peak across fork+exec.
hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"rss_mb": int(hwm.split()[1]) / 1024}))
"""


def peak_memory_mb(fmt: str, path: Path | None, size: tuple[int, int], threads: int) -> float | None:
    """Peak resident memory of a fresh process that loads only this runtime and model and runs it."""
    args = [sys.executable, "-c", PROBE_CODE, fmt, str(path or ""), str(size[0]), str(size[1]), str(threads)]
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=300, check=True,
                             env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        return float(json.loads(out.stdout.strip().splitlines()[-1])["rss_mb"])
    except (subprocess.SubprocessError, ValueError, IndexError, KeyError) as e:
        print(f"warning: memory probe for {fmt} failed: {e}", file=sys.stderr)
        return None


# --------------------------------------------------------------------------------------- report
def pct(a: np.ndarray, q: float) -> float:
    return float(np.percentile(a, q))


def summarise(runners: list[Runner], per_frame: dict, per_batch: dict, batch_n: int, acc: dict, mem: dict,
              errors: dict) -> list[dict]:
    rows = []
    ref = np.median(per_frame[REFERENCE]) if REFERENCE in per_frame else None
    ref_fps = batch_n / np.median(per_batch[REFERENCE]) if REFERENCE in per_batch else None
    for r in runners:
        f = np.asarray(per_frame[r.name]) * 1e3
        fps = batch_n / float(np.median(per_batch[r.name]))
        rows.append({
            "format": r.name, "label": LABELS.get(r.name, r.name), "runtime": r.runtime,
            "file": r.file.name if r.file else None, "file_bytes": r.file.stat().st_size if r.file else None,
            "p50_ms": pct(f, 50), "p99_ms": pct(f, 99), "mean_ms": float(f.mean()), "frames_timed": int(len(f)),
            "vs_onnx_int8": float(np.median(f) / (ref * 1e3)) if ref else None,
            "batch_fps": fps, "batch_fps_vs_onnx_int8": fps / ref_fps if ref_fps else None,
            "accuracy": acc.get(r.name), "peak_rss_mb": mem.get(r.name), "notes": r.notes,
        })
    for name, err in errors.items():
        rows.append({"format": name, "label": LABELS.get(name, name), "error": err})
    return rows


def check_goals(rows: list[dict], loaded: list[dict] | None = None) -> list[dict]:
    by = {r["format"]: r for r in rows if "error" not in r}
    goals = tail_goals(rows, "idle")

    def goal(text: str, a: str, b: str, need: float, how: str) -> None:
        if a not in by or b not in by:
            goals.append({"goal": text, "met": None, "figure": f"not measured ({a if a not in by else b} unavailable)"})
            return
        ratio = by[b]["p50_ms"] / by[a]["p50_ms"]
        goals.append({"goal": text, "met": bool(ratio >= need), "ratio": ratio,
                      "figure": f"{by[a]['p50_ms']:.3f} ms vs {by[b]['p50_ms']:.3f} ms p50 per frame: {how.format(ratio)}"})

    goal("ONNX int8 at least as fast per frame as LiteRT int8", "onnx_int8", "litert_int8", 1.0,
         "LiteRT int8 takes {:.2f}x the ONNX int8 time")
    goal("ONNX int8 at least 100x faster per frame than Keras model.predict", "onnx_int8", "keras_predict", 100.0,
         "{:.0f}x faster")
    goal("ONNX int8 at least 2x faster per frame than ONNX fp32", "onnx_int8", "onnx_fp32", 2.0, "{:.2f}x faster")
    accs = {k: v["accuracy"] for k, v in by.items() if v.get("accuracy") is not None}
    edgeclf = {k: v for k, v in accs.items() if k in ("keras_predict", "keras_call", "onnx_fp32", "onnx_int8")}
    for text, group in (("no accuracy difference larger than 1 point between formats", accs),
                        ("(edgeclf's own: Keras, ONNX fp32, ONNX int8) within 1 point", edgeclf)):
        if not group:
            continue
        hi, lo = max(group, key=group.get), min(group, key=group.get)
        spread = round(100 * (group[hi] - group[lo]), 6)  # 80.5% - 79.5% is 1.0000000000000009 in floats
        figure = (f"{spread:.2f} points between {hi} ({100 * group[hi]:.2f}%) and {lo} ({100 * group[lo]:.2f}%)" if spread
                  else f"every one scores {100 * group[hi]:.2f}%")
        goals.append({"goal": text, "met": bool(spread <= 1.0), "spread_points": spread, "figure": figure})
    if loaded is not None:
        goals += loaded_goals(loaded)
    return goals


def tail_goals(rows: list[dict], condition: str) -> list[dict]:
    """ONNX int8's p99 within 2x its own p50 (a steady frame rate, not just a fast median)."""
    by = {r["format"]: r for r in rows if "error" not in r}
    if "onnx_int8" not in by:
        return [{"goal": f"ONNX int8 p99 <= 2x its p50 ({condition})", "met": None, "figure": "not measured"}]
    r = by["onnx_int8"]
    ratio = r["p99_ms"] / r["p50_ms"]
    return [{"goal": f"ONNX int8 p99 <= 2x its p50 ({condition})", "met": bool(ratio <= 2.0), "ratio": ratio,
             "figure": f"p99 {r['p99_ms']:.3f} ms = {ratio:.2f}x p50 {r['p50_ms']:.3f} ms"}]


def loaded_goals(rows: list[dict]) -> list[dict]:
    """Under the co-tenant: the tail, the median and batch throughput against LiteRT int8."""
    by = {r["format"]: r for r in rows if "error" not in r}
    goals = tail_goals(rows, "co-tenant")
    if "onnx_int8" in by and "litert_int8" in by:
        o, t = by["onnx_int8"], by["litert_int8"]
        goals.append({"goal": "ONNX int8 p50 <= LiteRT int8 p50 (co-tenant)", "met": bool(o["p50_ms"] <= t["p50_ms"]),
                      "ratio": t["p50_ms"] / o["p50_ms"],
                      "figure": f"{o['p50_ms']:.3f} ms vs {t['p50_ms']:.3f} ms p50 per frame"})
        goals.append({"goal": "ONNX int8 batch throughput >= LiteRT int8 (co-tenant)", "met": bool(o["batch_fps"] >= t["batch_fps"]),
                      "ratio": o["batch_fps"] / t["batch_fps"],
                      "figure": f"{o['batch_fps']:.0f} vs {t['batch_fps']:.0f} frames/s"})
    return goals


def markdown(report: dict) -> str:
    m = report["machine"]
    s = report["settings"]
    best = report["model"].get("best")
    lines = [
        "# edgeclf: the same model through every runtime", "",
        f"- Machine: {m['cpu']}, {m['cores']} cores ({m['arch']}, {m['os']}), Python {m['python']}; "
        f"measured float32 matmul peak {report['core_peak_gflops']:.0f} GFLOP/s per core",
        f"- Model: `{report['model']['run']}` ({report['model']['architecture']}, {report['model']['input_size'][0]}x"
        f"{report['model']['input_size'][1]}, {report['model']['classes']} classes, "
        f"{report['model']['macs'] / 1e6 if report['model']['macs'] else float('nan'):.1f} M MACs per frame"
        + (f"; trained to {100 * best['val_accuracy']:.1f}% val accuracy at epoch {best['epoch']}" if best else "") + ")",
        f"- Images: {report['data']['images']} labelled images ({report['data']['source']})",
        f"- Settings: {s['threads']} thread(s) for every runtime"
        + (" but edgeclf's, which adapts (its default: all cores while free, one when they are not)"
           if s.get("edgeclf_threads") == "adaptive" else "")
        + f"; {s['rounds']} interleaved rounds of ~{s['turn_s']} s turns per format"
        + (f", each after {s['settle_s']:g}-{1.5 * s['settle_s']:g} s untimed of single frames and as long of batches in its condition"
           if s.get("settle_s") else "")
        + f"; batch throughput on batches of {s['batch']}; medians reported",
        f"- Date: {report['date']}", "",
    ]
    if report.get("cotenant"):
        c = report["cotenant"]
        lines += [f"- Co-tenant: {c['what']}; it used {100 * (c['core_share'] or 0):.0f}% of a core while running "
                  f"(idle and loaded turns alternate inside every round)", "", "## Idle", ""]
    lines += results_table(report["results"])
    if report.get("results_loaded"):
        lines += ["", "## Under the co-tenant", ""] + results_table(report["results_loaded"])
    return _markdown_tail(report, lines)


def results_table(results: list[dict]) -> list[str]:
    lines = [
        "| format | runtime | file | p50 ms/frame | p99 ms/frame | x ONNX int8 time | batch frames/s | accuracy | peak RSS MiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['label']} | unavailable: {r['error']} | | | | | | | |")
            continue
        size = f"{r['file_bytes'] / 1e6:.2f} MB" if r["file_bytes"] else ""
        acc = f"{100 * r['accuracy']:.2f}%" if r["accuracy"] is not None else "n/a"
        mem = f"{r['peak_rss_mb']:.0f}" if r["peak_rss_mb"] else "n/a"
        vs = f"{r['vs_onnx_int8']:.2f}" if r["vs_onnx_int8"] else "n/a"
        lines.append(f"| {r['label']} | {r['runtime']} | {size} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {vs} | "
                     f"{r['batch_fps']:.0f} | {acc} | {mem} |")
    return lines


def _markdown_tail(report: dict, lines: list[str]) -> str:
    base = report.get("baseline_rss_mb")
    lines += ["", f"Peak RSS: a fresh process that imports only that runtime, loads the model and runs 20 frames "
              f"(Python + numpy alone: {base:.0f} MiB)." if base else "", "",
              "x ONNX int8 time: median per-frame time divided by ONNX int8's (above 1 = slower than ONNX int8).", "",
              "## Goals", ""]
    for g in report["goals"]:
        mark = {True: "MET", False: "MISSED", None: "NOT MEASURED"}[g["met"]]
        lines.append(f"- **{mark}**: {g['goal']}: {g['figure']}")
    notes = [f"- {r['label']}: {n}" for r in report["results"] for n in r.get("notes", [])]
    if notes or report.get("notes"):
        lines += ["", "## Notes", "", *notes, *[f"- {n}" for n in report.get("notes", [])]]
    lines += ["", f"Reproduce: `{report['command']}`", ""]
    return "\n".join(lines)


def chart(report: dict) -> np.ndarray:
    rows = [r for r in report["results"] if "error" not in r]
    labels = [r["label"] for r in rows]
    sub = f"{report['machine']['cpu']}, {report['settings']['threads']} thread(s); {report['model']['architecture']} " \
          f"{report['model']['input_size'][0]}px"
    return cvplot.stack([
        cvplot.bar_chart("Latency per frame (batch 1), lower is better", labels,
                         {"p50": [r["p50_ms"] for r in rows], "p99": [r["p99_ms"] for r in rows]}, "ms", sub, log=True),
        cvplot.bar_chart(f"Throughput, batches of {report['settings']['batch']}, higher is better", labels,
                         {"frames/s": [r["batch_fps"] for r in rows]}, "frames per second", log=True),
        cvplot.bar_chart("Accuracy on the same images", labels,
                         {"accuracy %": [100 * r["accuracy"] if r["accuracy"] is not None else None for r in rows]}, "%"),
        cvplot.bar_chart("Peak memory of a process running only this format", labels,
                         {"MiB": [r["peak_rss_mb"] for r in rows]}, "MiB"),
    ])


# ------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="Compare runtimes on the same model and images (see benchmarks/README.md).")
    ap.add_argument("--run", type=Path, required=True, help="run folder written by edgeclf train (model.keras, run.json)")
    ap.add_argument("--onnx-dir", type=Path, help="folder with model.onnx and model.int8.onnx [default: RUN/export]")
    ap.add_argument("--data", type=Path, help="labelled images, one sub-folder per class [default: the run's validation split]")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="results folder")
    ap.add_argument("--name", default="compare", help="base name of the result files [compare]")
    ap.add_argument("--threads", type=int, help="threads for every runtime [all cores; edgeclf: its own default, "
                    "which adapts between all cores and one]")
    ap.add_argument("--rounds", type=int, default=20, help="interleaved rounds")
    ap.add_argument("--turn", type=float, default=0.25, help="seconds of single-frame calls per format per round")
    ap.add_argument("--max-calls", type=int, default=200, help="most single-frame calls per turn")
    ap.add_argument("--batch", type=int, default=32, help="batch size for the throughput figure")
    ap.add_argument("--calib", type=int, default=100, help="training images used to calibrate LiteRT int8")
    ap.add_argument("--skip", default="", help="comma-separated formats to leave out, e.g. opencv_int8")
    ap.add_argument("--no-memory", action="store_true", help="skip the per-format memory probes")
    ap.add_argument("--cotenant", action="store_true",
                    help="also time every format while a second process keeps one core busy decoding a video")
    ap.add_argument("--settle", type=float, help="untimed seconds of single frames, then of batches, before "
                    "every turn [2 with --cotenant, else 0]: a runtime that adapts to the load is timed "
                    "in the condition, not in its change")
    ap.add_argument("--cotenant-video", type=Path, help="video the co-tenant decodes in a loop [a generated 480x480 MP4]")
    args = ap.parse_args(argv)
    for name in ("threads", "rounds", "max_calls", "batch"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be 1 or more")
    return args


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    settle = args.settle if args.settle is not None else (2.0 if args.cotenant else 0.0)
    threads = args.threads or sysinfo.cpu_cores()  # every other runtime's; edgeclf's own default unless given
    run = load_run(args.run)
    onnx_dir = args.onnx_dir or args.run / "export"
    onnx_fp32, onnx_int8 = onnx_dir / "model.onnx", onnx_dir / "model.int8.onnx"
    for p in (onnx_fp32, onnx_int8):
        if not p.is_file():
            raise EdgeclfError(f"{p}: missing (run 'edgeclf export {args.run}' first, or pass --onnx-dir)")
    size = tuple(run["input_size"])
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    log("loading images ...")
    x, y, data_desc = load_images(run, args.data)
    if len(x) == 0:
        raise EdgeclfError("no readable labelled images")
    rng = np.random.default_rng(0)
    batch = x[rng.integers(0, len(x), args.batch)]

    runners: list[Runner] = []
    errors: dict[str, str] = {}
    notes: list[str] = []

    def add(name: str, make: Callable[[], Runner | list[Runner]]) -> None:
        if name in skip:
            return
        try:
            made = make()
            runners.extend(made if isinstance(made, list) else [made])
        except Exception as e:  # noqa: BLE001 - a runtime that cannot run the model is a result, not a crash
            errors[name] = f"{type(e).__name__}: {first_line(e, 200)}"
            log(f"warning: {name}: {errors[name]}")

    log("loading Keras model ...")
    keras_list, keras_model = keras_runners(args.run, threads)
    runners.extend(r for r in keras_list if r.name not in skip)
    add("onnx_fp32", lambda: onnx_runner("onnx_fp32", onnx_fp32, args.threads))
    add("onnx_int8", lambda: onnx_runner("onnx_int8", onnx_int8, args.threads))
    tmp = Path(tempfile.mkdtemp(prefix="edgeclf-compare-"))
    log("converting to LiteRT ...")
    calib, note = litert_calibration(run, x, args.calib, rng)
    notes.append(note)
    tfl_fp32 = tfl_int8 = None
    try:
        tfl_fp32, tfl_int8 = convert_litert(keras_model, calib, tmp)
    except Exception as e:  # noqa: BLE001
        errors["litert_fp32"] = errors["litert_int8"] = f"conversion failed: {first_line(e, 200)}"
    if tfl_fp32:
        add("litert_fp32", lambda: litert_runner("litert_fp32", tfl_fp32, threads))
        add("litert_int8", lambda: litert_runner("litert_int8", tfl_int8, threads))
    add("opencv_fp32", lambda: opencv_runner("opencv_fp32", onnx_fp32, threads))
    add("opencv_int8", lambda: opencv_runner("opencv_int8", onnx_int8, threads))

    log("accuracy ...")
    acc: dict[str, float] = {}
    for r in list(runners):
        try:
            r.predict(batch[:1])  # warm-up, and a check that it runs at all
            acc[r.name], _ = accuracy(r, x, y, bs=args.batch)
        except Exception as e:  # noqa: BLE001
            errors[r.name] = f"{type(e).__name__}: {first_line(e, 200)}"
            log(f"warning: {r.name} cannot run the model: {errors[r.name]}")
            runners.remove(r)

    log(f"timing {len(runners)} formats, {args.rounds} interleaved rounds ...")
    for r in runners:  # warm-up: first calls allocate, JIT, plan
        for _ in range(3):
            r.one(x[:1])
        r.predict(batch)
    cotenant = cotenant_info = None
    conditions = None
    if args.cotenant:
        video = args.cotenant_video or cotenant_video(tmp / "cotenant.mp4")
        cotenant = CoTenant(video)
        conditions = {"idle": cotenant.idle, "loaded": cotenant.load}
    arms = ArmLog(runners)
    conditions = {c: (lambda c=c, f=f: (arms.enter(c), f())) for c, f in (conditions or {"idle": lambda: None}).items()}
    try:
        timings = interleaved_timings(runners, x, batch, args.rounds, args.turn, args.max_calls,
                                      lambda m: log(f"  {m}"), conditions, settle)
        arms.enter(None)
        notes.extend(arms.notes())
    finally:
        if cotenant is not None:
            cotenant_info = {"what": f"OpenCV decoding {video.name} in a loop, 1 thread, + resize and colour conversion",
                             **cotenant.close()}
    per_frame, per_batch = timings["idle"]

    mem: dict[str, float | None] = {}
    baseline = None
    if not args.no_memory:
        log("peak memory, one process per format ...")
        baseline = peak_memory_mb("baseline", None, size, threads)
        for r in runners:
            mem[r.name] = peak_memory_mb(r.name, r.file, size, (args.threads or 0) if r.name.startswith("onnx") else threads)

    rows = summarise(runners, per_frame, per_batch, args.batch, acc, mem, errors)
    loaded_rows = summarise(runners, *timings["loaded"], args.batch, acc, mem, errors) if "loaded" in timings else None
    interp = litert_interpreter_class()[1] if tfl_fp32 else None
    if interp:
        notes.append(f"LiteRT interpreter: {interp} (default op resolver, XNNPACK on CPU)")
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python benchmarks/compare.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": sysinfo.describe(),
        "core_peak_gflops": peak.core_peak_gflops(),
        "model": {"run": str(args.run), "architecture": run.get("architecture"), "input_size": list(size),
                  "classes": len(run["class_names"]), "macs": run.get("macs"), "onnx_dir": str(onnx_dir),
                  "best": run.get("best")},
        "data": {"source": data_desc, "images": int(len(x))},
        "settings": {"threads": threads, "edgeclf_threads": args.threads or "adaptive", "rounds": args.rounds, "turn_s": args.turn,
                     "settle_s": settle, "batch": args.batch,
                     "max_calls": args.max_calls},
        "results": rows,
        "results_loaded": loaded_rows,
        "adaptive_arm_calls": arms.by,
        "cotenant": cotenant_info,
        "baseline_rss_mb": baseline,
        "goals": check_goals(rows, loaded_rows),
        "notes": notes,
        "this_process_peak_rss_mb": sysinfo.peak_rss_mb(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / f"{args.name}.json", report)
    write_text(args.out / f"{args.name}.md", markdown(report))
    cvplot.save_png(args.out / f"{args.name}.png", chart(report))
    shutil.rmtree(tmp, ignore_errors=True)
    print(markdown(report))
    log(f"wrote {args.out / args.name}.md, .json, .png")
    return report


if __name__ == "__main__":
    try:
        main()
    except EdgeclfError as e:
        print(f"compare.py: error: {e}", file=sys.stderr)
        sys.exit(2)
