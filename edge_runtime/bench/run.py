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
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgeclf import __version__, sysinfo
from edgeclf.bench import charts as cvplot, peak
from edgeclf.errors import EdgeclfError, OutputError, safe_text
from edgeclf.model import metadata as md
from edgeclf.model.adaptive import threads_label
from edgeclf.model.classifier import Classifier
from edgeclf.model.macs import count_macs, runs_integer_kernels
from edgeclf.model.providers import check_threads
from edgeclf.outfiles import check_output
from edgeclf.progress import Bars
from edgeclf.sources.open import Source, open_source

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
    model = Path(model)
    check_count(runs, "--runs", 1)
    check_count(warmup, "--warmup", 0)
    # None: the classifier's own default, as edgeclf predict opens it (adapts between all cores and one).
    settings: list[int | None] = [check_threads(t) for t in threads] if threads else [None]
    batches = list(batches)
    if not model.is_file():
        raise EdgeclfError(f"{model}: model file does not exist")
    src = Path(source) if source is not None else None
    if src is not None and not src.exists():
        raise EdgeclfError(f"{src}: source does not exist")

    machine = sysinfo.describe()
    results: list[dict] = []
    rng = np.random.default_rng(0)
    # Opened before any timing, so a source that cannot be read fails at once.
    frames = open_bench_source(src, runs) if src is not None else None
    n_frames = (frames.total or 0) if frames is not None else 0  # 0 also when a video does not say
    with frames or contextlib.nullcontext():
        # Cold start: the first session of this process, as a device sees it after boot (file cache aside).
        t0 = time.perf_counter()
        clf = Classifier(model, provider=provider, threads=settings[0])
        t1 = time.perf_counter()
        clf.check_batch(max(batches), "--batch")
        h, w = clf.size
        x = rng.integers(0, 256, (max(batches), h, w, 3), dtype=np.uint8)
        clf.predict_arrays(x[:1])
        cold = {"session_ms": (t1 - t0) * 1e3, "first_result_ms": (time.perf_counter() - t1) * 1e3}

        total_steps = len(settings) * len(batches) * (warmup + runs) + n_frames
        with Bars(quiet=not show_progress) as bars:
            step = bars.add("benchmarking", total_steps)
            for t in settings:
                if t != settings[0]:
                    clf = Classifier(model, provider=provider, threads=t)
                for b in batches:
                    step.describe(f"{_threads_label(t)}, batch {b}")
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
                    per_frame_ms = np.asarray(times) * 1e3 / b
                    results.append({
                        **_threads_used(t, clf, before), "batch": b,
                        "latency_ms": latency_stats(per_frame_ms),
                        "batch_latency_ms": latency_stats(np.asarray(times) * 1e3),
                        "throughput_fps": b * runs / float(np.sum(times)),
                    })

            # The headline: the best per-frame latency at the smallest batch (how fast one frame can go).
            smallest = min(batches)
            head = min((r for r in results if r["batch"] == smallest), key=lambda r: r["latency_ms"]["p50"])
            stages = None
            if src is not None:
                step.describe(f"end to end: {src.name}")
                stages = _run_source(model, provider, head["threads_setting"], frames, warmup, step)
                step.describe(f"pipeline: {src.name}")
                stages["pipeline"] = _run_pipeline(model, provider, head["threads_setting"], src, runs, stages)

    try:
        macs, macs_source = count_macs(model, (1, *clf.size, 3), clf.input_dtype), "onnxruntime profile"
    except Exception:  # noqa: BLE001 - MACs are informative; a model the profiler cannot run reports n/a
        macs = None
    if macs is None and "macs" in clf.metadata:
        macs, macs_source = int(clf.metadata["macs"]), "model metadata"
    if macs is None:
        macs_source = None
    # Held against the peak of the arithmetic it runs: an int8 model's integer GEMM is several
    # times faster than float32, so a float32 peak would put it "above 100%".
    # Which arithmetic runs is read from onnxruntime's own optimised graph (the metadata may be
    # missing or copied from the fp32 model by a third-party quantizer).
    try:
        integer = runs_integer_kernels(model, (1, *clf.size, 3), clf.input_dtype)
    except Exception:  # noqa: BLE001 - informative only: fall back to what the file says
        integer = clf.metadata.get(md.PRECISION) == "int8"
    peak_precision = "int8" if integer else "float32"
    core_peak = peak.core_peak_gflops(precision=peak_precision)
    for r in results:
        r["peak_gflops"] = core_peak * min(r["threads"], machine["cores"])
        r["gflops"] = 2 * macs * r["throughput_fps"] / 1e9 if macs else None
        r["peak_fraction"] = r["gflops"] / r["peak_gflops"] if macs else None

    report = {
        "model": str(model),
        "model_bytes": model.stat().st_size,
        "precision": clf.metadata.get(md.PRECISION),
        "input_size": list(clf.size),
        "provider": clf.session.get_providers()[0],
        "provider_requested": provider,
        "headline": {"threads": head["threads"], "adaptive": head["adaptive"], "batch": head["batch"]},
        "latency_ms": head["latency_ms"],
        "throughput_fps": head["throughput_fps"],
        "best_throughput_fps": max(r["throughput_fps"] for r in results),
        "macs_per_frame": macs,
        "macs_source": macs_source,
        "gflops": head["gflops"],
        "peak_gflops": head["peak_gflops"],
        "peak_fraction": head["peak_fraction"],
        "core_peak_gflops": core_peak,
        "peak_precision": peak_precision,
        "peak_probe": peak.PEAK_PROBES[peak_precision],
        "cold_start_ms": cold["session_ms"] + cold["first_result_ms"],
        "cold_start": cold,
        "runs": runs,
        "warmup": warmup,
        "results": results,
        "cpu": machine["cpu"],
        "cores": machine["cores"],
        "machine": machine,
        "onnxruntime": ort.__version__,
        "edgeclf": __version__,
    }
    if stages is not None:
        report.update(stages)
    report["rss_mb"] = sysinfo.peak_rss_mb()
    return report


def _threads_label(t: int | None) -> str:
    return "adaptive threads" if t is None else threads_label(t)


def _threads_used(setting: int | None, clf: Classifier, before: dict[str, int]) -> dict:
    """A result's thread fields: the count that ran most of its calls (the only one when fixed),
    whether the classifier adapted, and its calls per thread count since ``before``."""
    calls = {k: v - before.get(k, 0) for k, v in clf.thread_calls().items() if v > before.get(k, 0)}
    if not calls:
        return {"threads": clf.threads, "threads_setting": setting, "adaptive": False}
    way = max(calls, key=calls.get)
    return {"threads": clf.cores_of(way), "threads_setting": setting, "adaptive": True, "ran_as": way, "thread_calls": calls}


def _run_pipeline(model: Path, provider: str, threads: int | None, src: Path, limit: int, stages: dict) -> dict:
    """``edgeclf predict``'s own pipeline on the source (a reader thread decoding and resizing
    ahead, inference in this thread, the stages overlapping), against its slowest stage alone."""
    from edgeclf.predict.loop import classify  # the device's real loop, not a copy of it

    clf = Classifier(model, provider=provider, threads=threads, spin=False)  # as edgeclf predict opens it
    clf.predict_arrays(np.zeros((1, *clf.size, 3), np.uint8))
    with open_bench_source(src, limit) as frames:
        before = clf.thread_calls()
        t0 = time.perf_counter()
        n, calls = 0, 0.0
        for res in classify(clf, frames, keep_images=False):
            n += 1
            calls += 1 / res.batch
        seconds = time.perf_counter() - t0
    st = stages["stages_ms"]
    stage_fps = {"read+preprocess": 1e3 / (st["read"]["mean"] + st["preprocess"]["mean"]),
                 "inference": 1e3 / st["inference"]["mean"]}
    slowest = min(stage_fps, key=stage_fps.get)
    fps = n / seconds
    return {"fps": fps, "frames": n, "frames_per_call": n / round(calls) if calls else None,
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


# ------------------------------------------------------------------------------------------- output
def _f(v: float | None, fmt: str = ".3f") -> str:
    return "n/a" if v is None else format(v, fmt)


def _thr(r: dict) -> str:
    """Threads as shown: "2", or "2 (adaptive)" when the classifier chose them (most calls ran on 2)."""
    return f"{r['threads']} (adaptive)" if r.get("adaptive") else str(r["threads"])


def _ops(report: dict) -> str:
    """FLOP for float models; OP for int8 ones (integer multiply-adds are not floating point)."""
    return "OP" if report.get("peak_precision") == "int8" else "FLOP"


def render(report: dict, console: Console) -> None:
    """The readable report: one table of latency/throughput, one of stages, and the context."""
    # Paths go through rich's markup parser: escaped, so a file named "[bold]x.onnx" shows as named.
    t = Table(title=f"edgeclf bench: {escape(safe_text(Path(report['model']).name))} (latency in ms per frame)", title_justify="left")
    for col in ("thr", "batch", "p50", "p90", "p99", "mean", "std", "fps", f"G{_ops(report)}/s", f"%{report.get('peak_precision', '')} peak"):
        t.add_column(col, justify="right")
    for r in report["results"]:
        lat = r["latency_ms"]
        t.add_row(
            _thr(r), str(r["batch"]), _f(lat["p50"]), _f(lat["p90"]), _f(lat["p99"]), _f(lat["mean"]),
            _f(lat["std"]), _f(r["throughput_fps"], ".0f"), _f(r["gflops"], ".2f"),
            "n/a" if r["peak_fraction"] is None else f"{100 * r['peak_fraction']:.1f}",
        )
    console.print(t)
    if "stages_ms" in report:
        src = report["source"]
        s = Table(title="end to end, ms per frame", title_justify="left")
        for col in ("stage (ms)", "p50", "p90", "p99", "mean"):
            s.add_column(col, justify="right")
        for name, st in report["stages_ms"].items():
            s.add_row(name, _f(st["p50"]), _f(st["p90"]), _f(st["p99"]), _f(st["mean"]))
        console.print(s)
        console.print(f"end-to-end: {report['end_to_end_fps']:.1f} frames/s ({escape(safe_text(src['path']))}: {src['frames']} frames, "
                      f"batch 1, {_thr(src)} thread(s))", highlight=False)
        pipe = report["pipeline"]
        per_call = pipe.get("frames_per_call")
        console.print(f"pipeline (edgeclf predict's reader thread + inference on {_thr(pipe)} thread(s), overlapped"
                      + (f", {per_call:.1f} frames per call" if per_call else "") + f"): {pipe['fps']:.1f} frames/s = "
                      f"{100 * pipe['vs_slowest_stage']:.0f}% of its slowest stage ({pipe['slowest_stage']} alone, "
                      f"as above: {pipe['stage_fps'][pipe['slowest_stage']]:.1f} frames/s)", highlight=False)
    macs = report["macs_per_frame"]
    lines = [
        f"model: {escape(safe_text(report['model']))} ({report['model_bytes'] / 1e6:.2f} MB, {report['precision'] or 'unknown precision'}, "
        f"input {report['input_size'][0]}x{report['input_size'][1]})",
        f"MACs per frame: {'n/a' if macs is None else f'{macs / 1e6:.1f} M'}"
        + (f" ({report['macs_source']})" if macs else ""),
        f"provider: {report['provider']} (onnxruntime {report['onnxruntime']})",
        f"CPU: {report['cpu']}, {report['cores']} cores; measured {report['peak_precision']} matmul peak "
        f"{report['core_peak_gflops']:.1f} G{_ops(report)}/s per core",
        f"cold start (session creation to first result): {report['cold_start_ms']:.1f} ms",
        f"peak resident memory: {report['rss_mb']:.1f} MiB",
    ]
    if report["gflops"] is not None:
        lines.append(f"achieved: {report['gflops']:.2f} G{_ops(report)}/s at batch {report['headline']['batch']}, "
                     f"{_thr(report['headline'])} thread(s) = {100 * report['peak_fraction']:.1f}% of the measured "
                     f"{report['peak_precision']} peak ({report['peak_probe']})")
    for line in lines:
        console.print(line, highlight=False)


def plot(report: dict, path: str | os.PathLike) -> None:
    """Write the report's charts as a PNG (OpenCV drawing: no matplotlib on the device)."""
    labels = [f"{_thr(r)} thr, batch {r['batch']}" for r in report["results"]]
    sub = f"{report['cpu']} ({report['cores']} cores), {report['provider']}, onnxruntime {report['onnxruntime']}"
    charts = [
        cvplot.bar_chart(
            f"Latency per frame: {Path(report['model']).name}", labels,
            {k: [r["latency_ms"][k] for r in report["results"]] for k in ("p50", "p90", "p99")}, "ms per frame", sub,
        ),
        cvplot.bar_chart("Throughput", labels, {"frames/s": [r["throughput_fps"] for r in report["results"]]}, "frames per second"),
    ]
    if "stages_ms" in report:
        st = report["stages_ms"]
        charts.append(cvplot.bar_chart(
            f"End to end, {report['end_to_end_fps']:.1f} frames/s: {Path(report['source']['path']).name}",
            list(st), {"mean": [v["mean"] for v in st.values()], "p99": [v["p99"] for v in st.values()]}, "ms per frame",
        ))
    cvplot.save_png(path, cvplot.stack(charts))


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
        console = Console()
        render(report, console)
        if "plot" in report:
            console.print(f"plot: {escape(safe_text(plot_path))}", highlight=False)
    if plot_error is not None:
        raise plot_error
    return report
