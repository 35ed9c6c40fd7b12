"""What the CLI's train command prints; the work itself is ``train.trainer.train``."""

from __future__ import annotations

import json
from pathlib import Path

from rich.markup import escape

from .progress import console
from .trainer import TrainConfig, train


def run_train(cfg: TrainConfig, json_out: bool = False) -> dict:
    run = train(cfg)
    if json_out:
        summary = {k: v for k, v in run.items() if k != "splits"}
        print(json.dumps(summary))
    else:
        out = Path(cfg.out)
        rep = run["val_report"]
        console.print(
            f"\n[bold]{run['architecture']}[/] {run['input_size'][0]}x{run['input_size'][1]}: best val accuracy "
            f"[bold green]{run['best']['val_accuracy']:.1%}[/] (epoch {run['best']['epoch']}), "
            f"{run['params']:,} params, {run['macs'] / 1e6:.1f} M MACs/frame, {run['train_seconds']:.0f} s"
        )
        for name, m in rep["per_class"].items():
            console.print(f"  {escape(f'{name:>16}')}: precision {m['precision']:.3f}  recall {m['recall']:.3f}  ({m['support']} images)")
        if run["skipped"]:
            console.print(f"  skipped {len(run['skipped'])} unreadable or unsupported file(s) (listed in run.json)")
        console.print(f"wrote {escape(str(out / 'model.keras'))}, run.json, history.csv, curves.png, confusion.png in {escape(str(out))}")
    return run
