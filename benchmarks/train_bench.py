"""Train the default network (pretrained EfficientNet-Lite0) at several input sizes on the same
photos, export each to fp32 and verified int8 ONNX, and pick the default input size.

    python benchmarks/train_bench.py --data ../shared/data/cats_dogs/train
    python benchmarks/train_bench.py --sizes 160 --models edgenet,seed   # also the from-scratch ones

For every size: best validation accuracy (Keras), fp32 and int8 ONNX accuracy on the same 200
validation photos (the export's guard figures), MACs per frame, ONNX int8 latency per frame
(batch 1, 2 threads, median of interleaved rounds) and training wall time. The default size is
the smallest within half a point of the best accuracy whose MACs stay <= 250 M per frame.
Writes benchmarks/results/train.md and train.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]

from provenance import provenance, stamp_json, stamp_markdown

from edgeclf.model.classifier import Classifier
from edgeclf.outfiles import write_json, write_text

RESULTS = ROOT / "benchmarks" / "results"
MAX_MACS = 250e6
WITHIN = 0.005


def int8_latency_ms(models: dict[str, Path], threads: int, rounds: int = 15, runs: int = 50) -> dict[str, float]:
    """Median per-frame latency of each model, rounds interleaved so machine load hits all alike."""
    clfs = {k: Classifier(p, threads=threads, spin=True) for k, p in models.items()}
    frames = {k: np.random.default_rng(0).integers(0, 255, (1, *c.size, 3), dtype=np.uint8) for k, c in clfs.items()}
    samples: dict[str, list[float]] = {k: [] for k in clfs}
    for k, c in clfs.items():
        for _ in range(20):
            c.predict_arrays(frames[k])
    for _ in range(rounds):
        for k, c in clfs.items():
            t = time.perf_counter()
            for _ in range(runs):
                c.predict_arrays(frames[k])
            samples[k].append((time.perf_counter() - t) / runs * 1000)
    return {k: float(np.median(v)) for k, v in samples.items()}


def flip_tta_accuracy(out: Path, run: dict) -> float:
    """Validation accuracy of the best Keras model when each photo's probabilities are averaged
    with its mirror image's (test-time augmentation, at twice the inference cost)."""
    import keras

    from edgeclf.data.labelled import load_files
    from edgeclf.image import resize_of

    paths = [Path(p) for p in run["splits"]["val"]]
    x, ok, _ = load_files(paths, tuple(run["input_size"]), resize=resize_of(run.get("preprocessing")))
    y = np.array([run["class_names"].index(paths[i].parent.name) for i in ok])
    model = keras.models.load_model(out / "model.keras", compile=False)
    x = x.astype(np.float32)
    probs = model.predict(x, batch_size=64, verbose=0) + model.predict(x[:, :, ::-1], batch_size=64, verbose=0)
    return float((probs.argmax(1) == y).mean())


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "cats_dogs" / "train")
    ap.add_argument("--work", type=Path, default=Path("/tmp/edgeclf-train-bench"))
    ap.add_argument("--sizes", default="128,160,192,224", help="input sizes for the default network")
    ap.add_argument("--models", default="", help="other architectures to train at their default size, e.g. edgenet,seed")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--reuse", action="store_true", help="reuse finished runs and exports in --work (delete a run's export/ to export it again)")
    return ap.parse_args()


def train_and_export(name: str, size: int | None, args: argparse.Namespace) -> dict:
    """One architecture at one size, trained and exported to int8 (or reused with --reuse): its row."""
    from edgeclf.export.api import ExportCheckError, export_model
    from edgeclf.train.trainer import TrainConfig, train

    out = args.work / f"{name}-{size or 'default'}"
    # --reuse: a finished run (run.json) is not trained again, an export (export.json) not redone.
    if args.reuse and (out / "run.json").is_file():
        run = json.loads((out / "run.json").read_text())
    else:
        # no refit: the columns below score the model on the validation split, which a refit trains on
        run = train(TrainConfig(data_dir=args.data, out=out, model=name, img_size=size, seed=args.seed, force=True, quiet=True,
                                refit=False))
    if args.reuse and (out / "export" / "export.json").is_file():
        report = json.loads((out / "export" / "export.json").read_text())
    else:
        try:
            report = export_model(out, int8=True, show_progress=False)
        except ExportCheckError:  # rejected by the int8 guard: export.json still says how far off
            report = json.loads((out / "export" / "export.json").read_text())
    q = report["int8"]
    return {
        "model": name, "size": run["input_size"][0], "val_accuracy": run["best"]["val_accuracy"],
        "best_epoch": run["best"]["epoch"], "epochs": run["epochs_run"], "train_s": round(run["train_seconds"], 1),
        "flip_tta_accuracy": flip_tta_accuracy(out, run), "macs_m": round(run["macs"] / 1e6, 1), "params": run["params"],
        "fp32_onnx_accuracy": q["accuracy_fp32"], "int8_accuracy": q["accuracy_int8"], "int8_drop_pt": round(q["drop"] * 100, 2),
        "calibration": q["method"], "weights_bits": 7 if q["reduce_range"] else 8, "int8_accepted": q["accepted"],
        "int8_cpus": q["made_for"]["cpus"], "n_val": run["n_val"], "run": out.name,
    }


def choose_size(table: list[dict]) -> int | None:
    """The default input size by rule: the smallest within WITHIN of the best accuracy, at most MAX_MACS."""
    if not table:
        return None
    best = max(r["val_accuracy"] for r in table)
    budget = [r for r in table if r["macs_m"] * 1e6 <= MAX_MACS]
    fits = [r for r in budget if r["val_accuracy"] >= best - WITHIN - 1e-9]
    # The MAC budget wins over accuracy: without a size near the best within it, the most
    # accurate size that fits (the smallest on a tie).
    fits = fits or [r for r in budget if r["val_accuracy"] == max(b["val_accuracy"] for b in budget)]
    return min(fits, key=lambda r: r["size"])["size"] if fits else None


def to_markdown(args: argparse.Namespace, rows: list[dict], chosen: int | None, machine: str) -> str:
    lines = ["# Training benchmark\n",
             f"Data: the 1,000 shared photos (validation split 20%, seed {args.seed}; 800 train / 200 val). Machine: {machine}.",
             f"Reproduce: `python benchmarks/train_bench.py --data ../shared/data/cats_dogs/train --sizes {args.sizes}"
             + (f" --models {args.models}`" if args.models else "`") + "\n",
             "| model | input | val acc (Keras) | ONNX fp32 | ONNX int8 | int8 drop (weights) | with flip TTA | MACs/frame | int8 ms/frame | best epoch / run | train time |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['size']} | {r['val_accuracy']:.1%} | {r['fp32_onnx_accuracy']:.1%} | {r['int8_accuracy']:.1%} | "
                     f"{r['int8_drop_pt']:+.1f} pt ({r['weights_bits']}-bit{'' if r['int8_accepted'] else ', rejected'}) | {r['flip_tta_accuracy']:.1%} | {r['macs_m']} M | {r['int8_ms']:.2f} | {r['best_epoch']} / {r['epochs']} | "
                     f"{r['train_s'] / 60:.1f} min |")
    lines += ["", "Accuracies on the same 200 validation photos. Flip TTA: the Keras model's probabilities averaged with "
              "its mirror image's (twice the inference cost; not used by edgeclf predict).",
              f"int8 latency: batch 1, {args.threads} threads, median of 15 interleaved rounds of 50 frames.",
              f"Default input size rule: the smallest size within {WITHIN * 100:.1f} pt of the best validation accuracy with "
              f"at most {MAX_MACS / 1e6:.0f} M MACs per frame: **{chosen}**."]
    return "\n".join(lines) + "\n"


def main() -> None:
    args = parse_args()
    from edgeclf.train.models import DEFAULT_ARCHITECTURE

    jobs = [(DEFAULT_ARCHITECTURE, int(s)) for s in args.sizes.split(",") if s]
    jobs += [(m, None) for m in args.models.split(",") if m]
    rows = []
    for name, size in jobs:
        rows.append(train_and_export(name, size, args))
        print(rows[-1], flush=True)
    lat = int8_latency_ms({f"{r['model']}-{r['size']}": args.work / r["run"] / "export" / "model.int8.onnx" for r in rows}, args.threads)
    for r in rows:
        r["int8_ms"] = round(lat[f"{r['model']}-{r['size']}"], 3)
    chosen = choose_size([r for r in rows if r["model"] == DEFAULT_ARCHITECTURE])
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    prov = provenance()
    write_json(RESULTS / "train.json", stamp_json({"machine": machine, "data": "../shared/data/cats_dogs/train",
                                                   "seed": args.seed, "chosen_size": chosen, "rows": rows}, prov))
    md = to_markdown(args, rows, chosen, machine)
    write_text(RESULTS / "train.md", stamp_markdown(md, prov))
    print(md, end="")


if __name__ == "__main__":
    main()
