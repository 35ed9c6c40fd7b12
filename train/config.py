"""What ``edgeclf train`` accepts, and the checks that need no TensorFlow.

Kept apart from the trainer so that the command answers a bad option or an occupied run folder
at once, before TensorFlow takes seconds to load.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from edgeclf.errors import EdgeclfError, first_line
from edgeclf.image import scan_class_folders

from .distribute import BACKUP_DIR, cluster_task
from .run_record import check_class_names

# The options that define a run. None in TrainConfig means "the default" for a new run and
# "the run's own value" for --resume: state.json records each one, and a resumed run uses them.
RUN_OPTIONS = ("model", "img_size", "epochs", "batch_size", "val_split", "val_dir", "seed", "weights", "lr",
               "patience", "augment", "mixup", "weight_decay", "wise_ft", "refit", "extra")
# Defaults of the options that do not depend on the architecture (model, img_size, epochs and lr do).
DEFAULTS = {"batch_size": 32, "val_split": 0.2, "seed": 1337, "weights": "imagenet", "patience": 15,
            "augment": True, "mixup": 0.0, "weight_decay": 5e-4, "wise_ft": 0.5, "extra": {}}
MAX_SEED = 2**32 - 1  # what NumPy's and TensorFlow's seeding accept
MAX_EPOCHS = 100_000
MAX_BATCH = 65_536
# What a run folder holds: train writes these names (and removes them with --force), nothing else.
RUN_FILES = ("model.keras", "last.keras", "run.json", "history.csv", "curves.png", "confusion.png", "state.json",
             "probe.weights.h5")


@dataclass
class TrainConfig:
    """Everything ``edgeclf train`` accepts; see ``edgeclf train --help``. The options left None
    take their default (for a new run) or the run's recorded value (with ``resume``)."""

    data_dir: Path
    out: Path
    model: str | None = None  # None: train.models.DEFAULT_ARCHITECTURE
    img_size: int | None = None  # None: the architecture's
    epochs: int | None = None  # None: the architecture's default
    batch_size: int | None = None  # 32
    val_split: float | None = None  # 0.2
    val_dir: Path | None = None
    seed: int | None = None  # 1337
    weights: str | None = None  # "imagenet"
    lr: float | None = None  # None: the architecture's
    patience: int | None = None  # 15
    augment: bool | None = None  # True
    mixup: float | None = None  # 0: Beta(alpha, alpha) mixing of training batches off
    weight_decay: float | None = None  # 5e-4: AdamW's decoupled decay (applied as lr * weight_decay per step)
    wise_ft: float | None = None  # 0.5: the kept weights are this share fine-tuned, the rest the probe's (train.wise)
    refit: bool | None = None  # None: on for a pretrained network's small data set (train.refit.planned)
    resume: bool = False
    force: bool = False
    quiet: bool = False
    extra: dict | None = field(default=None)  # architecture keyword arguments (e.g. widths)
    budget_ms: float | None = None  # with model "auto": int8 latency per frame the chosen model must meet
    model_choice: dict | None = None  # set by model "auto": the budget and each rung's measured latency
    init_from: Path | None = None  # --from: the run's model.keras, whose weights the network starts from


def check_options(cfg: TrainConfig) -> None:
    """Every option given, checked for range (NaN and infinity included); one-line errors."""
    for name, low, high in (("epochs", 1, MAX_EPOCHS), ("batch_size", 1, MAX_BATCH), ("patience", 1, None)):
        value = getattr(cfg, name)
        if value is not None and value < low:
            raise EdgeclfError(f"--{name.replace('_', '-')} must be at least {low} (got {value})")
        if value is not None and high is not None and value > high:  # TensorFlow fails on such numbers with a traceback
            raise EdgeclfError(f"--{name.replace('_', '-')} must be at most {high} (got {value})")
    if cfg.img_size is not None and not 32 <= cfg.img_size <= 1024:
        raise EdgeclfError(f"--img-size must be between 32 and 1024 (got {cfg.img_size})")
    if cfg.seed is not None and not 0 <= cfg.seed <= MAX_SEED:
        raise EdgeclfError(f"--seed must be between 0 and {MAX_SEED} (got {cfg.seed})")
    # `not low <= x` is also true for NaN, which every comparison fails.
    if cfg.lr is not None and not (math.isfinite(cfg.lr) and cfg.lr > 0):
        raise EdgeclfError(f"--lr must be a number above 0 (got {cfg.lr})")
    if cfg.weight_decay is not None and not (math.isfinite(cfg.weight_decay) and cfg.weight_decay >= 0):
        raise EdgeclfError(f"--weight-decay must be 0 or more (got {cfg.weight_decay})")
    if cfg.mixup is not None and not (math.isfinite(cfg.mixup) and cfg.mixup >= 0):
        raise EdgeclfError(f"--mixup must be 0 (off) or more (got {cfg.mixup})")
    if cfg.wise_ft is not None and not (math.isfinite(cfg.wise_ft) and 0.0 < cfg.wise_ft <= 1.0):
        raise EdgeclfError(f"--wise-ft must be above 0 and at most 1 (1: the fine-tuned weights as they are; got {cfg.wise_ft})")
    if cfg.val_split is not None and not 0.0 < cfg.val_split < 1.0:
        raise EdgeclfError(f"--val-split must be between 0 and 1 (got {cfg.val_split})")
    if cfg.budget_ms is not None and not (math.isfinite(cfg.budget_ms) and cfg.budget_ms > 0):
        raise EdgeclfError(f"--budget-ms must be a number of milliseconds above 0 (got {cfg.budget_ms})")
    if cfg.budget_ms is not None and cfg.model not in (None, "auto"):
        raise EdgeclfError(f"--budget-ms picks the model: use it with --model auto or without --model (got --model {cfg.model})")
    if cfg.model == "auto" and cfg.budget_ms is None:
        raise EdgeclfError("--model auto picks by a latency budget: add --budget-ms MS (int8 milliseconds per frame)")
    if cfg.refit and cluster_task() is not None:
        raise EdgeclfError("--refit trains a second time in one process; leave it out of a multi-worker run")
    if cfg.resume and cfg.force:
        raise EdgeclfError("--resume and --force contradict each other: choose one")
    if cfg.weights not in (None, "imagenet", "none") and not Path(cfg.weights).is_file():
        raise EdgeclfError(f"{cfg.weights}: --weights file does not exist (use imagenet, none or a .h5 file)")
    for name, folder in (("data folder", cfg.data_dir), ("--val folder", cfg.val_dir)):
        if folder is not None and not Path(folder).is_dir():
            state = "is not a folder" if Path(folder).exists() else "does not exist"
            raise EdgeclfError(f"{folder}: {name} {state}")
    for folder in (cfg.data_dir, cfg.val_dir):
        if folder is not None:  # the layout and the class names, at once rather than after TensorFlow's start
            check_class_names(scan_class_folders(folder)[0], folder)
    if cfg.val_dir is not None and Path(cfg.val_dir).resolve() == Path(cfg.data_dir).resolve():
        raise EdgeclfError(f"{cfg.val_dir}: --val is the training folder itself; validation needs other images")
    out = Path(cfg.out).resolve()
    for folder in (cfg.data_dir, cfg.val_dir):
        # A run folder inside the data would become a class folder, or its plots training images.
        if folder is not None and out.is_relative_to(Path(folder).resolve()):
            raise EdgeclfError(f"{cfg.out}: --out is inside the image folder {folder}; put the run elsewhere")


def check_run_folder(cfg: TrainConfig) -> None:
    """``--out`` can take this run: free (or --force, or --resume with something to resume), a
    folder, writable. Creates it."""
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise EdgeclfError(f"{out}: --out exists and is not a folder")
    task = cluster_task()
    if task is not None:
        if cfg.resume:
            raise EdgeclfError("--resume is for one-process runs: a multi-worker run continues from its backup when every "
                               "worker is started again with the same command (without --resume)")
        out = task.scratch(out) if not task.is_chief else out  # a worker's own temporary folder; the chief's run folder
        if (out / BACKUP_DIR).is_dir() and not cfg.force:
            check_writable_folder(out, "--out")  # a killed run's backup: training continues from it
            return
    held = [name for name in RUN_FILES if (out / name).exists()]
    if cfg.resume:
        if not (out / "last.keras").exists() or not (out / "state.json").exists():
            raise EdgeclfError(f"{out}: nothing to resume (no last.keras/state.json); train without --resume")
    elif held and not cfg.force:
        what = "a trained model" if {"model.keras", "last.keras"} & set(held) else ", ".join(held)
        raise EdgeclfError(f"{out}: already holds {what}; use --force to overwrite or --resume to continue")
    check_writable_folder(out, "--out")


def check_writable_folder(out: Path, option: str) -> None:
    """Create ``out`` if needed and prove a file can be written in it; one-line error if not."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write_test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise EdgeclfError(f"{out}: cannot write to the {option} folder ({e.strerror or e})") from None


def precheck(cfg: TrainConfig) -> None:
    """All the checks that need no TensorFlow, for the CLI to run before importing it. With
    ``resume``, also fills the options left unset with the run's own (see resume_options)."""
    check_options(cfg)
    check_run_folder(cfg)
    if cfg.resume:
        resume_options(cfg, read_state(Path(cfg.out) / "state.json")["config"])


def read_state(path: Path) -> dict:
    """state.json of an unfinished run, checked enough that resuming cannot fail half-way on it."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise EdgeclfError(f"{path}: cannot read the state to resume from ({first_line(e)})") from None
    ok = (isinstance(state, dict) and isinstance(state.get("config"), dict) and isinstance(state.get("history"), list)
          and isinstance(state.get("best"), dict) and isinstance(state["best"].get("val_accuracy"), (int, float))
          and isinstance(state.get("data_fingerprint"), str)
          and all(isinstance(state.get(k), int) and state[k] >= 0 for k in ("epoch", "stage", "wait", ))
          and isinstance(state["best"].get("epoch"), int))
    if not ok:
        raise EdgeclfError(f"{path}: not a resume state written by edgeclf train; start over with --force")
    return state


def spelling(name: str, value) -> str:
    """How the command line spells an option and its value, for messages."""
    if name in ("augment", "refit"):
        return f"--{name}" if value else f"--no-{name}"
    return f"--{'val' if name == 'val_dir' else name.replace('_', '-')} {value}"


def resume_options(cfg: TrainConfig, recorded: dict) -> None:
    """--resume continues a run as it was started: the options left out take the run's recorded
    values, and one given with a different value is an error (changing the epochs, the learning
    rate schedule or the split half-way would make a run no command line describes)."""
    for name in RUN_OPTIONS:
        if name not in recorded or (name == "refit" and cfg.refit is not None):
            continue  # a state.json from an older edgeclf, or the refit (which comes after the run): the command line decides
        was, given = recorded[name], getattr(cfg, name)
        if name == "val_dir":
            was = Path(was) if was else None
            same = given is None or (was is not None and Path(given).resolve() == was)
        else:
            same = given is None or json.loads(json.dumps(given)) == was  # tuples read back as lists
        if not same:
            raise EdgeclfError(f"{cfg.out}: --resume continues the run with its own options, and {spelling(name, given)} "
                               f"differs from the run's {spelling(name, was) if was is not None else 'default'} "
                               "(leave it out, or start over with --force)")
        if given is None:
            setattr(cfg, name, was)
