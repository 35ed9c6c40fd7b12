"""Is edgeclf the fastest way to run this model? The same model and images through every runtime.

Measures, in one run and interleaved (A B C ... C B A ...) so machine noise hits all alike:
Keras ``model.predict`` per frame and a direct Keras call, ONNX fp32 and int8 in onnxruntime
(through edgeclf's ``Classifier``), edgeclf's own LiteRT int8 (``Classifier`` on the export's
``model.int8.tflite``), LiteRT fp32 and int8 converted from the same Keras model,
OpenCV DNN on the ONNX files, and where installed OpenVINO (fp32, NNCF int8, the int8 ONNX),
onnxruntime's OpenVINO provider and ncnn (``compare_engines``; an engine that is not installed or
cannot convert the model is a row saying why). ``--threads 1,2`` times every format at each thread
count, in the same rounds. Reports per-frame latency (p50, p99), batch throughput,
accuracy on the same labelled images, file size, peak memory and first-inference time (each
format in a fresh process of its own), with ratios against ONNX int8, and checks the goals of
issues 5 and 14 and whether edgeclf's default path is as fast as its fastest peer. With
``--cotenant`` every format is also timed while a second process keeps one core busy decoding a
video, idle and loaded turns alternating inside every round.

    python benchmarks/compare.py --run RUN_DIR [--onnx-dir DIR] [--data DIR] [--out benchmarks/results]

Its parts: ``compare_runners`` (the runtimes), ``compare_engines`` and ``engine_open`` (the other
engines), ``compare_timing`` (interleaved turns, adaptive
arms, peak memory, first inference), ``cotenant`` and ``compare_report`` (rows, goals, markdown, chart); this
module runs them in order. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]

import numpy as np
from compare_engines import ENGINES, FORMATS, add_engines, chosen_formats
from compare_report import chart, goals_by_threads, markdown, summarise
from compare_runners import (
    Formats,
    Runner,
    convert_litert,
    edgeclf_litert_runner,
    edgeclf_openvino_runner,
    keras_runners,
    litert_calibration,
    litert_interpreter_class,
    litert_runner,
    load_images,
    load_run,
    onnx_runner,
    opencv_runner,
    split_key,
)
from compare_timing import ArmLog, interleaved_timings, peak_memory_mb, probe_format
from cotenant import CoTenant, cotenant_video
from provenance import provenance, stamp_json, stamp_markdown

from edgeclf import sysinfo
from edgeclf.bench import charts as cvplot, peak
from edgeclf.errors import EdgeclfError, first_line
from edgeclf.outfiles import write_json, write_text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="Compare runtimes on the same model and images (see benchmarks/README.md).")
    ap.add_argument("--run", type=Path, required=True, help="run folder written by edgeclf train (model.keras, run.json)")
    ap.add_argument("--onnx-dir", type=Path, help="folder with model.onnx and model.int8.onnx [default: RUN/export]")
    ap.add_argument("--data", type=Path, help="labelled images, one sub-folder per class [default: the run's validation split]")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="results folder")
    ap.add_argument("--name", default="compare", help="base name of the result files [compare]")
    ap.add_argument("--threads", type=thread_counts, help="threads for every runtime, or a comma list (1,2) to time "
                    "every format at each [all cores; edgeclf: its own default, which adapts between all cores and one]")
    ap.add_argument("--rounds", type=int, default=20, help="interleaved rounds")
    ap.add_argument("--turn", type=float, default=0.25, help="seconds of single-frame calls per format per round")
    ap.add_argument("--max-calls", type=int, default=200, help="most single-frame calls per turn")
    ap.add_argument("--batch", type=int, default=32, help="batch size for the throughput figure")
    ap.add_argument("--calib", type=int, default=100, help="training images used to calibrate LiteRT int8 and OpenVINO's NNCF int8")
    ap.add_argument("--skip", default="", help="comma-separated formats to leave out, e.g. opencv_int8")
    ap.add_argument("--engines", help=f"comma-separated engines (or formats) to run [all: {','.join(ENGINES)}]")
    ap.add_argument("--ort-openvino", type=Path, default=os.environ.get("EDGECLF_ORT_OPENVINO") or None,
                    help="folder where onnxruntime-openvino is installed (pip install --no-deps --target DIR "
                    "onnxruntime-openvino); its rows run in a child process [$EDGECLF_ORT_OPENVINO]")
    ap.add_argument("--no-memory", action="store_true", help="skip the per-format memory probes")
    ap.add_argument("--cotenant", action="store_true",
                    help="also time every format while a second process keeps one core busy decoding a video")
    ap.add_argument("--settle", type=float, help="untimed seconds of single frames, then of batches, before "
                    "every turn [2 with --cotenant, else 0]: a runtime that adapts to the load is timed "
                    "in the condition, not in its change")
    ap.add_argument("--cotenant-video", type=Path, help="video the co-tenant decodes in a loop [a generated 480x480 MP4]")
    args = ap.parse_args(argv)
    for name in ("rounds", "max_calls", "batch"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be 1 or more")
    try:
        chosen_formats(args.engines, args.skip)
    except ValueError as e:
        ap.error(str(e))
    return args


def thread_counts(text: str) -> list[int]:
    """``--threads``: one count or a comma list, each 1 or more, no repeats."""
    try:
        counts = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: not a thread count or comma list of them") from None
    if not counts or min(counts) < 1 or len(set(counts)) != len(counts):
        raise argparse.ArgumentTypeError(f"{text!r}: thread counts must be 1 or more, each once")
    return counts


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def onnx_files(args: argparse.Namespace) -> tuple[Path, Path, Path]:
    """The ONNX folder and its fp32 and int8 models, which must be there."""
    onnx_dir = args.onnx_dir or args.run / "export"
    onnx_fp32, onnx_int8 = onnx_dir / "model.onnx", onnx_dir / "model.int8.onnx"
    for p in (onnx_fp32, onnx_int8):
        if not p.is_file():
            raise EdgeclfError(f"{p}: missing (run 'edgeclf export {args.run}' first, or pass --onnx-dir)")
    return onnx_dir, onnx_fp32, onnx_int8


def load_formats(args: argparse.Namespace, run: dict, settings: list[int | None], onnx: tuple[Path, Path],
                 x: np.ndarray, rng: np.random.Generator, tmp: Path) -> tuple[Formats, bool]:
    """Every runtime chosen, at every thread-count setting (None: all cores, edgeclf adaptive):
    Keras, ONNX and the export's LiteRT int8 through edgeclf, LiteRT converted into ``tmp``, OpenCV,
    then the other engines; and whether the LiteRT conversion worked."""
    onnx_fp32, onnx_int8 = onnx
    formats = Formats(chosen_formats(args.engines, args.skip))
    cores = sysinfo.cpu_cores()
    keras_model = load_keras(formats, args.run, settings, cores)
    calib: list[np.ndarray] = []

    def calibration() -> np.ndarray:  # made once, for whichever int8 path asks first
        if not calib:
            images, note = litert_calibration(run, x, args.calib, rng)
            calib.append(images)
            formats.notes.append(note)
        return calib[0]

    for t in settings:
        formats.add(key("onnx_fp32", t, settings), lambda t=t: onnx_runner(key("onnx_fp32", t, settings), onnx_fp32, t))
        formats.add(key("onnx_int8", t, settings), lambda t=t: onnx_runner(key("onnx_int8", t, settings), onnx_int8, t))
        k = key("edgeclf_litert_int8", t, settings)
        formats.add(k, lambda k=k, t=t: edgeclf_litert_runner(k, onnx_int8.parent, t or cores))
        k = key("edgeclf_openvino_int8", t, settings)
        formats.add(k, lambda k=k, t=t: edgeclf_openvino_runner(k, onnx_int8, t or cores))
    converted = add_litert(formats, keras_model, calibration, tmp, settings, cores)
    for t in settings:
        for fmt, path in (("opencv_fp32", onnx_fp32), ("opencv_int8", onnx_int8)):
            k = key(fmt, t, settings)
            formats.add(k, lambda k=k, path=path, t=t: opencv_runner(k, path, t or cores))
    add_engines(formats, settings, cores, onnx, calibration, tuple(run["input_size"]), tmp, args.ort_openvino)
    order = {t: i for i, t in enumerate(settings)}  # by thread count, then engine, as the tables list them
    formats.runners.sort(key=lambda r: (order.get(split_key(r.name)[1], 0), FORMATS.index(r.fmt)))
    return formats, converted


def key(fmt: str, t: int | None, settings: list[int | None]) -> str:
    """A runner's name: the format, and its thread count when the run times several."""
    return f"{fmt}@{t}" if len(settings) > 1 else fmt


def load_keras(formats: Formats, run_dir: Path, settings: list[int | None], cores: int):
    """The Keras model when Keras or LiteRT is chosen (else None), and its runners: at the largest
    thread count only, as TensorFlow takes one per process."""
    if not formats.wanted & {"keras_predict", "keras_call", "litert_fp32", "litert_int8"}:
        return None
    log("loading Keras model ...")
    top = max(t or cores for t in settings)
    runners, model = keras_runners(run_dir, top)
    for r in runners:
        if formats.wants(r.name):
            if len(settings) > 1:
                r.name = key(r.name, top, settings)
                r.notes.append(f"TensorFlow takes one thread count per process: timed at {top} only")
            formats.runners.append(r)
    return model


def add_litert(formats: Formats, keras_model, calibration, tmp: Path, settings: list[int | None], cores: int) -> bool:
    """LiteRT fp32 and int8 converted from the Keras model, at every setting; whether it converted."""
    wanted = [f for f in ("litert_fp32", "litert_int8") if f in formats.wanted]
    if keras_model is None or not wanted:
        return False
    log("converting to LiteRT ...")
    try:
        files = dict(zip(("litert_fp32", "litert_int8"), convert_litert(keras_model, calibration(), tmp)))
    except Exception as e:  # noqa: BLE001
        for t in settings:
            for fmt in wanted:
                formats.fail(key(fmt, t, settings), f"conversion failed: {first_line(e, 200)}")
        return False
    for t in settings:
        for fmt in wanted:
            k = key(fmt, t, settings)
            formats.add(k, lambda k=k, fmt=fmt, t=t: litert_runner(k, files[fmt], t or cores))
    return True


def time_formats(runners: list[Runner], args: argparse.Namespace, x: np.ndarray, batch: np.ndarray, settle: float,
                 tmp: Path) -> tuple[dict, ArmLog, dict | None]:
    """Interleaved timings per condition (idle, and loaded with ``--cotenant``), the adaptive arms
    that ran in each, and what the co-tenant used."""
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
    finally:
        if cotenant is not None:
            cotenant_info = {"what": f"OpenCV decoding {video.name} in a loop, 1 thread, + resize and colour conversion",
                             **cotenant.close()}
    return timings, arms, cotenant_info


def measure_memory(runners: list[Runner], args: argparse.Namespace,
                   size: tuple[int, int]) -> tuple[dict[str, float | None], dict[str, float | None], float | None]:
    """Per format, in a fresh process of its own: peak RSS and the time to its first result (the
    engine's import, the model's load, the first run); and the peak RSS of a bare Python + numpy
    process. Nothing with --no-memory."""
    if args.no_memory:
        return {}, {}, None
    log("peak memory and first inference, one process per format ...")
    baseline = peak_memory_mb("baseline", None, size, 1)
    probes = {r.name: probe_format(r.fmt, r.file, size, r.threads or 0, r.env) for r in runners}
    mem = {name: p["rss_mb"] if p else None for name, p in probes.items()}
    first = {name: p["first_ms"] if p else None for name, p in probes.items()}
    return mem, first, baseline


def write_results(args: argparse.Namespace, report: dict) -> str:
    """``NAME.json`` (with its provenance), ``NAME.md`` (with a provenance header) and ``NAME.png``; returns the markdown."""
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / f"{args.name}.json", report)
    md = stamp_markdown(markdown(report), report["provenance"], f"{args.name}.png")
    write_text(args.out / f"{args.name}.md", md)
    cvplot.save_png(args.out / f"{args.name}.png", chart(report))
    return md


def report_head(args: argparse.Namespace, argv_shown: list[str], run: dict, onnx_dir: Path) -> dict:
    """The report's first fields: when, how, on what machine, which model and settings."""
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python benchmarks/compare.py " + " ".join(argv_shown),
        "machine": sysinfo.describe(),
        "core_peak_gflops": peak.core_peak_gflops(),
        "model": {"run": str(args.run), "architecture": run.get("architecture"), "input_size": list(run["input_size"]),
                  "classes": len(run["class_names"]), "macs": run.get("macs"), "onnx_dir": str(onnx_dir),
                  "best": run.get("best")},
    }


def measure(args: argparse.Namespace, run: dict, settings: list[int | None], settle: float, tmp: Path) -> dict:
    """Every chosen format run, scored, timed and measured: the report's results, goals and notes."""
    onnx_dir, onnx_fp32, onnx_int8 = onnx_files(args)
    log("loading images ...")
    x, y, data_desc = load_images(run, args.data)
    if len(x) == 0:
        raise EdgeclfError("no readable labelled images")
    rng = np.random.default_rng(0)
    batch = x[rng.integers(0, len(x), args.batch)]
    formats, converted = load_formats(args, run, settings, (onnx_fp32, onnx_int8), x, rng, tmp)
    try:
        log("accuracy ...")
        acc = formats.score(x, y, batch, args.batch)
        timings, arms, cotenant_info = time_formats(formats.runners, args, x, batch, settle, tmp)
    finally:
        formats.close()  # child processes
    mem, first, baseline = measure_memory(formats.runners, args, tuple(run["input_size"]))
    rows, loaded_rows = (summarise(formats.runners, *timings[c], args.batch, acc, mem, formats.errors, first)
                         if c in timings else None for c in ("idle", "loaded"))
    notes = formats.notes + arms.notes()
    if converted:
        notes.append(f"LiteRT interpreter: {litert_interpreter_class()[1]} (default op resolver, XNNPACK on CPU)")
    return {"onnx_dir": onnx_dir, "data": {"source": data_desc, "images": int(len(x))}, "results": rows,
            "results_loaded": loaded_rows, "adaptive_arm_calls": arms.by, "cotenant": cotenant_info,
            "baseline_rss_mb": baseline, "goals": goals_by_threads(rows, loaded_rows, settings), "notes": notes}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    settle = args.settle if args.settle is not None else (2.0 if args.cotenant else 0.0)
    settings: list[int | None] = args.threads or [None]  # None: all cores, and edgeclf's own adaptive default
    run = load_run(args.run)
    tmp = Path(tempfile.mkdtemp(prefix="edgeclf-compare-"))
    try:
        measured = measure(args, run, settings, settle, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    argv_shown = sys.argv[1:] if argv is None else argv
    report = stamp_json({
        **report_head(args, argv_shown, run, measured.pop("onnx_dir")),
        "data": measured.pop("data"),
        "settings": {"threads": [t or sysinfo.cpu_cores() for t in settings],
                     "edgeclf_threads": args.threads or "adaptive", "engines": args.engines or "all",
                     "rounds": args.rounds, "turn_s": args.turn, "settle_s": settle, "batch": args.batch,
                     "max_calls": args.max_calls},
        **measured,
        "this_process_peak_rss_mb": sysinfo.peak_rss_mb(),
    }, provenance(["benchmarks/compare.py", *argv_shown]))
    md = write_results(args, report)
    print(md)
    log(f"wrote {args.out / args.name}.md, .json, .png")
    return report


if __name__ == "__main__":
    try:
        main()
    except EdgeclfError as e:
        print(f"compare.py: error: {e}", file=sys.stderr)
        sys.exit(2)
