"""The end of a run: the best checkpoint evaluated on the validation split, run.json and the plots."""

from __future__ import annotations

import platform
from pathlib import Path

from .tf_quiet import import_tensorflow_quietly

import_tensorflow_quietly()  # before keras: TensorFlow's start-up log lines silenced
import keras  # noqa: E402
import numpy as np

from edgeclf import __version__
from edgeclf.image import COLOR_ORDER, RESIZE
from edgeclf.metrics import classification_report

from .config import TrainConfig
from .data import TrainingData, split_dataset
from .distribute import describe as describe_distribution
from .models import ARCHITECTURES, count_macs
from .pipeline import augmentation_description
from .run_record import RUN_JSON, RunRecord
from .stages import stages_of
from .wise import PROBE_WEIGHTS


def finish_run(cfg: TrainConfig, state: dict, data: TrainingData, interrupted: bool, seconds: float,
               distribution: dict | None = None) -> dict:
    """Evaluate the best checkpoint in ``cfg.out``; write run.json and the plots; return run.json's content.
    ``distribution``: how training ran (train.distribute.describe, taken under its strategy).

    A finished run keeps only the best model; an interrupted one keeps what --resume needs."""
    out = Path(cfg.out)
    best = keras.models.load_model(out / "model.keras", compile=False)
    report = _evaluate(best, data)
    record = RunRecord(
        class_names=data.class_names,
        **_model_fields(cfg, best),
        **_options_fields(cfg, state),
        **_data_fields(cfg, data),
        **_outcome_fields(state, interrupted, seconds),
        val_report=report,
        edgeclf_version=__version__,
        distribution=distribution or describe_distribution(),
        versions=_versions(),
    )
    _plot(cfg, state["history"], report, data.class_names)
    record.write(out / RUN_JSON)
    if not interrupted:
        # last.keras only serves --resume; a finished run keeps just the best model.
        (out / "last.keras").unlink(missing_ok=True)
        (out / "state.json").unlink(missing_ok=True)
        (out / PROBE_WEIGHTS).unlink(missing_ok=True)
    return record.to_dict()


def _evaluate(model, data: TrainingData) -> dict:
    import tensorflow as tf

    probs = model.predict(split_dataset(data.val, 64).map(lambda x, y: tf.cast(x, tf.float32)), verbose=0)
    return classification_report(data.val.y, probs.argmax(1), data.class_names)


def _model_fields(cfg: TrainConfig, model) -> dict:
    """The network and what it takes as input."""
    return {
        "architecture": cfg.model,
        "architecture_summary": ARCHITECTURES[cfg.model].summary,
        "input_size": [cfg.img_size, cfg.img_size],
        "color_order": COLOR_ORDER,
        "input_dtype": "float32 0-255 (uint8 values)",
        "preprocessing": {"resize": RESIZE, "rescale": "inside the model",
                          "augmentation": augmentation_description(cfg.augment), "mixup": cfg.mixup},
        "params": int(model.count_params()),
        "macs": count_macs(model),
    }


def _options_fields(cfg: TrainConfig, state: dict) -> dict:
    """The options the run was trained with."""
    return {
        "seed": cfg.seed,
        "epochs_requested": cfg.epochs,
        "batch_size": cfg.batch_size,
        "lr": stages_of(cfg)[0].lr,
        "patience": cfg.patience,
        "augment": cfg.augment,
        "weight_decay": cfg.weight_decay,
        "weights": state.get("weights_record"),
        "linear_probe": state.get("probe"),  # LP-FT's head fit (train.probe), or None
        "wise_ft": state.get("wise_ft"),  # the kept weights' share of fine-tuning (train.wise), or None
        "model_choice": state.get("model_choice"),  # --model auto: the budget and the latencies measured
    }


def _data_fields(cfg: TrainConfig, data: TrainingData) -> dict:
    """Where the images came from, how many of each class went where, and which were left out."""
    y_train, y_val = data.train.y, data.val.y
    return {
        "data_dir": str(Path(cfg.data_dir).resolve()),
        "val_dir": str(Path(cfg.val_dir).resolve()) if cfg.val_dir else None,
        "val_split": None if cfg.val_dir else cfg.val_split,
        "counts": {c: {"train": int(np.sum(y_train == i)), "val": int(np.sum(y_val == i))}
                   for i, c in enumerate(data.class_names)},
        "n_train": len(data.train.paths),
        "n_val": len(data.val.paths),
        "skipped": data.skipped,
        "splits": {"train": [str(Path(p).resolve()) for p in data.train.paths],
                   "val": [str(Path(p).resolve()) for p in data.val.paths]},
    }


def _outcome_fields(state: dict, interrupted: bool, seconds: float) -> dict:
    """How training went: epochs run, the best and the last epoch, and how it ended."""
    history = state["history"]
    last = history[-1] if history else {}
    return {
        "epochs_run": state["epoch"],
        "best": state["best"],
        "final": {k: last[k] for k in ("epoch", "loss", "accuracy", "val_loss", "val_accuracy") if k in last},
        "stopped_early": bool(state.get("stopped_early")),
        "interrupted": interrupted,
        "diverged": bool(state.get("diverged")),
        "train_seconds": round(seconds, 1),
    }


def _plot(cfg: TrainConfig, history: list[dict], report: dict, class_names: list[str]) -> None:
    from .plots import plot_confusion, plot_curves

    out = Path(cfg.out)
    title = f"{cfg.model} {cfg.img_size}x{cfg.img_size}"
    if history:
        plot_curves(history, out / "curves.png", title=title)
    plot_confusion(report["confusion"], class_names, out / "confusion.png",
                   title=f"{title}: validation accuracy {report['accuracy']:.1%}")


def _versions() -> dict:
    import cv2
    import tensorflow as tf

    return {
        "edgeclf": __version__,
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "opencv": cv2.__version__,
    }
