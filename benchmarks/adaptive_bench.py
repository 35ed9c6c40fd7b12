"""Does each part of the adaptive thread policy pay for itself here? An ablation, side by side.

    python benchmarks/adaptive_bench.py MODEL.int8.onnx [--rounds 6] [--video clip.mp4] [--name adaptive]

Every variant is edgeclf's ``Classifier`` on the same model, its session swapped after loading:

- ``shipped``: the adaptive session as ``edgeclf predict`` opens it (all arms, FreeCores);
- ``without no-spin arm``: the same arms less the all-cores session whose workers sleep between ops;
- ``without FreeCores``: every arm, probed without reading /proc/stat;
- ``fixed N threads``: one plain session on all cores (workers spin within a run), and on 1 thread.

Per-frame calls and batch-32 calls are timed as compare.py times them (interleaved turns, idle and
beside a co-tenant process that keeps one core busy decoding video, each turn settling first),
and predict's own file pipeline (reader thread beside inference, frames waiting batched) runs
each variant on a video, idle and beside the co-tenant, in turns. Writes
benchmarks/results/NAME.{md,json}.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
from compare_runners import Runner
from compare_timing import interleaved_timings
from cotenant import CoTenant, cotenant_video
from provenance import provenance, stamp_json, stamp_markdown

from edgeclf import sysinfo
from edgeclf.bench.run import open_bench_source
from edgeclf.model import threads as thr
from edgeclf.model.adaptive import AdaptiveSession, session_plan
from edgeclf.model.classifier import Classifier
from edgeclf.model.session import open_session
from edgeclf.outfiles import write_json, write_text
from edgeclf.predict.loop import classify

ROOT = Path(__file__).resolve().parents[1]


def _adaptive(path: Path, cores: int, keep: Callable[[str], bool], free_cores=None) -> AdaptiveSession:
    """``Classifier._adaptive_session``'s arms, those ``keep`` accepts, optionally without FreeCores."""
    arms = [a for a in session_plan(cores) if keep(a[0])]
    return AdaptiveSession([open_session(path, t, spin=True, config=c) for _, t, c in arms], [t for _, t, _ in arms],
                           labels=[label for label, _, _ in arms], free_cores=free_cores,
                           yields=[c.get("session.intra_op.allow_spinning") == "0" for _, _, c in arms])


def variants(path: Path, cores: int) -> dict[str, Callable[[], Classifier]]:
    """Name -> a function that opens that variant (a Classifier as predict opens it, session swapped)."""
    def swapped(make_session: Callable[[], object]) -> Callable[[], Classifier]:
        def open_() -> Classifier:
            clf = Classifier(path, spin=False)
            clf.session = make_session()
            return clf
        return open_

    out: dict[str, Callable[[], Classifier]] = {"shipped": lambda: Classifier(path, spin=False)}
    if cores > 1:
        out["without no-spin arm"] = swapped(lambda: _adaptive(path, cores, lambda label: "no spin" not in label))
        out["without FreeCores"] = swapped(lambda: _adaptive(path, cores, lambda label: True, free_cores=lambda: None))
        out[f"fixed {cores} threads"] = swapped(lambda: open_session(path, cores, spin=True))
    out["fixed 1 thread"] = swapped(lambda: open_session(path, 1, spin=True))
    return out


def time_calls(clfs: dict[str, Classifier], tenant: CoTenant, args: argparse.Namespace) -> dict:
    """compare.py's interleaved per-frame and batch-32 timings, idle and loaded."""
    size = next(iter(clfs.values())).size
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (64, *size, 3), dtype=np.uint8)
    batch = rng.integers(0, 256, (32, *size, 3), dtype=np.uint8)
    runners = [Runner(name, "onnxruntime", args.model, clf.predict_arrays) for name, clf in clfs.items()]
    return interleaved_timings(runners, frames, batch, args.rounds, args.turn, 10**6,
                               lambda m: print(f"calls: {m}", file=sys.stderr, flush=True),
                               {"idle": tenant.idle, "loaded": tenant.load}, args.settle)


def pipeline_video(path: Path, frames: int) -> Path:
    """A 640x480-class clip of shapes, ``frames`` long: what a camera file would give the pipeline."""
    from edgeclf.data.synthetic import make_shapes_video

    make_shapes_video(path, frames=frames, size=480, fps=30.0, hold=8)
    return path


def pipeline_fps(clf: Classifier, video: Path, frames: int) -> float:
    """predict's file pipeline at its defaults (reader thread, frames waiting batched): frames/s."""
    with open_bench_source(video, frames) as src:
        t0 = time.perf_counter()
        n = sum(1 for _ in classify(clf, src, keep_images=False))
    return n / (time.perf_counter() - t0)


def time_pipelines(clfs: dict[str, Classifier], tenant: CoTenant, video: Path, args: argparse.Namespace) -> dict:
    """Every variant's pipeline once per condition per round, in turns (reversed on odd rounds)."""
    out: dict = {c: {name: [] for name in clfs} for c in ("idle", "loaded")}
    for r in range(args.rounds):
        print(f"pipeline: round {r + 1}/{args.rounds}", file=sys.stderr, flush=True)
        for cond in (("idle", "loaded") if r % 2 == 0 else ("loaded", "idle")):
            (tenant.idle if cond == "idle" else tenant.load)()
            for name in (list(clfs) if r % 2 == 0 else list(clfs)[::-1]):
                out[cond][name].append(pipeline_fps(clfs[name], video, args.frames))
    return out


def rows(calls: dict, pipes: dict) -> list[dict]:
    table = []
    for cond, (per, bat) in calls.items():
        for name in per:
            a = np.asarray(per[name]) * 1e3
            table.append({"condition": cond, "variant": name, "p50_ms": round(float(np.percentile(a, 50)), 3),
                          "p99_ms": round(float(np.percentile(a, 99)), 3),
                          "batch32_fps": round(32 / float(np.median(bat[name])), 1),
                          "pipeline_fps": round(statistics.median(pipes[cond][name]), 1)})
    return table


def to_markdown(table: list[dict], args: argparse.Namespace, machine: dict) -> str:
    lines = [f"# Adaptive thread policy, ablation ({args.model.name})", "",
             f"{machine['cpu']}, {machine['cores']} cores; {args.rounds} rounds, per-frame turns of {args.turn} s after "
             f"{args.settle} s settling; pipeline: predict's file pipeline on {args.frames} frames of a video. "
             "Loaded: beside a process that keeps one core busy decoding video.", "",
             "| condition | variant | p50 ms | p99 ms | batch-32 frames/s | pipeline frames/s |", "|---|---|---:|---:|---:|---:|"]
    for r in table:
        lines.append(f"| {r['condition']} | {r['variant']} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | "
                     f"{r['batch32_fps']:.0f} | {r['pipeline_fps']:.0f} |")
    return "\n".join(lines) + "\n"


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("--video", type=Path, help="video for the pipeline (default: a generated clip of --frames frames)")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--turn", type=float, default=1.5, help="seconds of per-frame calls per turn")
    ap.add_argument("--settle", type=float, default=1.0, help="untimed seconds in the condition before each turn")
    ap.add_argument("--frames", type=int, default=600, help="frames per pipeline run")
    ap.add_argument("--name", default="adaptive")
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    cores = thr.default_threads()
    clfs = {name: open_() for name, open_ in variants(args.model, cores).items()}
    with tempfile.TemporaryDirectory() as tmp:
        tenant = CoTenant(cotenant_video(Path(tmp) / "cotenant.mp4"))
        try:
            video = args.video or pipeline_video(Path(tmp) / "pipeline.mp4", args.frames)
            calls = time_calls(clfs, tenant, args)
            pipes = time_pipelines(clfs, tenant, video, args)
        finally:
            tenant.close()
    table, machine, prov = rows(calls, pipes), sysinfo.describe(), provenance()
    out = ROOT / "benchmarks" / "results" / args.name
    write_json(out.with_suffix(".json"), stamp_json({"machine": machine, "cores": cores, "rows": table}, prov))
    md = stamp_markdown(to_markdown(table, args, machine), prov)
    write_text(out.with_suffix(".md"), md)
    print(md)


if __name__ == "__main__":
    main()
