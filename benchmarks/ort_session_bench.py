"""Which onnxruntime session settings give the int8 model a low median AND a short tail, idle
and next to a busy co-tenant? Evidence for the settings ``edgeclf.classifier`` uses.

    python benchmarks/ort_session_bench.py MODEL.int8.onnx [--rounds 12] [--turn 0.3] [--tflite MODEL.int8.tflite]

Every variant is a real ``onnxruntime.InferenceSession`` on the same model; batch-1 calls on the
same frames, variants taking turns inside every round (order reversed on odd rounds), and each
round timed twice: with the co-tenant of ``compare.py`` paused (idle) and running (one core
decoding a video). Reports p50, p99, p99/p50 and batch-32 frames/s per variant and condition.
Writes benchmarks/results/ort_session.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

import numpy as np
import onnxruntime as ort

from compare import CoTenant, Runner, cotenant_video, interleaved_timings, litert_runner
from edgeclf import sysinfo
from edgeclf.atomic import write_json, write_text
from edgeclf.classifier import Classifier
from edgeclf.session import open_session


def session(path: Path, threads: int, config: dict[str, str]) -> ort.InferenceSession:
    """edgeclf's session with exactly ``config`` (spin=True: no spinning entry of edgeclf's own)."""
    return open_session(path, threads, spin=True, config=config)


def variant_configs(cores: int) -> dict[str, tuple[int, dict[str, str]]]:
    """label -> (intra-op threads, session config entries)."""
    n = cores
    return {
        f"{n} threads, spinning (onnxruntime default)": (n, {}),
        f"{n} threads, no spinning": (n, {"session.intra_op.allow_spinning": "0"}),
        f"{n} threads, spinning stops after each run": (n, {"session.force_spinning_stop": "1"}),
        f"{n} threads, spin at most 100 us": (n, {"session.intra_op.spin_duration_us": "100"}),
        f"{n} threads, spin <= 100 us, stops after run": (n, {"session.intra_op.spin_duration_us": "100",
                                                             "session.force_spinning_stop": "1"}),
        f"{n} threads, dynamic_block_base 4": (n, {"session.dynamic_block_base": "4"}),
        f"{n} threads, no spinning, dynamic_block_base 4": (n, {"session.intra_op.allow_spinning": "0",
                                                                "session.dynamic_block_base": "4"}),
        f"{n} threads, no spinning, dynamic_block_base 2": (n, {"session.intra_op.allow_spinning": "0",
                                                                "session.dynamic_block_base": "2"}),
        "1 thread": (1, {}),
    }


def op_profile(path: Path, size: tuple[int, int], runs: int = 100) -> list[dict]:
    """Where one thread's time goes: onnxruntime's own profile of ``runs`` batch-1 calls, by op type
    (the optimised graph, i.e. what really runs: QLinearConv, QLinearMul, ...)."""
    with tempfile.TemporaryDirectory() as tmp:
        s = open_session(path, threads=1, spin=True, enable_profiling=True, profile_file_prefix=str(Path(tmp) / "p"))
        x = np.random.default_rng(0).integers(0, 256, (1, *size, 3), dtype=np.uint8)
        for _ in range(runs):
            s.run(None, {s.get_inputs()[0].name: x})
        events = json.loads(Path(s.end_profiling()).read_text())
    by: dict[str, float] = {}
    first: dict[str, str] = {}
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            op = e["args"].get("op_name", "?")
            by[op] = by.get(op, 0.0) + e["dur"]
            first.setdefault(op, e["name"].removesuffix("_kernel_time"))
    total = sum(by.values()) or 1.0
    return [{"op": k, "share": round(v / total, 4), "us_per_run": round(v / runs, 1), "example_node": first[k]}
            for k, v in sorted(by.items(), key=lambda kv: -kv[1])]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("--tflite", type=Path, help="the LiteRT int8 file of the same model, timed alongside")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--turn", type=float, default=0.3)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--name", default="ort_session")
    args = ap.parse_args()

    cores = sysinfo.cpu_cores()
    clf = Classifier(args.model)  # edgeclf's own session, as `edgeclf predict`/`bench` open it
    name = clf.input_name
    runners = [Runner("edgeclf Classifier (as shipped)", "", args.model, clf.predict_arrays)]
    for label, (threads, config) in variant_configs(cores).items():
        s = session(args.model, threads, config)
        runners.append(Runner(label, "", args.model, (lambda s: lambda x: s.run(None, {name: x})[0])(s)))
    if args.tflite:
        runners.append(litert_runner(f"LiteRT int8 ({cores} threads)", args.tflite, cores))

    rng = np.random.default_rng(0)
    h, w = clf.size
    frames = rng.integers(0, 256, (64, h, w, 3), dtype=np.uint8)
    batch = rng.integers(0, 256, (32, h, w, 3), dtype=np.uint8)
    for r in runners:  # warm-up
        for _ in range(10):
            r.one(frames[:1])
        r.predict(batch)

    with tempfile.TemporaryDirectory() as tmp:
        tenant = CoTenant(cotenant_video(Path(tmp) / "cotenant.mp4"))
        try:
            # compare.py's own interleaving: variants and idle/loaded conditions take turns every round
            timings = interleaved_timings(runners, frames, batch, args.rounds, args.turn, 10**6,
                                          lambda m: print(m, file=sys.stderr, flush=True),
                                          {"idle": tenant.idle, "loaded": tenant.load})
        finally:
            info = tenant.close()

    rows = []
    for c, (per, bat) in timings.items():
        for k in (r.name for r in runners):
            a = np.asarray(per[k]) * 1e3
            p50, p99 = float(np.percentile(a, 50)), float(np.percentile(a, 99))
            rows.append({"condition": c, "variant": k, "p50_ms": round(p50, 3), "p99_ms": round(p99, 3),
                         "p99_over_p50": round(p99 / p50, 2), "frames": len(a),
                         "batch32_fps": round(32 / float(np.median(bat[k])), 1)})
    prof = op_profile(args.model, clf.size)
    report = {"model": args.model.name, "op_profile_1_thread": prof, "cores": cores, "machine": sysinfo.describe(), "onnxruntime": ort.__version__,
              "rounds": args.rounds, "turn_s": args.turn, "cotenant": info, "rows": rows,
              "load_average_at_end": os.getloadavg(),
              "command": "python benchmarks/ort_session_bench.py " + " ".join(sys.argv[1:])}
    lines = [f"# onnxruntime session settings, int8 `{args.model.name}`, idle and next to a co-tenant", "",
             f"{report['machine']['cpu']}, {cores} cores usable, onnxruntime {ort.__version__}; {args.rounds} rounds x "
             f"{args.turn} s turns per variant and condition, interleaved; co-tenant used {100 * (info['core_share'] or 0):.0f}% "
             f"of a core while running; load average at the end {report['load_average_at_end'][0]:.1f}.", "",
             "| condition | variant | p50 ms | p99 ms | p99/p50 | batch-32 frames/s | frames timed |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['condition']} | {r['variant']} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['p99_over_p50']:.2f} | "
                     f"{r['batch32_fps']:.0f} | {r['frames']} |")
    lines += ["", "Where the time goes (onnxruntime profile, 1 thread, 100 batch-1 runs, by op type):", "",
              "| op | share | us per run | e.g. node |", "|---|---:|---:|---|"]
    lines += [f"| {p['op']} | {100 * p['share']:.1f}% | {p['us_per_run']:.0f} | {p['example_node']} |" for p in prof[:12]]
    lines += ["", f"Reproduce: `{report['command']}`", ""]
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / f"{args.name}.json", report)
    write_text(args.out / f"{args.name}.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
