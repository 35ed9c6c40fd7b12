"""Finding what to export: a run folder written by ``edgeclf train``, or a bare ``.keras`` file."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from edge_runtime.errors import EdgeclfError, first_line


@dataclass
class ExportSource:
    """A Keras model file and what the run recorded about it (``run`` is {} for a bare model)."""

    model_path: Path
    run: dict = field(default_factory=dict)

    @property
    def class_names(self) -> list[str] | None:
        return self.run.get("class_names")

    @property
    def architecture(self) -> str:
        return str(self.run.get("architecture", "unknown"))

    @property
    def weights(self) -> dict | None:
        """Where a pretrained backbone's weights came from (run.json), for the model's provenance."""
        w = self.run.get("weights")
        return w if isinstance(w, dict) else None

    @property
    def val_accuracy(self) -> float | None:
        best = self.run.get("best") or {}
        return best.get("val_accuracy")

    def split_paths(self, split: str) -> list[Path]:
        """Files of a split recorded in run.json (``train`` or ``val``); [] when none."""
        return [Path(p) for p in (self.run.get("splits") or {}).get(split) or []]

    def label_of(self, path: Path) -> int | None:
        """Class index of a split file: its class folder is the first part below data_dir or val_dir."""
        names = self.class_names or []
        for root in (self.run.get("val_dir"), self.run.get("data_dir")):
            if not root:
                continue
            try:
                first = path.relative_to(root).parts[0]
            except (ValueError, IndexError):
                continue
            if first in names:
                return names.index(first)
        return names.index(path.parent.name) if path.parent.name in names else None


def resolve_source(source: str | os.PathLike) -> ExportSource:
    """A run folder (``model.keras`` + ``run.json``) or a ``.keras`` file (run.json beside it is used)."""
    source = Path(source)
    if not source.exists():
        raise EdgeclfError(f"{source}: does not exist (expected a run folder or a .keras model)")
    if source.is_dir():
        model_path = source / "model.keras"
        if not model_path.is_file():
            raise EdgeclfError(f"{source}: not a run folder (no model.keras inside)")
    elif source.suffix.lower() == ".keras":
        model_path = source
    else:
        raise EdgeclfError(f"{source}: not a run folder or a .keras model")
    run_json = model_path.parent / "run.json"
    run: dict = {}
    if run_json.is_file():
        try:
            run = json.loads(run_json.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise EdgeclfError(f"{run_json}: not valid JSON ({e})") from None
        if not isinstance(run, dict):
            raise EdgeclfError(f"{run_json}: expected a JSON object")
    elif source.is_dir():
        raise EdgeclfError(f"{source}: not a run folder (no run.json inside)")
    return ExportSource(model_path, run)


def load_keras_model(path: Path):
    """Load a Keras 3 model for inference; a file Keras cannot read is a one-line error."""
    import keras

    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as e:  # Keras raises many types (zip, JSON, deserialisation)
        raise EdgeclfError(f"{path}: not a loadable Keras model ({first_line(e)})") from None


def input_size_of(model, label: object) -> tuple[int, int]:
    """(height, width) of a Keras model's NHWC RGB input; ``label`` (its file) names it in the error."""
    shape = tuple(model.input_shape)
    if len(shape) != 4 or shape[3] != 3 or not all(isinstance(d, int) for d in shape[1:3]):
        raise EdgeclfError(f"{label}: model input shape {shape} is not a fixed-size NHWC RGB image")
    return int(shape[1]), int(shape[2])


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()

