"""A trained Keras model (a run folder or a .keras file) ready to classify, for ``edgeclf eval``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .run_record import RunRecord


@dataclass
class KerasModel:
    """A trained model with what is known about it (run.json, when there is one)."""

    model: object  # keras.Model
    path: Path  # the .keras file
    record: RunRecord | None  # run.json, validated; None for a bare .keras file
    size: tuple[int, int]
    class_names: list[str] | None
    num_classes: int

    def predict(self, batch_rgb: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Probabilities for RGB uint8 images [N, H, W, 3] at the model's input size."""
        return np.asarray(self.model.predict(batch_rgb.astype(np.float32), batch_size=batch_size, verbose=0))


def load(path: Path) -> KerasModel:
    """Load a run folder or .keras file; raises EdgeclfError in one line when it is not one."""
    from edgeclf.export.source import input_size_of, load_keras_model, resolve_source

    src = resolve_source(path)
    model = load_keras_model(src.model_path)
    return KerasModel(model, src.model_path, src.record, input_size_of(model, src.model_path), src.class_names,
                      int(model.outputs[0].shape[-1]))
