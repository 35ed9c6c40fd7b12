"""``edgeclf train``: a Keras CNN from a folder of images, with checkpoints, resume and reports.

Written for small data on small machines: images are decoded once into a disk cache, augmentation
runs in the input pipeline (so the saved model holds only rescaling + network), the best model
by validation accuracy is written atomically after every improving epoch, and an interrupted
run can be resumed from its last epoch.
"""

from __future__ import annotations

import copy
import csv
import math
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .tf_quiet import import_tensorflow_quietly

import_tensorflow_quietly()  # before keras: TensorFlow's start-up log lines silenced
import keras  # noqa: E402
import numpy as np
from rich.markup import escape

from edgeclf import __version__
from edgeclf.errors import EdgeclfError, first_line
from edgeclf.image import COLOR_ORDER, RESIZE
from edgeclf.metrics import classification_report
from edgeclf.outfiles import atomic_path, remove_stale_temps, write_json

from .config import DEFAULTS, RUN_FILES, RUN_OPTIONS, TrainConfig, check_options, precheck, read_state, spelling
from .data import check_classes, data_fingerprint, load_cached_splits, plan_splits, split_dataset, unsupported_files
from .distribute import describe as describe_distribution, distribution
from .models import ARCHITECTURES, DEFAULT_ARCHITECTURE, count_macs
from .progress import EpochProgress, console, load_progress
from .run_record import RUN_JSON, RunRecord


@dataclass
class Stage:
    """One phase of training (mobilenet_v2 has two: head only, then fine-tuning)."""

    name: str
    epochs: int
    lr: float
    backbone_trainable_from: str | None = None  # None: whole model as built; "": backbone frozen


def _stages(cfg: TrainConfig) -> list[Stage]:
    arch = ARCHITECTURES[cfg.model]
    lr = cfg.lr or arch.default_lr
    if arch.fine_tune_from is None or cfg.weights == "none":
        return [Stage("train", cfg.epochs, lr)]
    # Transfer learning as keras-io's guide does it: a new head on the frozen backbone first (so
    # its random gradients cannot wreck the pretrained features), then the top blocks fine-tuned
    # slowly with BatchNorm kept in inference mode.
    head = min(cfg.epochs, arch.head_epochs) if cfg.epochs >= 2 else cfg.epochs
    head = min(head, max(1, cfg.epochs // 2))
    stages = [Stage("head", head, lr, backbone_trainable_from="")]
    if cfg.epochs - head > 0:
        stages.append(Stage("fine-tune", cfg.epochs - head, lr * arch.fine_tune_lr_scale,
                            backbone_trainable_from=arch.fine_tune_from))
    return stages


def _validate(cfg: TrainConfig) -> None:
    if cfg.model is not None and cfg.model not in ARCHITECTURES:
        raise EdgeclfError(f"unknown --model {cfg.model!r}; choose from {', '.join(ARCHITECTURES)}")
    precheck(cfg)


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


def _augmenter(seed: int):
    from keras import layers

    return keras.Sequential(
        [
            layers.RandomFlip("horizontal", seed=seed),
            layers.RandomRotation(0.06, fill_mode="reflect", seed=seed + 1),
            layers.RandomZoom((-0.2, 0.1), fill_mode="reflect", seed=seed + 2),
            layers.RandomTranslation(0.1, 0.1, fill_mode="reflect", seed=seed + 3),
            layers.RandomContrast(0.2, seed=seed + 4),
        ],
        name="augment",
    )


def _datasets(train_set, val_set, num_classes: int, cfg: TrainConfig):
    import tensorflow as tf

    def onehot(x, y):
        return tf.cast(x, tf.float32), tf.one_hot(y, num_classes)

    train = split_dataset(train_set, cfg.batch_size, shuffle_seed=cfg.seed).map(onehot, num_parallel_calls=tf.data.AUTOTUNE)
    if cfg.augment:
        aug = _augmenter(cfg.seed)
        train = train.map(lambda x, y: (aug(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    if cfg.mixup > 0:
        train = train.map(_mixup(cfg.mixup, cfg.seed), num_parallel_calls=tf.data.AUTOTUNE)
    train = train.prefetch(tf.data.AUTOTUNE)
    val = split_dataset(val_set, 64).map(onehot).prefetch(tf.data.AUTOTUNE)
    return train, val


def _mixup(alpha: float, seed: int):
    """Blend each batch with itself reversed, images and labels alike (mixup, Zhang et al. 2018):
    on a few hundred photos it keeps the network from memorising them."""
    import tensorflow as tf

    def mix(x, y):
        g1, g2 = tf.random.gamma([], alpha, seed=seed), tf.random.gamma([], alpha, seed=seed + 1)
        lam = g1 / (g1 + g2)
        return lam * x + (1 - lam) * tf.reverse(x, [0]), lam * y + (1 - lam) * tf.reverse(y, [0])

    return mix


def _set_trainable(model, stage: Stage) -> None:
    if stage.backbone_trainable_from is None:
        return
    backbone = model.get_layer("backbone")
    backbone.trainable = stage.backbone_trainable_from != ""
    if backbone.trainable:
        unfreeze = False
        for layer in backbone.layers:
            unfreeze = unfreeze or layer.name == stage.backbone_trainable_from
            # BatchNorm stays frozen (the backbone runs with training=False) as keras-io advises.
            layer.trainable = unfreeze and layer.__class__.__name__ != "BatchNormalization"


def _compile(model, stage: Stage, steps_per_epoch: int, weight_decay: float) -> None:
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=stage.lr / 10,
        decay_steps=max(1, stage.epochs * steps_per_epoch),
        alpha=0.02,
        warmup_target=stage.lr,
        warmup_steps=min(3, stage.epochs) * steps_per_epoch // 2,
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=schedule, weight_decay=weight_decay),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.1),
        metrics=["accuracy"],
    )


class Checkpointer(keras.callbacks.Callback):
    """Writes the best model (by val accuracy) and the last epoch atomically; stops early."""

    def __init__(self, out: Path, state: dict, patience: int, stage_index: int) -> None:
        super().__init__()
        self.out, self.state, self.patience, self.stage_index = out, state, patience, stage_index

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        # The weights are NaN from the first non-finite loss on: stop at once, save nothing more.
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.state["diverged"] = {"epoch": self.epoch + 1, "loss": str(float(loss))}
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        logs, state = logs or {}, self.state
        bad = {k: float(v) for k, v in logs.items() if k in ("loss", "val_loss") and not math.isfinite(float(v))}
        if bad and not state.get("diverged"):
            state["diverged"] = {"epoch": epoch + 1, "loss": str(next(iter(bad.values())))}
            self.model.stop_training = True
        if state.get("diverged"):
            return  # nothing of this epoch is kept: model.keras, last.keras and state.json stay as they were
        state["history"].append({"epoch": epoch + 1, "stage": self.stage_index,
                                 **{k: float(v) for k, v in logs.items() if k != "learning_rate"}})
        val_acc = float(logs.get("val_accuracy", 0.0))
        if val_acc > state["best"]["val_accuracy"] or state["best"]["epoch"] == 0:
            with atomic_path(self.out / "model.keras") as tmp:
                self.model.save(tmp)
            # Only once it is on disk: a failed write (disk full) must not claim a best model.
            state["best"] = {"epoch": epoch + 1, "val_accuracy": val_acc, "val_loss": float(logs.get("val_loss", 0.0))}
            state["wait"] = 0
        else:
            state["wait"] += 1
        with atomic_path(self.out / "last.keras") as tmp:
            self.model.save(tmp)
        state["epoch"] = epoch + 1
        _write_history(self.out / "history.csv", state["history"])
        write_json(self.out / "state.json", state)
        if state["wait"] >= self.patience:
            self.model.stop_training = True
            state["stopped_early"] = True


def _write_history(path: Path, history: list[dict]) -> None:
    cols = ["epoch", "stage", "loss", "accuracy", "val_loss", "val_accuracy"]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(history)


def train(cfg: TrainConfig) -> dict:
    """Train per ``cfg`` and write the run folder; returns the run summary (run.json's content).

    Runs under ``distribution()``: one device, or every GPU in step when several are visible."""
    with distribution():
        return _train(cfg)


def _train(cfg: TrainConfig) -> dict:
    _validate(cfg)
    out = cfg.out = Path(cfg.out)
    started = time.time()
    _remove_stale_temps(out)
    if cfg.force:
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)

    state: dict
    if cfg.resume:
        state = read_state(out / "state.json")  # _validate has applied its options to cfg
    _resolve_defaults(cfg)
    arch = ARCHITECTURES[cfg.model]
    size = cfg.img_size
    keras.utils.set_random_seed(cfg.seed)

    class_names, train_split, val_split = plan_splits(cfg.data_dir, cfg.val_dir, cfg.val_split, cfg.seed)
    fingerprint = data_fingerprint(train_split.paths + val_split.paths)
    if cfg.resume and state["data_fingerprint"] != fingerprint:
        raise EdgeclfError(f"{cfg.data_dir}: the data set changed since this run started; --resume needs the same files")
    class_dirs = [Path(root) / c for root in dict.fromkeys([cfg.data_dir, cfg.val_dir or cfg.data_dir]) for c in class_names]
    skipped: list[dict] = unsupported_files(class_dirs)  # listed in run.json with the unreadable ones
    n_files = len(train_split.paths) + len(val_split.paths)
    with load_progress(n_files, "reading images", quiet=cfg.quiet) as advance:
        train_set, val_set = load_cached_splits(train_split, val_split, (size, size), skipped, advance)
    y_train, y_val, train_paths, val_paths = train_set.y, val_set.y, train_set.paths, val_set.paths
    check_classes(cfg.data_dir, class_names, y_train, y_val)
    if len(val_set) == 0:
        raise EdgeclfError(f"{cfg.val_dir or cfg.data_dir}: no readable validation image")

    stages = _stages(cfg)
    steps = int(np.ceil(len(train_set) / cfg.batch_size))
    train_ds, val_ds = _datasets(train_set, val_set, len(class_names), cfg)

    if cfg.resume:
        model = keras.models.load_model(out / "last.keras")
        if not cfg.quiet:
            options = " ".join(spelling(n, getattr(cfg, n)) for n in RUN_OPTIONS if n not in ("extra", "val_dir"))
            console.print(f"resuming {escape(str(out))} after epoch {state['epoch']} (best val accuracy "
                          f"{state['best']['val_accuracy']:.3f}) with the run's options: {escape(options)}")
    else:
        weights = None if cfg.weights == "none" else cfg.weights
        try:
            model = arch.build(len(class_names), size, weights=weights, **cfg.extra)
        except (OSError, ValueError, KeyError) as e:  # h5py and Keras on a file that is not these weights
            if weights in (None, "imagenet"):
                raise
            raise EdgeclfError(f"{weights}: not a usable --weights file for {cfg.model} ({first_line(e)})") from None
        state = {
            # Every option that defines the run, so that --resume continues it as it was started.
            "config": {**{name: getattr(cfg, name) for name in RUN_OPTIONS},
                       "val_dir": str(Path(cfg.val_dir).resolve()) if cfg.val_dir else None},
            "weights_record": _weights_record(arch, cfg.weights, getattr(model, "weights_info", None)),
            "data_fingerprint": fingerprint,
            "epoch": 0, "stage": 0, "wait": 0, "stopped_early": False,
            "best": {"epoch": 0, "val_accuracy": 0.0, "val_loss": 0.0}, "history": [],
        }

    total_epochs = sum(s.epochs for s in stages)
    interrupted = False
    try:
        end = 0
        for i, stage in enumerate(stages):
            start, end = end, end + stage.epochs
            done = i < state["stage"] or (i == state["stage"] and state["stopped_early"]) or state["epoch"] >= end
            if done:
                continue
            if not (cfg.resume and i == state["stage"] and state["epoch"] > start):
                _set_trainable(model, stage)
                _compile(model, stage, steps, cfg.weight_decay)
                state.update(wait=0, stopped_early=False)
            state["stage"] = i
            callbacks = [Checkpointer(out, state, cfg.patience, i)]
            if not cfg.quiet:
                callbacks.append(EpochProgress(total_epochs, steps, state, stage.name if len(stages) > 1 else ""))
            model.fit(train_ds, validation_data=val_ds, epochs=end, shuffle=False, initial_epoch=max(state["epoch"], start),
                      callbacks=callbacks, verbose=0)
            if state.get("diverged"):
                break
    except KeyboardInterrupt:
        interrupted = True
        if state["best"]["epoch"] == 0:
            raise
        console.print(f"interrupted: keeping the best model so far (epoch {state['best']['epoch']}); "
                      "continue with --resume")
    except OSError as e:  # disk full, folder made read-only or removed: what is on disk stays valid
        raise _write_error(e, out, state) from None

    diverged = state.get("diverged")
    if diverged and state["best"]["epoch"] == 0:
        raise TrainingDiverged(f"training diverged: the loss became {diverged['loss']} in epoch {diverged['epoch']}, "
                               f"before any epoch finished; no model was saved in {out} (try a lower --lr)")
    try:
        run = _finish(cfg, out, state, class_names, val_set, y_val, y_train, train_paths, val_paths, skipped, interrupted,
                      time.time() - started, arch)
    except OSError as e:
        raise _write_error(e, out, state) from None
    if diverged:
        raise TrainingDiverged(f"training diverged: the loss became {diverged['loss']} in epoch {diverged['epoch']}; "
                               f"the best model so far (epoch {state['best']['epoch']}) is kept in {out / 'model.keras'} "
                               "with run.json (try a lower --lr)")
    return run


def _remove_stale_temps(out: Path) -> None:
    """Temporary files of a run killed mid-write (SIGKILL) go on the next run of this folder."""
    removed = [p for name in RUN_FILES for p in remove_stale_temps(out / name)]
    if removed:
        print(f"warning: removed {len(removed)} temporary file(s) left in {out} by a killed run", file=sys.stderr)


class TrainingDiverged(EdgeclfError):
    """The loss became NaN or infinite: the run stopped, keeping its best model so far."""

    exit_code = 1  # as for export's failed checks: the input was valid, the result is not


def _write_error(e: OSError, out: Path, state: dict) -> EdgeclfError:
    """A failed write (disk full, read-only folder) as one line that says what is kept."""
    if not state["best"]["epoch"]:
        kept = "no model was saved"
    else:
        kept = f"the best model so far (epoch {state['best']['epoch']}) is kept in {out / 'model.keras'}"
        if (out / "state.json").is_file() and (out / "last.keras").is_file():
            kept += "; make room and continue with --resume"
    return EdgeclfError(f"{out}: cannot write to the run folder ({e.strerror or first_line(e)}); {kept}")


def _resolve_defaults(cfg: TrainConfig) -> None:
    """Fill the options still unset with their defaults (some depend on the architecture)."""
    cfg.model = cfg.model or DEFAULT_ARCHITECTURE
    if cfg.model not in ARCHITECTURES:  # from a hand-edited state.json
        raise EdgeclfError(f"unknown --model {cfg.model!r}; choose from {', '.join(ARCHITECTURES)}")
    arch = ARCHITECTURES[cfg.model]
    cfg.img_size = cfg.img_size or arch.default_size
    cfg.epochs = arch.default_epochs if cfg.epochs is None else cfg.epochs
    for name, default in DEFAULTS.items():
        if getattr(cfg, name) is None:
            setattr(cfg, name, copy.deepcopy(default))
    check_options(cfg)  # values read back from state.json pass the same checks as the command line's


def _finish(cfg, out, state, class_names, val_set, y_val, y_train, train_paths, val_paths, skipped, interrupted, seconds, arch) -> dict:
    """Evaluate the best checkpoint on the validation split; write run.json and the plots."""
    import tensorflow as tf

    from .plots import plot_confusion, plot_curves

    best = keras.models.load_model(out / "model.keras", compile=False)
    probs = best.predict(split_dataset(val_set, 64).map(lambda x, y: tf.cast(x, tf.float32)), verbose=0)
    report = classification_report(y_val, probs.argmax(1), class_names)
    history = state["history"]
    counts = {c: {"train": int(np.sum(y_train == i)), "val": int(np.sum(y_val == i))} for i, c in enumerate(class_names)}
    size = cfg.img_size
    record = RunRecord(
        edgeclf_version=__version__,
        architecture=cfg.model,
        architecture_summary=arch.summary,
        class_names=class_names,
        input_size=[size, size],
        color_order=COLOR_ORDER,
        input_dtype="float32 0-255 (uint8 values)",
        preprocessing={"resize": RESIZE, "rescale": "inside the model", "augmentation": _aug_desc(cfg.augment),
                       "mixup": cfg.mixup},
        params=int(best.count_params()),
        macs=count_macs(best),
        seed=cfg.seed,
        epochs_requested=cfg.epochs,
        epochs_run=state["epoch"],
        batch_size=cfg.batch_size,
        lr=_stages(cfg)[0].lr,
        patience=cfg.patience,
        augment=cfg.augment,
        weight_decay=cfg.weight_decay,
        weights=state.get("weights_record"),
        data_dir=str(Path(cfg.data_dir).resolve()),
        val_dir=str(Path(cfg.val_dir).resolve()) if cfg.val_dir else None,
        val_split=None if cfg.val_dir else cfg.val_split,
        counts=counts,
        n_train=len(train_paths),
        n_val=len(val_paths),
        skipped=skipped,
        best=state["best"],
        final={k: history[-1][k] for k in ("epoch", "loss", "accuracy", "val_loss", "val_accuracy") if k in history[-1]} if history else {},
        val_report=report,
        stopped_early=bool(state.get("stopped_early")),
        interrupted=interrupted,
        diverged=bool(state.get("diverged")),
        train_seconds=round(seconds, 1),
        distribution=describe_distribution(),
        versions=_versions(),
        splits={"train": [str(Path(p).resolve()) for p in train_paths], "val": [str(Path(p).resolve()) for p in val_paths]},
    )
    title = f"{cfg.model} {size}x{size}"
    if history:
        plot_curves(history, out / "curves.png", title=title)
    plot_confusion(report["confusion"], class_names, out / "confusion.png",
                   title=f"{title}: validation accuracy {report['accuracy']:.1%}")
    record.write(out / RUN_JSON)
    if not interrupted:
        # last.keras only serves --resume; a finished run keeps just the best model.
        (out / "last.keras").unlink(missing_ok=True)
        (out / "state.json").unlink(missing_ok=True)
    return record.to_dict()


def _weights_record(arch, weights: str, info) -> dict | None:
    """Where the initial weights came from (backbone, source, file and its SHA-256), for run.json."""
    if not arch.pretrained:
        return None
    record = info.as_dict() if info is not None else {"source": weights}
    return {"backbone": arch.name, **record}


def _aug_desc(on: bool) -> str:
    if not on:
        return "off"
    return "horizontal flip, rotation ±0.06 turn, zoom -20%..+10%, translation ±10%, contrast ±20% (training only)"

