"""Does ``edgeclf predict``'s file pipeline reach its slowest stage? Issue 14's goal: the video
pipeline at the default threads >= 90% of its slowest stage alone.

    python benchmarks/pipeline_bench.py MODEL.onnx VIDEO [--rounds 5] [--name pipeline]

Each round runs ``edgeclf bench MODEL --source VIDEO`` (the stages one after another, then
predict's own pipeline at its defaults) and, in the same round, the pipeline with each inference
call fixed at one frame (``--batch 1``): at the default threads, and at 2 and 1 fixed threads.
Every pipeline is held against that round's slowest stage alone as ``edgeclf bench`` measures it
(inference, one frame per call, at the default threads), and against inference alone at the
pipeline's own batches (8 frames per call, the video's first frames, default threads): the
stricter reference, since the default pipeline runs batches. Modes alternate in order within
rounds (reversed on odd rounds).
Writes benchmarks/results/NAME.{md,json}.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from provenance import provenance, stamp_json, stamp_markdown

from edgeclf import sysinfo
from edgeclf.bench.run import benchmark, open_bench_source
from edgeclf.model.classifier import Classifier
from edgeclf.outfiles import write_json, write_text
from edgeclf.predict.loop import AUTO_BATCH, classify

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = "default (frames waiting, up to 8 per call)"
FIXED = {"--batch 1": None, "--batch 1 --threads 2": 2, "--batch 1 --threads 1": 1}
BATCHED = AUTO_BATCH  # the default pipeline's largest call


def pipeline(model: Path, video: Path, threads: int | None, frames: int) -> dict:
    """predict's pipeline on ``video``, one frame per inference call: frames/s."""
    clf = Classifier(model, threads=threads, spin=False)  # as edgeclf predict opens it
    clf.predict_arrays(np.zeros((1, *clf.size, 3), np.uint8))
    with open_bench_source(video, frames) as src:
        t0 = time.perf_counter()
        n = sum(1 for _ in classify(clf, src, batch=1, keep_images=False))
        return {"fps": n / (time.perf_counter() - t0), "frames": n}


def inference_alone(model: Path, video: Path, batch: int, frames: int) -> dict:
    """Inference alone on ``batch`` preprocessed frames of ``video`` per call (default threads):
    frames/s over about ``frames`` frames after a warm-up."""
    clf = Classifier(model, spin=False)
    with open_bench_source(video, batch) as src:
        x = np.stack([clf.preprocess(f.image) for f in src])
    calls = max(1, frames // len(x))
    for _ in range(10):
        clf.predict_arrays(x)
    t0 = time.perf_counter()
    for _ in range(calls):
        clf.predict_arrays(x)
    return {"fps": calls * len(x) / (time.perf_counter() - t0), "batch": len(x)}


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("video", type=Path)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--frames", type=int, default=1000, help="frames per run at most")
    ap.add_argument("--name", default="pipeline")
    return ap.parse_args()


def measure_round(args: argparse.Namespace, modes: list[str], r: int) -> dict:
    """Every pipeline once (in reverse order on odd rounds), and inference alone at BATCHED frames per call."""
    row: dict = {}
    for mode in (modes if r % 2 == 0 else modes[::-1]):
        if mode == DEFAULT:
            rep = benchmark(args.model, runs=args.frames, source=args.video, show_progress=False)
            p = rep["pipeline"]
            row["stage_fps"] = p["stage_fps"]
            row["slowest_stage"] = p["slowest_stage"]
            row[mode] = {"fps": p["fps"], "frames": p["frames"], "frames_per_call": p["frames_per_call"],
                         "thread_calls": p.get("thread_calls")}
        else:
            row[mode] = pipeline(args.model, args.video, FIXED[mode], args.frames)
    row["inference_batched"] = inference_alone(args.model, args.video, BATCHED, args.frames)
    ref, ref8 = row["stage_fps"][row["slowest_stage"]], row["inference_batched"]["fps"]
    for mode in modes:
        row[mode]["vs_slowest_stage"] = row[mode]["fps"] / ref
        row[mode]["vs_inference_batched"] = row[mode]["fps"] / ref8
    print(f"round {r + 1}: slowest stage ({row['slowest_stage']}) {ref:.0f} frames/s, at {BATCHED} per call {ref8:.0f}; "
          + "; ".join(f"{m}: {row[m]['fps']:.0f} ({100 * row[m]['vs_slowest_stage']:.0f}%, "
                      f"{100 * row[m]['vs_inference_batched']:.0f}%)" for m in modes), flush=True)
    return row


def summarise(rounds: list[dict], modes: list[str]) -> dict:
    """Per pipeline: median frames/s, and the median and range of its share of each reference."""
    def med_range(m: str, key: str) -> tuple[float, list[float]]:
        v = [x[m][key] for x in rounds]
        return statistics.median(v), [min(v), max(v)]

    summary = {}
    for m in modes:
        (a, ar), (b, br) = med_range(m, "vs_slowest_stage"), med_range(m, "vs_inference_batched")
        summary[m] = {"fps_median": statistics.median(x[m]["fps"] for x in rounds), "vs_slowest_median": a,
                      "vs_slowest_range": ar, "vs_inference_batched_median": b, "vs_inference_batched_range": br}
    summary[DEFAULT]["frames_per_call_median"] = statistics.median(x[DEFAULT]["frames_per_call"] for x in rounds)
    return summary


def to_markdown(args: argparse.Namespace, rounds: list[dict], summary: dict, modes: list[str], machine: dict) -> str:
    ref = [x["stage_fps"][x["slowest_stage"]] for x in rounds]
    ref8 = [x["inference_batched"]["fps"] for x in rounds]
    lines = [f"# edgeclf predict's file pipeline vs its slowest stage ({args.model.name}, {args.video.name})", "",
             f"{args.rounds} rounds on {machine['cpu']}, {machine['cores']} cores. Slowest stage alone, as `edgeclf bench` "
             f"measures it (inference, one frame per call, default threads): {min(ref):.0f}-{max(ref):.0f} frames/s. "
             f"Inference alone at {BATCHED} frames per call: {min(ref8):.0f}-{max(ref8):.0f} frames/s.", "",
             f"| pipeline | frames/s (median) | vs inference, 1 per call: median (range) | vs inference, {BATCHED} per call: median (range) |",
             "|---|---:|---:|---:|"]
    pct = lambda v: f"{100 * v:.0f}%"  # noqa: E731
    for m in modes:
        s = summary[m]
        label = m + (f", {s['frames_per_call_median']:.1f} frames per call" if m == DEFAULT else "")
        lines.append(f"| {label} | {s['fps_median']:.0f} | {pct(s['vs_slowest_median'])} ({pct(s['vs_slowest_range'][0])}-"
                     f"{pct(s['vs_slowest_range'][1])}) | {pct(s['vs_inference_batched_median'])} "
                     f"({pct(s['vs_inference_batched_range'][0])}-{pct(s['vs_inference_batched_range'][1])}) |")
    return "\n".join(lines) + "\n"


def main() -> None:
    args = parse_args()
    modes = [DEFAULT, *FIXED]
    rounds = [measure_round(args, modes, r) for r in range(args.rounds)]
    summary = summarise(rounds, modes)
    machine = sysinfo.describe()
    out = ROOT / "benchmarks" / "results" / args.name
    prov = provenance()
    write_json(out.with_suffix(".json"), stamp_json({
        "model": args.model.name, "video": args.video.name, "rounds": rounds, "summary": summary,
        "machine": {"cpu": machine["cpu"], "cores": machine["cores"]},
        "command": f"python benchmarks/pipeline_bench.py {args.model.name} {args.video.name} --rounds {args.rounds}",
    }, prov))
    md = to_markdown(args, rounds, summary, modes, machine)
    write_text(out.with_suffix(".md"), stamp_markdown(md, prov))
    print(md, end="")


if __name__ == "__main__":
    main()
