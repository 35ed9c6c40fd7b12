"""``edgeclf train``: a Keras CNN from a folder of images, with checkpoints, resume and reports.

Written for small data on small machines: images are decoded once into a disk cache, augmentation
runs in the input pipeline (so the saved model holds only rescaling + network), the best model
by validation accuracy is written atomically after every improving epoch, and an interrupted
run can be resumed from its last epoch.
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

from .tf_quiet import import_tensorflow_quietly

import_tensorflow_quietly()  # before keras: TensorFlow's start-up log lines silenced
import keras  # noqa: E402
import numpy as np
from rich.markup import escape

from edgeclf.errors import EdgeclfError, first_line
from edgeclf.image import RESIZE, RESIZE_AREA
from edgeclf.outfiles import atomic_path, remove_stale_temps

from .checkpoint import Checkpointer
from .config import (DEFAULTS, RUN_FILES, RUN_OPTIONS, TrainConfig, check_options, precheck, read_state, resume_options,
                     spelling)
from .data import TrainingData, check_classes, data_fingerprint, load_cached_splits, plan_splits, unsupported_files
from .distribute import (backup_state, cluster_task, describe, distribution, finish_worker, is_chief, multi_worker_backup,
                         peer_failures, remove_backup, write_dir)
from .epochs import EpochProgress, console, load_progress, say
from .finish import finish_run
from .refit import planned
from .run_record import RUN_JSON, record_from_dict
from .wise import average_into, save_start
from .models import ARCHITECTURES, DEFAULT_ARCHITECTURE
from .pipeline import datasets
from .stages import Stage, probes, set_trainable, stages_of


class TrainingDiverged(EdgeclfError):
    """The loss became NaN or infinite: the run stopped, keeping its best model so far."""

    exit_code = 1  # as for export's failed checks: the input was valid, the result is not


def train(cfg: TrainConfig) -> dict:
    """Train per ``cfg`` and write the run folder; returns the run summary (run.json's content).

    Runs under ``distribution()``: one device, every GPU in step when several are visible, or
    every worker of a TF_CONFIG cluster (the chief writes the run folder, the others nothing).
    The run is concluded outside the strategy: the chief alone evaluates the best model."""
    with distribution(), peer_failures():
        conclude = _train(cfg)
    return conclude()


def _train(cfg: TrainConfig):
    _validate(cfg)
    cfg.out = write_dir(Path(cfg.out))  # a multi-worker run's other workers write to their own temporary folder
    started = time.time()
    _clear_run_folder(cfg.out, cfg.force)
    state = read_state(cfg.out / "state.json") if cfg.resume else None  # _validate has applied its options to cfg
    backup = _backup(cfg) if cluster_task() is not None else None
    state = backup or state
    _resolve_defaults(cfg)
    keras.utils.set_random_seed(cfg.seed)
    data = _read_data(cfg, state)
    read_s = time.time() - started
    train_ds, val_ds = datasets(data.train, data.val, len(data.class_names), cfg)
    if state is None:
        model, state = _new_model(cfg, data)
        _probe(cfg, model, data, state)
    elif backup is not None:
        model, _ = _new_model(cfg, data)  # its weights and optimizer: the backup's, loaded as fit starts
    else:
        model = _resumed_model(cfg, state)
    steps = int(np.ceil(len(data.train) / cfg.batch_size))
    say(f"found {len(data.train)} training and {len(data.val)} validation images in {len(data.class_names)} classes in "
        f"{cfg.data_dir}, read in {read_s:.1f} s through the image cache; {cfg.model} {cfg.img_size}x{cfg.img_size} built; "
        f"epoch {state['epoch'] + 1}/{cfg.epochs} starts ({steps} steps an epoch)", cfg.quiet)
    interrupted = _fit(cfg, model, state, train_ds, val_ds, steps=steps, restore=backup is not None)
    seconds, distributed = time.time() - started, {**describe(), **_restores(state)}
    if not is_chief():  # the chief alone evaluates and writes the run folder
        return lambda: finish_worker(cfg.out, state, interrupted)
    return lambda: _conclude(cfg, state, data, interrupted, seconds, distributed)


def _backup(cfg: TrainConfig) -> dict | None:
    """Multi-worker: the state of the backup a killed run left, checked against the command's options."""
    state = backup_state(cfg.out)
    if state is not None:
        resume_options(cfg, state["config"])  # the same command: the same options
        state.setdefault("backup_restores", []).append(state["epoch"])
        if not cfg.quiet:
            console.print(f"resuming from the backup in {escape(str(cfg.out))} after epoch {state['epoch']} "
                          "(multi-worker fault tolerance)")
    return state


def _restores(state: dict) -> dict:
    return {"resumed_from_backup_after_epochs": state["backup_restores"]} if state.get("backup_restores") else {}


def _clear_run_folder(out: Path, force: bool) -> None:
    """Temporary files of a run killed mid-write (SIGKILL) go on the next run of this folder; with
    --force, every file of an earlier run too."""
    removed = [p for name in RUN_FILES for p in remove_stale_temps(out / name)]
    if removed:
        print(f"warning: removed {len(removed)} temporary file(s) left in {out} by a killed run", file=sys.stderr)
    if force:
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
        remove_backup(out)


def _read_data(cfg: TrainConfig, state: dict | None) -> TrainingData:
    """Split the data set, check it is the one a resumed run (``state``) started on, and read it
    through the image cache."""
    class_names, train_split, val_split = plan_splits(cfg.data_dir, cfg.val_dir, cfg.val_split, cfg.seed)
    fingerprint = data_fingerprint(train_split.paths + val_split.paths)
    if state is not None and state["data_fingerprint"] != fingerprint:
        raise EdgeclfError(f"{cfg.data_dir}: the data set changed since this run started; --resume needs the same files")
    if state is not None and state.get("resize", RESIZE_AREA) != RESIZE:  # a state from before records none
        raise EdgeclfError(f"{cfg.out}: this run was started by an older edgeclf, which resized images with cv2.INTER_AREA; "
                           "it cannot go on with this one's resize: start it over with --force")
    class_dirs = [Path(root) / c for root in dict.fromkeys([cfg.data_dir, cfg.val_dir or cfg.data_dir]) for c in class_names]
    skipped: list[dict] = unsupported_files(class_dirs)  # listed in run.json with the unreadable ones
    n_files = len(train_split.paths) + len(val_split.paths)
    size = (cfg.img_size, cfg.img_size)
    with load_progress(n_files, "reading images", quiet=cfg.quiet) as advance:
        train_set, val_set = load_cached_splits(train_split, val_split, size, skipped, advance)
    check_classes(cfg.data_dir, class_names, train_set.y, val_set.y)
    if len(val_set) == 0:
        raise EdgeclfError(f"{cfg.val_dir or cfg.data_dir}: no readable validation image")
    return TrainingData(class_names, train_set, val_set, skipped, fingerprint)


def _new_model(cfg: TrainConfig, data: TrainingData) -> tuple[keras.Model, dict]:
    """The network as built (pretrained backbone or not) and the state of a run that has not started."""
    arch = ARCHITECTURES[cfg.model]
    weights = None if cfg.weights == "none" else cfg.weights
    try:
        model = arch.build(len(data.class_names), cfg.img_size, weights=weights, **cfg.extra)
    except (OSError, ValueError, KeyError) as e:  # h5py and Keras on a file that is not these weights
        if weights in (None, "imagenet"):
            raise
        raise EdgeclfError(f"{weights}: not a usable --weights file for {cfg.model} ({first_line(e)})") from None
    weights_record = _weights_record(arch, cfg.weights, getattr(model, "weights_info", None))
    if cfg.init_from is not None:  # --from: the run's trained weights over the pretrained ones
        from .warmstart import transfer

        weights_record = {**transfer(model, Path(cfg.init_from)), "backbone": weights_record}
    state = {
        # Every option that defines the run, so that --resume continues it as it was started.
        "config": {**{name: getattr(cfg, name) for name in RUN_OPTIONS},
                   "val_dir": str(Path(cfg.val_dir).resolve()) if cfg.val_dir else None},
        "weights_record": weights_record,
        "data_fingerprint": data.fingerprint,
        "resize": RESIZE,  # the images' resize rule (edgeclf.image.RESIZE): --resume needs the same
        "model_choice": cfg.model_choice,
        "epoch": 0, "stage": 0, "wait": 0, "stopped_early": False,
        "best": {"epoch": 0, "val_accuracy": 0.0, "val_loss": 0.0}, "history": [],
    }
    return model, state


def _probe(cfg: TrainConfig, model, data: TrainingData, state: dict) -> None:
    """A pretrained model's head fitted on its frozen features (train.probe), before fine-tuning."""
    if not probes(cfg):
        return
    from .probe import linear_probe

    started = time.time()
    with load_progress(len(data.train), "linear probe: features of the frozen backbone", quiet=cfg.quiet) as advance:
        record = linear_probe(model, data.train, len(data.class_names), cfg.seed, advance)
    state["probe"] = {**record, "seconds": round(time.time() - started, 1)}
    save_start(model, cfg.out)  # for the WiSE-FT average when the run ends (train.wise)
    state["select_within_noise_of"] = len(data.val)  # train.checkpoint: later epochs win unless credibly worse
    best = max(record["cv_accuracy"].values())
    say(f"linear probe: head fitted on frozen features (L2 {record['l2']:g}, cross-validated accuracy {best:.1%} "
        f"on {record['photos']} training photos) in {time.time() - started:.0f} s", cfg.quiet)


def _resumed_model(cfg: TrainConfig, state: dict) -> keras.Model:
    """The model as the last finished epoch left it (last.keras, with its optimizer state)."""
    model = keras.models.load_model(cfg.out / "last.keras")
    if not cfg.quiet:
        options = " ".join(spelling(n, getattr(cfg, n)) for n in RUN_OPTIONS
                           if n not in ("extra", "val_dir") and getattr(cfg, n) is not None)
        console.print(f"resuming {escape(str(cfg.out))} after epoch {state['epoch']} (best val accuracy "
                      f"{state['best']['val_accuracy']:.3f}) with the run's options: {escape(options)}")
    return model


def _fit(cfg: TrainConfig, model, state: dict, train_ds, val_ds, steps: int, restore: bool = False) -> bool:
    """Train the stages not done yet (all of them unless resuming); True when Ctrl-C stopped it
    after an epoch had finished (Ctrl-C before that is raised). ``restore``: a multi-worker
    backup continues (its weights are loaded as the first stage trained here starts)."""
    stages = stages_of(cfg)
    try:
        end = 0
        for i, stage in enumerate(stages):
            start, end = end, end + stage.epochs
            if i < state["stage"] or (i == state["stage"] and state["stopped_early"]) or state["epoch"] >= end:
                continue  # done before this run was resumed
            if not (cfg.resume and i == state["stage"] and state["epoch"] > start):
                set_trainable(model, stage)
                _compile(model, stage, steps, cfg.weight_decay)
                if not (restore and state["epoch"] > start):
                    state.update(wait=0, stopped_early=False)
            state["stage"] = i
            model.fit(train_ds, validation_data=val_ds, epochs=end, shuffle=False, initial_epoch=max(state["epoch"], start),
                      callbacks=_callbacks(cfg, state, stages, i, steps, restore), verbose=0)
            restore = False
            if state.get("diverged"):
                break
    except KeyboardInterrupt:
        if state["best"]["epoch"] == 0:
            raise
        console.print(f"interrupted: keeping the best model so far (epoch {state['best']['epoch']}); "
                      "continue with --resume")
        return True
    except OSError as e:  # disk full, folder made read-only or removed: what is on disk stays valid
        raise _write_error(e, cfg.out, state) from None
    return False


def _callbacks(cfg: TrainConfig, state: dict, stages: list[Stage], i: int, steps: int, restore: bool = False) -> list:
    """The checkpoints of stage ``i``, its progress display unless --quiet, and under multi-worker
    its backup (after the checkpoints: it records the state they update)."""
    callbacks = [Checkpointer(cfg.out, state, cfg.patience, i, n_val=state.get("select_within_noise_of"))]
    if not cfg.quiet:
        total_epochs = sum(s.epochs for s in stages)
        callbacks.append(EpochProgress(total_epochs, steps, state, stages[i].name if len(stages) > 1 else ""))
    if cluster_task() is not None:
        callbacks.append(multi_worker_backup(cfg.out, state, i, restore))
    return callbacks


def _compile(model, stage: Stage, steps_per_epoch: int, weight_decay: float) -> None:
    """AdamW on a cosine schedule with a short warm-up, for ``stage``'s epochs."""
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=stage.lr / 10,
        decay_steps=max(1, stage.epochs * steps_per_epoch),
        alpha=0.02,
        warmup_target=stage.lr,
        warmup_steps=min(3, stage.epochs) * steps_per_epoch // 2,
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=schedule, weight_decay=weight_decay),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=stage.label_smoothing),
        metrics=["accuracy"],
    )


def _conclude(cfg: TrainConfig, state: dict, data: TrainingData, interrupted: bool, seconds: float, distributed: dict) -> dict:
    """run.json and the plots; a diverged run raises TrainingDiverged (after writing them when
    an epoch had finished before the loss went non-finite)."""
    out, diverged = cfg.out, state.get("diverged")
    if diverged and state["best"]["epoch"] == 0:
        raise TrainingDiverged(f"training diverged: the loss became {diverged['loss']} in epoch {diverged['epoch']}, "
                               f"before any epoch finished; no model was saved in {out} (try a lower --lr)")
    try:
        if not (interrupted or diverged) and average_into(out, cfg.wise_ft):
            state["wise_ft"] = {"share": cfg.wise_ft, "fine_tuned_epoch": state["best"]["epoch"]}
        run = finish_run(cfg, state, data, interrupted, seconds, distributed)
        if not (interrupted or diverged) and planned(cfg, len(data.train) + len(data.val)):
            run = _refit(cfg, state, data, run)
    except OSError as e:
        raise _write_error(e, out, state) from None
    if not interrupted:
        remove_backup(out)  # multi-worker: the run is complete, nothing to continue
    if diverged:
        raise TrainingDiverged(f"training diverged: the loss became {diverged['loss']} in epoch {diverged['epoch']}; "
                               f"the best model so far (epoch {state['best']['epoch']}) is kept in {out / 'model.keras'} "
                               "with run.json (try a lower --lr)")
    return run


def _refit(cfg: TrainConfig, state: dict, data: TrainingData, run: dict) -> dict:
    """The held-out run is complete on disk; train again on every photo (train.refit) and keep
    that model instead, its record added to run.json. Whatever stops the refit (Ctrl-C, a
    non-finite loss, memory) keeps the held-out run's model, as run.json then says."""
    from .refit import refit

    epochs = state["best"]["epoch"]
    if not cfg.quiet:
        console.print(f"refit: training again on all {len(data.train) + len(data.val)} photos for the {epochs} epochs "
                      "kept (--no-refit: keep the held-out run's model); the validation figures stay the held-out run's")
    try:
        with distribution():
            model, record = refit(cfg, data, epochs, _new_model,
                                  lambda m, stage, steps: _compile(m, stage, steps, cfg.weight_decay))
        # run.json says so before model.keras changes: a crash in between errs on the side of caution
        refitted = _with_refit(cfg, run, record)
        with atomic_path(cfg.out / "model.keras", suffix=".keras") as tmp:
            model.save(tmp)
        return refitted
    except KeyboardInterrupt:
        record, why = {"interrupted": True}, "interrupted"
    except FloatingPointError:
        record, why = {"diverged": True}, "stopped: the loss became non-finite"
    except Exception as e:  # out of memory, a full disk: the held-out run stands as it was written
        record = {"failed": first_line(e)}
        why = f"stopped: {record['failed']}"
    console.print(f"refit {why}: keeping the model of the held-out run", markup=False)
    return _with_refit(cfg, run, record)


def _with_refit(cfg: TrainConfig, run: dict, record: dict) -> dict:
    """``run`` with the refit's ``record``, written to run.json."""
    run = {**run, "refit": record}
    record_from_dict(run, cfg.out / RUN_JSON).write(cfg.out / RUN_JSON)
    return run


def _write_error(e: OSError, out: Path, state: dict) -> EdgeclfError:
    """A failed write (disk full, read-only folder) as one line that says what is kept."""
    if not state["best"]["epoch"]:
        kept = "no model was saved"
    else:
        kept = f"the best model so far (epoch {state['best']['epoch']}) is kept in {out / 'model.keras'}"
        if (out / "state.json").is_file() and (out / "last.keras").is_file():
            kept += "; make room and continue with --resume"
    return EdgeclfError(f"{out}: cannot write to the run folder ({e.strerror or first_line(e)}); {kept}")


def _validate(cfg: TrainConfig) -> None:
    if cfg.model is not None and cfg.model not in (*ARCHITECTURES, "auto"):
        raise EdgeclfError(f"unknown --model {cfg.model!r}; choose from {', '.join(ARCHITECTURES)} or auto (with --budget-ms)")
    precheck(cfg)


def _resolve_defaults(cfg: TrainConfig) -> None:
    """Fill the options still unset with their defaults (some depend on the architecture)."""
    if cfg.budget_ms is not None and cfg.model in (None, "auto"):
        from .budget import pick_model

        cfg.model, cfg.model_choice = pick_model(cfg.budget_ms, say=lambda line: say(line, cfg.quiet))
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


def _weights_record(arch, weights: str, info) -> dict | None:
    """Where the initial weights came from (backbone, source, file and its SHA-256), for run.json."""
    if not arch.pretrained:
        return None
    record = info.as_dict() if info is not None else {"source": weights}
    return {"backbone": arch.name, **record}
