"""``edgeclf bench``: latency, throughput and end-to-end speed of an ONNX model on this device.

Base install only (numpy, OpenCV, onnxruntime, rich): it runs on the Pi / Jetson itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import onnxruntime as ort
from rich.markup import escape

from edgeclf import __version__, sysinfo
from edgeclf.bench import peak
from edgeclf.bench.report import plot, render
from edgeclf.errors import EdgeclfError, OutputError, safe_text
from edgeclf.model import litert, metadata as md, threads as thr
from edgeclf.model.adaptive import threads_label
from edgeclf.model.classifier import Classifier
from edgeclf.model.macs import count_macs, runs_integer_kernels
from edgeclf.model.providers import GPU_PROVIDERS
from edgeclf.outfiles import check_output
from edgeclf.progress import Bars, console as make_console
from edgeclf.redact import redact_url
from edgeclf.sources.base import Source
from edgeclf.sources.open import open_source

STAGES = ("read", "preprocess", "inference", "total")


# ------------------------------------------------------------------------------------ option parsing
def parse_int_list(text: str, option: str) -> list[int]:
    """"1,4,8" -> [1, 4, 8]; anything but positive integers is a one-line user error."""
    values = []
    for part in str(text).split(","):
        part = part.strip()
        try:
            value = int(part)
        except ValueError:
            raise EdgeclfError(f"{option} {text!r}: expected positive whole numbers separated by commas, e.g. 1,2,4") from None
        if value < 1:
            raise EdgeclfError(f"{option} {text!r}: values must be 1 or more")
        if value not in values:
            values.append(value)
    return values


def check_count(value: int, option: str, minimum: int) -> int:
    if value < minimum:
        raise EdgeclfError(f"{option} {value}: must be {minimum} or more")
    return value


# ----------------------------------------------------------------------------------------- statistics
def latency_stats(ms: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/mean/std of a list of millisecond timings."""
    a = np.asarray(ms, np.float64)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(a.mean()), "std": float(a.std())}


# -------------------------------------------------------------------------------------------- sources
def open_bench_source(src: Path, limit: int) -> Source:
    """Open a video, an image folder or one image for at most ``limit`` frames, failing in one line
    before any timing when it cannot be read."""
    frames = open_source(str(src), max_frames=limit)
    if frames.total == 0:
        frames.close()
        raise EdgeclfError(f"{src}: folder has no image files")
    return frames


# ------------------------------------------------------------------------------------------ benchmark
def benchmark(
    model: str | os.PathLike,
    runs: int = 100,
    warmup: int = 10,
    batches: Sequence[int] = (1,),
    threads: Sequence[int] | None = None,
    provider: str = "auto",
    source: str | os.PathLike | None = None,
    show_progress: bool = True,
) -> dict:
    """Measure ``model`` and return the report as a JSON-ready dict (see ``edgeclf bench --help``)."""
    model, settings, src = _checked_inputs(model, runs, warmup, threads, source)
    batches = list(batches)
    machine = sysinfo.describe()
    results: list[dict] = []
    # Opened before any timing, so a source that cannot be read fails at once.
    frames = open_bench_source(src, runs) if src is not None else None
    n_frames = (frames.total or 0) if frames is not None else 0  # 0 also when a video does not say
    with frames or contextlib.nullcontext():
        clf, x, cold = _cold_start(model, provider, settings[0], max(batches))
        with Bars(quiet=not show_progress) as bars:
            step = bars.add("benchmarking", len(settings) * len(batches) * (warmup + runs) + n_frames)
            for t in settings:
                if t != settings[0]:
                    clf = Classifier(model, provider=provider, threads=t)
                results += _time_batches(clf, t, x, batches, warmup, runs, step)
            head = _headline(results, min(batches))
            stages = None
            if src is not None:
                step.describe(f"end to end: {src.name}")
                stages = _run_source(model, provider, head["threads_setting"], frames, warmup, step)
                step.describe(f"pipeline: {src.name}")
                stages["pipeline"] = _run_pipeline(model, provider, head["threads_setting"], src, runs, warmup, stages)
    report = {**_report(model, provider, clf, results, head, cold, machine, runs, warmup), **(stages or {})}
    report["rss_mb"] = sysinfo.peak_rss_mb()
    return report


def _checked_inputs(model: str | os.PathLike, runs: int, warmup: int, threads: Sequence[int] | None,
                    source: str | os.PathLike | None) -> tuple[Path, list[int | None], Path | None]:
    """The model's path, the thread settings to measure and the source's path, each checked."""
    model = Path(model)
    check_count(runs, "--runs", 1)
    check_count(warmup, "--warmup", 0)
    # None: the classifier's own default, as edgeclf predict opens it (adapts between all cores and one).
    settings: list[int | None] = [thr.check_threads(t) for t in threads] if threads else [None]
    if not model.is_file():
        raise EdgeclfError(f"{model}: model file does not exist")
    src = Path(source) if source is not None else None
    if src is not None and not src.exists():
        raise EdgeclfError(f"{redact_url(str(source))}: source does not exist")
    return model, settings, src


def _cold_start(model: Path, provider: str, threads: int | None, batch: int) -> tuple[Classifier, np.ndarray, dict]:
    """The first classifier, random input images for ``batch`` and how long the first result took."""
    # Cold start: the first session of this process, as a device sees it after boot (file cache aside).
    t0 = time.perf_counter()
    clf = Classifier(model, provider=provider, threads=threads)
    t1 = time.perf_counter()
    clf.check_batch(batch, "--batch")
    h, w = clf.size
    x = np.random.default_rng(0).integers(0, 256, (batch, h, w, 3), dtype=np.uint8)
    clf.predict_arrays(x[:1])
    return clf, x, {"session_ms": (t1 - t0) * 1e3, "first_result_ms": (time.perf_counter() - t1) * 1e3}


def _time_batches(clf: Classifier, setting: int | None, x: np.ndarray, batches: Sequence[int], warmup: int,
                  runs: int, step: Callable[[], None]) -> list[dict]:
    """One result per batch size: ``warmup`` calls, then ``runs`` timed ones on the first images of ``x``."""
    results = []
    for b in batches:
        step.describe(f"{_threads_label(setting)}, batch {b}")
        xb = np.ascontiguousarray(x[:b])
        for _ in range(warmup):
            clf.predict_arrays(xb)
            step()
        times = []
        before = clf.thread_calls()
        for _ in range(runs):
            s = time.perf_counter()
            clf.predict_arrays(xb)
            times.append(time.perf_counter() - s)
            step()
        results.append({
            **_threads_used(setting, clf, before), "batch": b,
            "latency_ms": latency_stats(np.asarray(times) * 1e3 / b),
            "batch_latency_ms": latency_stats(np.asarray(times) * 1e3),
            "throughput_fps": b * runs / float(np.sum(times)),
        })
    return results


def _headline(results: list[dict], batch: int) -> dict:
    """The best per-frame latency at the smallest batch (how fast one frame can go)."""
    return min((r for r in results if r["batch"] == batch), key=lambda r: r["latency_ms"]["p50"])


def _macs(model: Path, clf: Classifier) -> tuple[int | None, str | None]:
    """Multiply-adds per frame and where the figure comes from (None, None where unknown)."""
    if litert.is_tflite(model):  # the count is read from onnxruntime's profile of an ONNX graph
        told = clf.metadata.get("macs", "")
        return (int(told), "model metadata") if told.isascii() and told.isdigit() else (None, None)
    try:
        macs = count_macs(model, (1, *clf.size, 3), clf.input_dtype)
    except Exception:  # noqa: BLE001 - MACs are informative; a model the profiler cannot run reports n/a
        macs = None
    if macs is not None:
        return macs, "onnxruntime profile"
    if "macs" in clf.metadata:
        return int(clf.metadata["macs"]), "model metadata"
    return None, None


def _peak_precision(model: Path, clf: Classifier) -> str:
    """The arithmetic the model runs in, "int8" or "float32", to hold it against that peak."""
    # An int8 model's integer GEMM is several times faster than float32, so a float32 peak would put
    # it "above 100%". Which arithmetic runs is read from onnxruntime's own optimised graph (the
    # metadata may be missing or copied from the fp32 model by a third-party quantizer).
    if litert.is_tflite(model):
        return "int8" if clf.metadata.get(md.PRECISION) == "int8" else "float32"
    try:
        integer = runs_integer_kernels(model, (1, *clf.size, 3), clf.input_dtype)
    except Exception:  # noqa: BLE001 - informative only: fall back to what the file says
        integer = clf.metadata.get(md.PRECISION) == "int8"
    return "int8" if integer else "float32"


def _arithmetic(model: Path, clf: Classifier, results: list[dict], cores: int) -> dict:
    """Multiply-adds per frame and the speed they make (added to every result), and on the CPU the
    measured matmul peak and each result's share of it. On a GPU provider there is no CPU peak to
    hold a result against: those fields are None (and the probe is not run)."""
    macs, macs_source = _macs(model, clf)
    on_cpu = clf.providers[0] not in GPU_PROVIDERS
    precision = _peak_precision(model, clf) if on_cpu else None
    core_peak = peak.core_peak_gflops(precision=precision) if on_cpu else None
    for r in results:
        r["gflops"] = 2 * macs * r["throughput_fps"] / 1e9 if macs else None
        r["peak_gflops"] = core_peak * min(r["threads"], cores) if on_cpu else None
        r["peak_fraction"] = r["gflops"] / r["peak_gflops"] if macs and on_cpu else None
    return {"macs_per_frame": macs, "macs_source": macs_source, "core_peak_gflops": core_peak,
            "peak_precision": precision, "peak_probe": peak.PEAK_PROBES.get(precision)}


def _report(model: Path, provider: str, clf: Classifier, results: list[dict], head: dict, cold: dict,
            machine: dict, runs: int, warmup: int) -> dict:
    """The report but for the source's stages and the memory: the model, the headline, the
    arithmetic (against the measured CPU peak on the CPU) and the machine."""
    arithmetic = _arithmetic(model, clf, results, machine["cores"])
    return {
        "model": str(model),
        "model_bytes": model.stat().st_size,
        "precision": clf.metadata.get(md.PRECISION),
        "input_size": list(clf.size),
        "provider": clf.providers[0],
        "provider_requested": provider,
        "provider_note": clf.provider_note,
        "headline": {"threads": head["threads"], "adaptive": head["adaptive"], "batch": head["batch"]},
        "latency_ms": head["latency_ms"],
        "throughput_fps": head["throughput_fps"],
        "best_throughput_fps": max(r["throughput_fps"] for r in results),
        **arithmetic,
        "gflops": head["gflops"],
        "peak_gflops": head["peak_gflops"],
        "peak_fraction": head["peak_fraction"],
        "cold_start_ms": cold["session_ms"] + cold["first_result_ms"],
        "cold_start": cold,
        "runs": runs,
        "warmup": warmup,
        "results": results,
        "cpu": machine["cpu"],
        "cores": machine["cores"],
        "machine": machine,
        "onnxruntime": ort.__version__,
        "engine": litert.version() if litert.is_tflite(model) else f"onnxruntime {ort.__version__}",
        "edgeclf": __version__,
    }


def _threads_label(t: int | None) -> str:
    return "adaptive threads" if t is None else threads_label(t)


def _threads_used(setting: int | None, clf: Classifier, before: dict[str, int]) -> dict:
    """A result's thread fields: the count that ran most of its calls (the only one when fixed; None
    on a GPU unless set), whether the classifier adapted, and its calls per thread count since ``before``."""
    calls = {k: v - before.get(k, 0) for k, v in clf.thread_calls().items() if v > before.get(k, 0)}
    if not calls:
        # On a GPU the CPU's default thread count is no figure of the run: None unless --threads set it.
        threads = clf.threads if clf.providers[0] not in GPU_PROVIDERS or setting is not None else None
        return {"threads": threads, "threads_setting": setting, "adaptive": False}
    way = max(calls, key=calls.get)
    return {"threads": clf.cores_of(way), "threads_setting": setting, "adaptive": True, "ran_as": way, "thread_calls": calls}


def _run_pipeline(model: Path, provider: str, threads: int | None, src: Path, limit: int, warmup: int,
                  stages: dict) -> dict:
    """``edgeclf predict``'s own pipeline on the source (a reader thread decoding and resizing
    ahead, inference in this thread, the stages overlapping), against its slowest stage alone.
    Frames per second are counted after the first ``warmup`` results (at most a fifth of the run),
    as the stages are timed after their warm-up: the reader's start and the classifier settling
    on its threads moved short runs by 2x."""
    from edgeclf.predict.loop import classify  # the device's real loop, not a copy of it

    clf = Classifier(model, provider=provider, threads=threads, spin=False)  # as edgeclf predict opens it
    clf.predict_arrays(np.zeros((1, *clf.size, 3), np.uint8))
    with open_bench_source(src, limit + warmup) as frames:
        before = clf.thread_calls()
        skip = min(warmup, (frames.total or limit + warmup) // 5)
        n, calls, t0 = 0, 0.0, time.perf_counter()
        for res in classify(clf, frames, keep_images=False):
            n += 1
            calls += 1 / res.batch
            if n == skip:
                t0 = time.perf_counter()
        seconds = time.perf_counter() - t0
    st = stages["stages_ms"]
    stage_fps = {"read+preprocess": 1e3 / (st["read"]["mean"] + st["preprocess"]["mean"]),
                 "inference": 1e3 / st["inference"]["mean"]}
    slowest = min(stage_fps, key=stage_fps.get)
    fps = (n - skip) / seconds
    return {"fps": fps, "frames": n, "warmup_frames": skip, "frames_per_call": n / round(calls) if calls else None,
            **_threads_used(threads, clf, before), "stage_fps": stage_fps, "slowest_stage": slowest,
            "vs_slowest_stage": fps / stage_fps[slowest]}


def _run_source(model: Path, provider: str, threads: int | None, frames: Source, warmup: int, step: Callable[[], None]) -> dict:
    """The whole pipeline one frame at a time: read/decode, preprocess, inference (the session
    set up as ``edgeclf predict`` sets it up, so the stages are the pipeline's own)."""
    clf = Classifier(model, provider=provider, threads=threads, spin=False)
    h, w = clf.size
    dummy = np.zeros((1, h, w, 3), np.uint8)
    for _ in range(max(1, warmup)):
        clf.predict_arrays(dummy)

    timings: dict[str, list[float]] = {s: [] for s in STAGES}
    before = clf.thread_calls()
    reader = iter(frames)
    while True:
        t0 = time.perf_counter()
        frame = next(reader, None)  # the read/decode stage (unreadable files are skipped with a warning)
        t1 = time.perf_counter()
        if frame is None:
            break
        x = clf.preprocess(frame.image)[None]
        t2 = time.perf_counter()
        clf.predict_arrays(x)
        t3 = time.perf_counter()
        read, pre, inf = (t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3
        timings["read"].append(read)
        timings["preprocess"].append(pre)
        timings["inference"].append(inf)
        timings["total"].append(read + pre + inf)
        step()
    n = len(timings["total"])
    if n == 0:
        what = "frame could be read from the video" if frames.kind == "video" else "readable image"
        raise EdgeclfError(f"{frames.spec}: no {what}")
    skipped = [f"{s['path']}: {s['reason']}" for s in frames.skipped]
    return {
        "source": {"path": frames.spec, "frames": n, **_threads_used(threads, clf, before), "skipped": skipped},
        "stages_ms": {s: latency_stats(v) for s, v in timings.items()},
        "end_to_end_fps": n / (sum(timings["total"]) / 1e3),
    }


# ---------------------------------------------------------------------------------------------- CLI
def run_bench(
    model: Path, runs: int, warmup: int, batch: str, threads: str | None, provider: str,
    source: Path | None, json_out: bool, plot_path: Path | None, force: bool = False,
) -> dict:
    """The CLI command: validate (the plot's path too, before any timing), measure, plot, print
    (table or JSON). The results are printed even when the plot cannot be written."""
    batches = parse_int_list(batch, "--batch")
    thread_list = parse_int_list(threads, "--threads") if threads else None
    if plot_path is not None:
        if plot_path.suffix.lower() != ".png":
            raise EdgeclfError(f"{plot_path}: --plot writes a PNG file; give a name ending in .png")
        check_output(plot_path, "--plot", [model, *([source] if source is not None else [])], force)
    report = benchmark(model, runs, warmup, batches, thread_list, provider, source, show_progress=True)
    plot_error = None
    if plot_path is not None:
        try:
            plot(report, plot_path)
            report["plot"] = str(plot_path)
        except EdgeclfError as e:
            plot_error = e
        except OSError as e:  # a full disk or a folder gone since the check
            plot_error = OutputError(f"--plot {plot_path}: cannot write ({e.strerror or e}); the results above are complete")
    if json_out:
        sys.stdout.write(json.dumps(report) + "\n")
        sys.stdout.flush()
    else:
        console = make_console(highlight=True)
        render(report, console)
        if "plot" in report:
            console.print(f"plot: {escape(safe_text(plot_path))}", highlight=False)
    if plot_error is not None:
        raise plot_error
    return report
