"""Measure issue 3's export goals on the default architecture trained on the cats/dogs photos.

    python benchmarks/export_bench.py --run RUN_DIR          # a run from `edgeclf train`
    python benchmarks/export_bench.py --epochs 30            # trains edgenet first (minutes)

Goals: int8 file <= 30% of fp32; int8 accuracy within 1 point of fp32 on the validation split;
int8 >= 2x faster than fp32 per frame on this CPU, measured side by side (interleaved rounds,
batch 1, through the edge runtime's Classifier). Writes benchmarks/results/export.{md,json}.
"""

from __future__ import annotations

import argparse
import collections
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from provenance import provenance, stamp_json, stamp_markdown

from edgeclf.model.classifier import Classifier
from edgeclf.outfiles import write_json, write_text

DATA = ROOT.parent / "shared" / "data" / "cats_dogs" / "train"


def train_default(data: Path, out: Path, epochs: int) -> Path:
    from edgeclf.train.tf_quiet import import_tensorflow_quietly

    import_tensorflow_quietly()
    from edgeclf.train.trainer import TrainConfig, train

    train(TrainConfig(data, out, model="edgenet", epochs=epochs, force=True))
    return out


def interleaved_latency(models: dict[str, Path], frame: np.ndarray, threads: int | None, rounds: int, runs: int) -> dict:
    """Per-frame latency of each model, rounds interleaved so machine load hits all alike."""
    clfs = {k: Classifier(p, threads=threads) for k, p in models.items()}
    batch = frame[None]
    for c in clfs.values():
        for _ in range(20):
            c.predict_arrays(batch)
    samples = {k: [] for k in clfs}
    for _ in range(rounds):
        for k, c in clfs.items():
            t = time.perf_counter()
            for _ in range(runs):
                c.predict_arrays(batch)
            samples[k].append((time.perf_counter() - t) / runs * 1000)
    med = {k: float(np.median(v)) for k, v in samples.items()}
    ratios = [a / b for a, b in zip(samples["fp32"], samples["int8"])]
    return {
        "threads": threads or "default",
        "median_ms": med,
        "min_ms": {k: float(np.min(v)) for k, v in samples.items()},
        "speedup_median": med["fp32"] / med["int8"],
        "speedup_per_round": {"min": float(np.min(ratios)), "median": float(np.median(ratios)), "max": float(np.max(ratios))},
        "rounds": rounds,
        "runs_per_round": runs,
    }


def optimized_ops(model: Path) -> dict[str, int]:
    """Operator counts after onnxruntime's graph optimisation (what actually runs)."""
    import onnx

    from edgeclf.model.session import open_session

    with tempfile.TemporaryDirectory() as tmp:
        optimized = Path(tmp) / "opt.onnx"
        open_session(model, optimized_model_filepath=str(optimized))
        return dict(collections.Counter(n.op_type for n in onnx.load(str(optimized)).graph.node))


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, help="an edgenet run folder from `edgeclf train` (default: train one)")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--work", type=Path, default=None, help="where to put the trained run and the exports")
    ap.add_argument("--calib-size", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    return ap.parse_args()


def time_fp32_int8(fp32: Path, int8: Path, run_json: dict, args: argparse.Namespace) -> dict:
    """Interleaved per-frame latency of both models on one validation image, on 1 thread and the default threads."""
    from edgeclf.image import read_image

    val_paths = [Path(p) for p in run_json["splits"]["val"]]
    frame = Classifier(fp32).preprocess(read_image(val_paths[0]))
    return {f"threads_{n or 'default'}": interleaved_latency({"fp32": fp32, "int8": int8}, frame, n, args.rounds, args.runs)
            for n in (1, None)}


def make_result(args: argparse.Namespace, run: Path, run_json: dict, report: dict, lat: dict, export_s: float,
                export_dir: Path) -> dict:
    """The figures, and whether issue 3's goals are met."""
    import onnxruntime

    from edgeclf.sysinfo import cpu_family

    fp32, int8 = export_dir / "model.onnx", export_dir / "model.int8.onnx"
    q = report["int8"]
    size_ratio = int8.stat().st_size / fp32.stat().st_size
    acc_drop_points = 100 * (q["accuracy_fp32"] - q["accuracy_int8"])
    speed = lat["threads_default"]["speedup_median"]
    return {
        "architecture": report["architecture"],
        "input_size": report["input_size"],
        "run": str(Path(run).resolve()),
        "run_summary": {k: run_json.get(k) for k in ("epochs_run", "best", "params", "macs", "n_train", "n_val")},
        "data": str(args.data),
        "cpu": platform.processor() or platform.machine(),
        "cpu_family": cpu_family(),
        "onnxruntime": onnxruntime.__version__,
        "export_seconds": round(export_s, 1),
        "sizes_bytes": {"fp32": fp32.stat().st_size, "int8": int8.stat().st_size},
        "size_ratio": size_ratio,
        "parity": report["parity"],
        "int8": {k: v for k, v in q.items() if k not in ("latency_ms", "latency_ratio", "speedup")},
        "latency": lat,
        "ops_after_ort_optimisation": {"fp32": optimized_ops(fp32), "int8": optimized_ops(int8)},
        "goals": {
            "size_ratio<=0.30": size_ratio <= 0.30,
            "accuracy_drop<=1pt": acc_drop_points <= 1.0,
            "speedup>=2x": speed >= 2.0,
        },
        "command": "python benchmarks/export_bench.py " + " ".join(sys.argv[1:]),
    }


def main() -> None:
    args = parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="edgeclf-export-bench-"))
    run = args.run or train_default(args.data, work / "run", args.epochs)
    from edgeclf.export.api import export_model
    from edgeclf.train.run_record import read_run_record

    t = time.time()
    # max_drop=1: the benchmark measures; it does not gate (the figures say whether the goal is met).
    report = export_model(run, work / "export", int8=True, calib_size=args.calib_size, max_drop=1.0)
    export_s = time.time() - t
    run_json = read_run_record(Path(run) / "run.json").to_dict()
    lat = time_fp32_int8(work / "export" / "model.onnx", work / "export" / "model.int8.onnx", run_json, args)
    result = make_result(args, run, run_json, report, lat, export_s, work / "export")
    args.results.mkdir(parents=True, exist_ok=True)
    prov = provenance()
    write_json(args.results / "export.json", stamp_json(result, prov))
    write_text(args.results / "export.md", stamp_markdown(to_markdown(result), prov))
    print(to_markdown(result))


def to_markdown(r: dict) -> str:
    q = r["int8"]
    ok = lambda b: "met" if b else "NOT met"  # noqa: E731
    g = r["goals"]
    methods = ", ".join(f"{m} {v['accuracy']:.2%}" for m, v in q["methods"].items())
    lines = [
        f"# Export benchmark: {r['architecture']} {r['input_size'][0]}x{r['input_size'][1]}, fp32 vs int8 ONNX",
        "",
        f"Run `{r['run']}`; CPU {r['cpu']} (VNNI: {r['vnni']}); onnxruntime {r['onnxruntime']}.",
        f"Run trained by `edgeclf train {r['data']} --out RUN --epochs {r['run_summary']['epochs_run']}` "
        f"(best Keras val accuracy {r['run_summary']['best']['val_accuracy']:.2%}; {r['run_summary']['params']:,} params, "
        f"{r['run_summary']['macs'] / 1e6:.0f} M MACs; {r['run_summary']['n_train']} train / {r['run_summary']['n_val']} val images).",
        f"Reproduce: `{r['command']}` (without `--run` the script trains the run itself).",
        "",
        "| goal | fp32 | int8 | figure | |",
        "|---|---|---|---|---|",
        f"| file size <= 30% | {r['sizes_bytes']['fp32'] / 1e6:.2f} MB | {r['sizes_bytes']['int8'] / 1e6:.2f} MB | {r['size_ratio']:.1%} | {ok(g['size_ratio<=0.30'])} |",
        f"| accuracy within 1 pt (val, n={q['n_eval']}) | {q['accuracy_fp32']:.2%} | {q['accuracy_int8']:.2%} | drop {100 * q['drop']:+.2f} pt, agreement {q['top1_agreement']:.2%} | {ok(g['accuracy_drop<=1pt'])} |",
    ]
    for key, l in r["latency"].items():
        lines.append(
            f"| >= 2x faster per frame ({l['threads']} threads) | {l['median_ms']['fp32']:.3f} ms | {l['median_ms']['int8']:.3f} ms | "
            f"{l['speedup_median']:.2f}x (per-round {l['speedup_per_round']['min']:.2f}-{l['speedup_per_round']['max']:.2f}x) | "
            f"{ok(l['speedup_median'] >= 2)} |"
        )
    lines += [
        "",
        f"Latency: batch 1 through `edgeclf.Classifier`, {l['rounds']} interleaved rounds of {l['runs_per_round']} frames, median.",
        f"Calibration: {q['method']} chosen among {methods} "
        f"(val accuracy); {q['n_calib']} training images; reduce_range {q['reduce_range']}.",
        f"Parity Keras vs ONNX fp32: n={r['parity']['n']}, top-1 {r['parity']['top1_agreement']:.2%}, max |dp| {r['parity']['max_abs_diff']:.1e}.",
        "",
        "Operators after onnxruntime graph optimisation:",
        f"- fp32: {r['ops_after_ort_optimisation']['fp32']}",
        f"- int8: {r['ops_after_ort_optimisation']['int8']}",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
