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

Its parts: ``compare_runners`` (the runtimes), ``compare_timing`` (interleaved turns, adaptive
arms, peak memory), ``cotenant`` and ``compare_report`` (rows, goals, markdown, chart); this
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
from compare_report import chart, check_goals, markdown, summarise
from compare_runners import (
    Formats,
    Runner,
    convert_litert,
    keras_runners,
    litert_calibration,
    litert_interpreter_class,
    litert_runner,
    load_images,
    load_run,
    onnx_runner,
    opencv_runner,
)
from compare_timing import ArmLog, interleaved_timings, peak_memory_mb
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


def onnx_files(args: argparse.Namespace) -> tuple[Path, Path, Path]:
    """The ONNX folder and its fp32 and int8 models, which must be there."""
    onnx_dir = args.onnx_dir or args.run / "export"
    onnx_fp32, onnx_int8 = onnx_dir / "model.onnx", onnx_dir / "model.int8.onnx"
    for p in (onnx_fp32, onnx_int8):
        if not p.is_file():
            raise EdgeclfError(f"{p}: missing (run 'edgeclf export {args.run}' first, or pass --onnx-dir)")
    return onnx_dir, onnx_fp32, onnx_int8


def load_formats(args: argparse.Namespace, run: dict, threads: int, onnx: tuple[Path, Path], x: np.ndarray,
                 rng: np.random.Generator, tmp: Path) -> tuple[Formats, bool]:
    """Every runtime not skipped: Keras, ONNX through edgeclf, LiteRT converted into ``tmp``, OpenCV;
    and whether the LiteRT conversion worked."""
    onnx_fp32, onnx_int8 = onnx
    formats = Formats({s.strip() for s in args.skip.split(",") if s.strip()})
    log("loading Keras model ...")
    keras_list, keras_model = keras_runners(args.run, threads)
    formats.runners.extend(r for r in keras_list if r.name not in formats.skip)
    formats.add("onnx_fp32", lambda: onnx_runner("onnx_fp32", onnx_fp32, args.threads))
    formats.add("onnx_int8", lambda: onnx_runner("onnx_int8", onnx_int8, args.threads))
    log("converting to LiteRT ...")
    calib, note = litert_calibration(run, x, args.calib, rng)
    formats.notes.append(note)
    tfl_fp32 = tfl_int8 = None
    try:
        tfl_fp32, tfl_int8 = convert_litert(keras_model, calib, tmp)
    except Exception as e:  # noqa: BLE001
        formats.errors["litert_fp32"] = formats.errors["litert_int8"] = f"conversion failed: {first_line(e, 200)}"
    if tfl_fp32:
        formats.add("litert_fp32", lambda: litert_runner("litert_fp32", tfl_fp32, threads))
        formats.add("litert_int8", lambda: litert_runner("litert_int8", tfl_int8, threads))
    formats.add("opencv_fp32", lambda: opencv_runner("opencv_fp32", onnx_fp32, threads))
    formats.add("opencv_int8", lambda: opencv_runner("opencv_int8", onnx_int8, threads))
    return formats, tfl_fp32 is not None


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


def measure_memory(runners: list[Runner], args: argparse.Namespace, size: tuple[int, int],
                   threads: int) -> tuple[dict[str, float | None], float | None]:
    """Peak RSS of a fresh process per format, and of a bare Python + numpy one (nothing with --no-memory)."""
    if args.no_memory:
        return {}, None
    log("peak memory, one process per format ...")
    baseline = peak_memory_mb("baseline", None, size, threads)
    mem = {r.name: peak_memory_mb(r.name, r.file, size, (args.threads or 0) if r.name.startswith("onnx") else threads)
           for r in runners}
    return mem, baseline


def write_results(args: argparse.Namespace, report: dict) -> str:
    """``NAME.json`` (with its provenance), ``NAME.md`` (with a provenance header) and ``NAME.png``; returns the markdown."""
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / f"{args.name}.json", report)
    md = stamp_markdown(markdown(report), report["provenance"], f"{args.name}.png")
    write_text(args.out / f"{args.name}.md", md)
    cvplot.save_png(args.out / f"{args.name}.png", chart(report))
    return md


def report_head(args: argparse.Namespace, argv_shown: list[str], run: dict, onnx_dir: Path, threads: int,
                settle: float) -> dict:
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


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    settle = args.settle if args.settle is not None else (2.0 if args.cotenant else 0.0)
    threads = args.threads or sysinfo.cpu_cores()  # every other runtime's; edgeclf's own default unless given
    run = load_run(args.run)
    onnx_dir, onnx_fp32, onnx_int8 = onnx_files(args)
    size = tuple(run["input_size"])
    log("loading images ...")
    x, y, data_desc = load_images(run, args.data)
    if len(x) == 0:
        raise EdgeclfError("no readable labelled images")
    rng = np.random.default_rng(0)
    batch = x[rng.integers(0, len(x), args.batch)]
    tmp = Path(tempfile.mkdtemp(prefix="edgeclf-compare-"))
    formats, converted = load_formats(args, run, threads, (onnx_fp32, onnx_int8), x, rng, tmp)
    log("accuracy ...")
    acc = formats.score(x, y, batch, args.batch)
    timings, arms, cotenant_info = time_formats(formats.runners, args, x, batch, settle, tmp)
    notes = formats.notes + arms.notes()
    mem, baseline = measure_memory(formats.runners, args, size, threads)
    rows = summarise(formats.runners, *timings["idle"], args.batch, acc, mem, formats.errors)
    loaded_rows = summarise(formats.runners, *timings["loaded"], args.batch, acc, mem, formats.errors) \
        if "loaded" in timings else None
    if converted:
        notes.append(f"LiteRT interpreter: {litert_interpreter_class()[1]} (default op resolver, XNNPACK on CPU)")
    argv_shown = sys.argv[1:] if argv is None else argv
    report = stamp_json({
        **report_head(args, argv_shown, run, onnx_dir, threads, settle),
        "data": {"source": data_desc, "images": int(len(x))},
        "settings": {"threads": threads, "edgeclf_threads": args.threads or "adaptive", "rounds": args.rounds,
                     "turn_s": args.turn, "settle_s": settle, "batch": args.batch, "max_calls": args.max_calls},
        "results": rows,
        "results_loaded": loaded_rows,
        "adaptive_arm_calls": arms.by,
        "cotenant": cotenant_info,
        "baseline_rss_mb": baseline,
        "goals": check_goals(rows, loaded_rows),
        "notes": notes,
        "this_process_peak_rss_mb": sysinfo.peak_rss_mb(),
    }, provenance(["benchmarks/compare.py", *argv_shown]))
    md = write_results(args, report)
    shutil.rmtree(tmp, ignore_errors=True)
    print(md)
    log(f"wrote {args.out / args.name}.md, .json, .png")
    return report


if __name__ == "__main__":
    try:
        main()
    except EdgeclfError as e:
        print(f"compare.py: error: {e}", file=sys.stderr)
        sys.exit(2)
