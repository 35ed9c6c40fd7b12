"""run.json, the record of a training run: its one schema, written and read only here.

``edgeclf train`` writes it; ``export`` and ``eval`` read it. A run.json is a file like any
other: it may be hand-edited, truncated or hostile, so reading validates every field it holds
and fails in one line naming the file and the field. Writing never puts a bare ``NaN`` or
``Infinity`` in it (JSON has none): a non-finite number is written as null.

No TensorFlow here: export and eval check a run folder before they load TensorFlow.
"""

from __future__ import annotations

import json
import math
import os
import unicodedata
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from edgeclf.errors import EdgeclfError
from edgeclf.model.metadata import class_name_problem
from edgeclf.outfiles import write_text

RUN_JSON = "run.json"
MAX_RUN_JSON_BYTES = 256 << 20  # 100,000 split paths take ~10 MB; a bigger file is not edgeclf's


@dataclass
class RunRecord:
    """What ``run.json`` holds. ``class_names`` is the one field every reader needs; the rest
    defaults to "not recorded" so hand-made and older run.json files still load."""

    class_names: list[str]
    edgeclf_version: str | None = None
    architecture: str = "unknown"
    architecture_summary: str | None = None
    input_size: list[int] | None = None  # [height, width]
    color_order: str | None = None
    input_dtype: str | None = None
    preprocessing: dict = field(default_factory=dict)
    params: int | None = None
    macs: int | None = None
    seed: int | None = None
    epochs_requested: int | None = None
    epochs_run: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    patience: int | None = None
    augment: bool | None = None
    weight_decay: float | None = None
    weights: dict | str | None = None  # a pretrained backbone's provenance: {backbone, source, file, sha256, ...}
    linear_probe: dict | None = None  # LP-FT's head fit: {"l2", "cv_accuracy", "photos", "seconds"}
    wise_ft: dict | None = None  # {"share", "fine_tuned_epoch"}: the kept weights averaged with the probe's (train.wise)
    refit: dict | None = None  # {"photos", "epochs", "seconds"}: model.keras trained again on every photo (train.refit)
    model_choice: dict | None = None  # --model auto: {"budget_ms", "threads", "int8_latency_ms"}
    data_dir: str | None = None
    val_dir: str | None = None
    val_split: float | None = None
    counts: dict = field(default_factory=dict)  # {class: {"train": n, "val": n}}
    n_train: int | None = None
    n_val: int | None = None
    skipped: list[dict] = field(default_factory=list)  # [{"path", "reason"}]: unreadable and unsupported files
    best: dict = field(default_factory=dict)  # {"epoch", "val_accuracy", "val_loss"}
    final: dict = field(default_factory=dict)
    val_report: dict = field(default_factory=dict)
    stopped_early: bool = False
    interrupted: bool = False
    diverged: bool = False  # the loss became NaN/inf and training stopped
    train_seconds: float | None = None
    distribution: dict | None = None  # tf.distribute strategy and replicas
    versions: dict = field(default_factory=dict)
    splits: dict = field(default_factory=dict)  # {"train": [path, ...], "val": [path, ...]}

    @property
    def val_accuracy(self) -> float | None:
        """The kept model's validation accuracy (with WiSE-FT not the best epoch's own figure)."""
        accuracy = self.val_report.get("accuracy") if isinstance(self.val_report, dict) else None
        return accuracy if isinstance(accuracy, (int, float)) else self.best.get("val_accuracy")

    @property
    def refitted(self) -> bool:
        """Whether the kept model was trained again on every photo, the validation split's included."""
        return isinstance(self.refit, dict) and isinstance(self.refit.get("photos"), int)

    def split_paths(self, split: str) -> list[Path]:
        """Files of a split (``train`` or ``val``); [] when none was recorded."""
        return [Path(p) for p in self.splits.get(split, [])]

    def to_dict(self) -> dict:
        return _finite(asdict(self))

    def write(self, path: str | os.PathLike) -> None:
        """Write atomically; non-finite numbers become null."""
        write_text(path, json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")


# ------------------------------------------------------------------------------------------ names
def check_class_names(names: object, where: object) -> list[str]:
    """The rule for class names, wherever they come from (folder names, run.json): a list of at
    least 2 distinct, non-empty, printable strings that do not collide when case and Unicode
    normalisation are ignored (``Cats`` and ``cats`` would be the same folder on macOS and
    Windows, and read as one class in a report). Raises EdgeclfError naming ``where``."""
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise EdgeclfError(f"{where}: class names must be a list of strings (got {_short(names)})")
    if len(names) < 2:
        raise EdgeclfError(f"{where}: at least 2 class names are needed (got {_short(names)})")
    seen: dict[str, str] = {}
    for name in names:
        problem = class_name_problem(name)  # the runtime's rule: a model trained here is one predict loads
        if problem:
            raise EdgeclfError(f"{where}: class name {_short(name)} {problem}")
        key = unicodedata.normalize("NFC", name).casefold()
        if key in seen:
            same = "appears twice" if seen[key] == name else f"and {_short(seen[key])} differ only in case or Unicode form"
            raise EdgeclfError(f"{where}: class name {_short(name)} {same}; class names must be distinct")
        seen[key] = name
    return names


# ------------------------------------------------------------------------------------------ reading
def read_run_record(path: str | os.PathLike) -> RunRecord:
    """Read and validate ``path``; every problem is an EdgeclfError naming the file and the field."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_RUN_JSON_BYTES:
            raise EdgeclfError(f"{path}: {path.stat().st_size} bytes, more than a run.json can hold ({MAX_RUN_JSON_BYTES})")
        raw = json.loads(path.read_bytes().decode("utf-8"), parse_constant=_no_constant)
    except OSError as e:
        raise EdgeclfError(f"{path}: cannot read ({e.strerror or e})") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise EdgeclfError(f"{path}: not valid JSON ({e})") from None
    except RecursionError:
        raise EdgeclfError(f"{path}: not valid JSON (nested too deeply)") from None
    return record_from_dict(raw, path)


def record_from_dict(raw: object, path: object) -> RunRecord:
    """A RunRecord from run.json's parsed content, validated field by field (``path`` names it)."""
    if not isinstance(raw, dict):
        raise EdgeclfError(f"{path}: expected a JSON object, got {type(raw).__name__}")
    if "class_names" not in raw:
        raise EdgeclfError(f"{path}: no class_names field")
    known = {f.name for f in fields(RunRecord)}
    values = {}
    for key, value in raw.items():
        if key not in known:
            continue  # written by a newer edgeclf: not needed to read this one
        check = _CHECKS.get(key, _any)
        problem = check(value)
        if problem:
            raise EdgeclfError(f"{path}: field {key!r} {problem} (got {_short(value)})")
        values[key] = value
    check_class_names(values["class_names"], f"{path}: field 'class_names'")
    values.setdefault("architecture", "unknown")
    return RunRecord(**{k: v for k, v in values.items() if v is not None or k not in _NOT_NULL})


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


# Each check returns None when the value is acceptable, else what is wrong, in a few words.
Check = Callable[[Any], "str | None"]


def _opt(check: Check) -> Check:
    return lambda v: None if v is None else check(v)


def _is(kind: type, what: str) -> Check:
    # bool is an int in Python; a count or a size is never true/false.
    return lambda v: None if isinstance(v, kind) and not (kind is not bool and isinstance(v, bool)) else f"must be {what}"


def _number(low: float, high: float) -> Check:
    def check(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not low <= v <= high:
            return f"must be a number from {low} to {high}"
        return None
    return check


def _count(v) -> str | None:
    return None if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else "must be a whole number, 0 or more"


def _size(v) -> str | None:
    ok = isinstance(v, list) and len(v) == 2 and all(isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= 8192 for d in v)
    return None if ok else "must be [height, width] in pixels (1-8192)"


def _best(v) -> str | None:
    if not isinstance(v, dict):
        return "must be an object {epoch, val_accuracy, val_loss}"
    if "epoch" in v and _count(v["epoch"]):
        return "has an epoch that is not a whole number"
    if v.get("val_accuracy") is not None and _number(0, 1)(v["val_accuracy"]):
        return "has a val_accuracy that is not a number from 0 to 1"
    return None


def _splits(v) -> str | None:
    if not isinstance(v, dict):
        return "must be an object {train: [paths], val: [paths]}"
    for name in ("train", "val"):
        paths = v.get(name, [])
        if not isinstance(paths, list) or not all(isinstance(p, str) and p and "\0" not in p for p in paths):
            return f"must hold a list of file paths under {name!r}"
    return None


def _skipped(v) -> str | None:
    if not isinstance(v, list) or not all(isinstance(s, dict) and isinstance(s.get("path"), str) for s in v):
        return "must be a list of {path, reason} objects"
    return None


def _any(v) -> None:
    return None


_CHECKS: dict[str, Check] = {
    "class_names": _any,  # check_class_names says more precisely what is wrong
    "architecture": _is(str, "a string"),
    "input_size": _opt(_size),
    "data_dir": _opt(_is(str, "a folder path")),
    "val_dir": _opt(_is(str, "a folder path")),
    "val_split": _opt(_number(0, 1)),
    "best": _best,
    "final": _is(dict, "an object"),
    "splits": _splits,
    "skipped": _skipped,
    "counts": _is(dict, "an object"),
    "preprocessing": _is(dict, "an object"),
    "val_report": _is(dict, "an object"),
    "versions": _is(dict, "an object"),
    "params": _opt(_count),
    "macs": _opt(_count),
    "epochs_requested": _opt(_count),
    "epochs_run": _opt(_count),
    "batch_size": _opt(_count),
    "patience": _opt(_count),
    "n_train": _opt(_count),
    "n_val": _opt(_count),
    "seed": _opt(_is(int, "a whole number")),
    "lr": _opt(_number(0, math.inf)),
    "weight_decay": _opt(_number(0, math.inf)),
    "train_seconds": _opt(_number(0, math.inf)),
    "stopped_early": _is(bool, "true or false"),
    "interrupted": _is(bool, "true or false"),
    "diverged": _is(bool, "true or false"),
    "augment": _opt(_is(bool, "true or false")),
    "edgeclf_version": _opt(_is(str, "a string")),
    "architecture_summary": _opt(_is(str, "a string")),
    "color_order": _opt(_is(str, "a string")),
    "input_dtype": _opt(_is(str, "a string")),
    "weights": lambda v: None if v is None or isinstance(v, (str, dict)) else "must be a string or an object",
    "distribution": _opt(_is(dict, "an object")),
    "linear_probe": _opt(_is(dict, "an object")),
    "model_choice": _opt(_is(dict, "an object")),
    "wise_ft": _opt(_is(dict, "an object")),
    "refit": _opt(_is(dict, "an object")),
}
# Fields whose null means "not recorded": the dataclass default stands in for them.
_NOT_NULL = {f.name for f in fields(RunRecord) if f.default is not None}


def _finite(obj: Any) -> Any:
    """``obj`` with every NaN or infinity replaced by None, so the JSON written is standard."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _short(value: object, limit: int = 60) -> str:
    """``value`` as one short line of ASCII for an error message (control characters escaped)."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        text = ascii(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
