"""Train the default architecture and the tutorials' `seed` CNN on the same photos; compare.

    python benchmarks/train_bench.py --data ../shared/data/cats_dogs/train

Reports validation accuracy (best epoch), wall time and multiply-accumulates per frame for each,
and writes benchmarks/results/train.md and train.json. Goal for the default network: >= 85%
on unseen photos, trained on the 1,000 shared images in under 10 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from edge_runtime.atomic import write_json, write_text  # noqa: E402
from train.trainer import TrainConfig, train  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/cats_dogs/train"))
    ap.add_argument("--work", type=Path, default=Path("/tmp/edgeclf-train-bench"))
    ap.add_argument("--models", default="edgenet,seed")
    ap.add_argument("--epochs", default="", help="per model, e.g. edgenet=60,seed=40 (default: edgeclf train's)")
    ap.add_argument("--patience", type=int, default=TrainConfig.patience, help="early stopping patience (edgeclf train's default)")
    ap.add_argument("--seed", type=int, default=1337)
    args = ap.parse_args()
    epochs = dict(kv.split("=") for kv in args.epochs.split(",") if kv)
    rows = []
    for name in args.models.split(","):
        t0 = time.time()
        run = train(TrainConfig(data_dir=args.data, out=args.work / name, model=name, epochs=int(epochs[name]) if name in epochs else None,
                                patience=args.patience, seed=args.seed, force=True))
        rows.append({
            "model": name, "input": f"{run['input_size'][0]}x{run['input_size'][1]}",
            "val_accuracy": run["best"]["val_accuracy"], "best_epoch": run["best"]["epoch"], "epochs": run["epochs_run"],
            "wall_s": round(time.time() - t0, 1), "macs_m": round(run["macs"] / 1e6, 1), "params": run["params"],
            "n_train": run["n_train"], "n_val": run["n_val"],
        })
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    write_json(RESULTS / "train.json", {"machine": machine, "data": str(args.data.resolve()), "rows": rows})
    lines = [f"# Training benchmark\n", f"Data: `{args.data}` (validation split 20%, seed {args.seed}). Machine: {machine}.\n",
             "| model | input | val accuracy | best epoch / run | wall time | MACs/frame | params |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['input']} | {r['val_accuracy']:.1%} | {r['best_epoch']} / {r['epochs']} | "
                     f"{r['wall_s'] / 60:.1f} min | {r['macs_m']} M | {r['params']:,} |")
    write_text(RESULTS / "train.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
