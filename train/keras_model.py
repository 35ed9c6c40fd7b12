"""Loading a trained Keras model (a run folder or a .keras file) for evaluation and export."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_runtime.errors import EdgeclfError


@dataclass
class KerasModel:
    """A trained model with what is known about it (run.json, when there is one)."""

    model: object  # keras.Model
    path: Path  # the .keras file
    run: dict | None
    size: tuple[int, int]
    class_names: list[str] | None
    num_classes: int

    def predict(self, batch_rgb: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Probabilities for RGB uint8 images [N, H, W, 3] at the model's input size."""
        return np.asarray(self.model.predict(batch_rgb.astype(np.float32), batch_size=batch_size, verbose=0))


def resolve(path: Path) -> tuple[Path, dict | None]:
    """The .keras file and run.json (or None) for a run folder or a .keras path."""
    path = Path(path)
    if path.is_dir():
        model_path = path / "model.keras"
        if not model_path.is_file():
            raise EdgeclfError(f"{path}: not a run folder (no model.keras inside)")
    elif path.is_file():
        if path.suffix != ".keras":
            raise EdgeclfError(f"{path}: not a Keras model (expected a run folder or a .keras file)")
        model_path = path
    else:
        raise EdgeclfError(f"{path}: no such run folder or model file")
    run_json = model_path.parent / "run.json"
    run = None
    if run_json.is_file():
        try:
            run = json.loads(run_json.read_text())
        except (OSError, ValueError) as e:
            raise EdgeclfError(f"{run_json}: unreadable run.json ({e})") from None
    return model_path, run


def load(path: Path) -> KerasModel:
    """Load a run folder or .keras file; raises EdgeclfError in one line when it is not one."""
    import keras

    model_path, run = resolve(path)
    try:
        model = keras.models.load_model(model_path, compile=False)
    except Exception as e:  # Keras raises many types for a damaged or foreign file
        raise EdgeclfError(f"{model_path}: cannot load the Keras model ({str(e).splitlines()[0][:150]})") from None
    shape = model.inputs[0].shape
    if len(shape) != 4 or shape[3] != 3 or shape[1] is None:
        raise EdgeclfError(f"{model_path}: model input {tuple(shape)} is not a fixed-size RGB image")
    num_classes = int(model.outputs[0].shape[-1])
    class_names = list(run["class_names"]) if run else None
    return KerasModel(model, model_path, run, (int(shape[1]), int(shape[2])), class_names, num_classes)
