"""A trained Keras model: a run folder written by ``edgeclf train`` or a bare ``.keras`` file.

Found and validated here (run.json read before TensorFlow loads), then exported by
``edgeclf.export`` or classified by ``edgeclf eval`` (registered as the ``keras`` model loader)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeclf.errors import EdgeclfError, first_line
from edgeclf.image import resize_of

from .run_record import RUN_JSON, RunRecord, read_run_record


@dataclass
class RunSource:
    """A Keras model file and what its run recorded about it (``record`` is None for a bare model):
    what ``export`` converts and ``eval`` classifies with."""

    model_path: Path
    record: RunRecord | None = None

    @property
    def class_names(self) -> list[str] | None:
        return self.record.class_names if self.record else None

    @property
    def architecture(self) -> str:
        return self.record.architecture if self.record else "unknown"

    @property
    def weights(self) -> dict | None:
        """Where a pretrained backbone's weights came from (run.json), for the model's provenance."""
        w = self.record.weights if self.record else None
        return w if isinstance(w, dict) else None

    @property
    def resize(self) -> str:
        """The resize rule the model was trained with (``edgeclf.image.RESIZES``), as run.json records it."""
        return resize_of(self.record.preprocessing if self.record else None)

    @property
    def val_accuracy(self) -> float | None:
        return self.record.val_accuracy if self.record else None

    @property
    def refitted(self) -> bool:
        """Whether the model was trained again on every photo, the validation split's included (train.refit)."""
        return bool(self.record and self.record.refitted)

    def split_paths(self, split: str) -> list[Path]:
        """Files of a split recorded in run.json (``train`` or ``val``); [] when none."""
        return self.record.split_paths(split) if self.record else []

    def label_of(self, path: Path) -> int | None:
        """Class index of a split file: its class folder is the first part below data_dir or val_dir."""
        names = self.class_names or []
        for root in (self.record.val_dir, self.record.data_dir) if self.record else ():
            if not root:
                continue
            try:
                first = path.relative_to(root).parts[0]
            except (ValueError, IndexError):
                continue
            if first in names:
                return names.index(first)
        return names.index(path.parent.name) if path.parent.name in names else None


def resolve_source(source: str | os.PathLike) -> RunSource:
    """A run folder (``model.keras`` + ``run.json``) or a ``.keras`` file (run.json beside it is used).

    run.json is validated here, before TensorFlow loads: a tampered one is a one-line error."""
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
    run_json = model_path.parent / RUN_JSON
    if run_json.is_file():
        return RunSource(model_path, read_run_record(run_json))
    if source.is_dir():
        raise EdgeclfError(f"{source}: not a run folder (no run.json inside)")
    return RunSource(model_path)


def load_keras_model(path: Path):
    """Load a Keras 3 model for inference; a file Keras cannot read is a one-line error."""
    from .tf_quiet import import_tensorflow_quietly

    import_tensorflow_quietly()
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


@dataclass
class KerasModel:
    """A trained model with what is known about it (run.json, when there is one)."""

    model: object  # keras.Model
    path: Path  # the .keras file
    record: RunRecord | None  # run.json, validated; None for a bare .keras file
    size: tuple[int, int]
    class_names: list[str] | None
    num_classes: int
    resize: str  # the resize rule it was trained with (``RunSource.resize``)

    def predict(self, batch_rgb: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Probabilities for RGB uint8 images [N, H, W, 3] at the model's input size."""
        return np.asarray(self.model.predict(batch_rgb.astype(np.float32), batch_size=batch_size, verbose=0))

    def embed(self, batch_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, embeddings: the input of the ``probs`` layer) for RGB uint8 images, as
        the exported model's two outputs (``edgeclf eval --unknown`` judges Keras with them)."""
        net = self.__dict__.get("_embedding_net") or self.__dict__.setdefault("_embedding_net", with_embedding(self.model))
        if net is self.model:
            raise EdgeclfError(f"{self.path}: the model has no 'probs' layer to take an embedding from")
        probs, emb = net(batch_rgb.astype(np.float32), training=False)
        return np.asarray(probs, np.float32), np.asarray(emb, np.float32)


def load(path: Path) -> KerasModel:
    """Load a run folder or .keras file; raises EdgeclfError in one line when it is not one."""
    src = resolve_source(path)
    model = load_keras_model(src.model_path)
    return KerasModel(model, src.model_path, src.record, input_size_of(model, src.model_path), src.class_names,
                      int(model.outputs[0].shape[-1]), src.resize)


def with_embedding(model):
    """``model`` with a second output, the [N, D] input of its ``probs`` layer (the embedding the
    unknown score measures), or ``model`` itself when it has no such layer (a bare .keras file)."""
    import keras

    try:
        features = model.get_layer("probs").input
    except (ValueError, AttributeError):
        return model
    if len(getattr(features, "shape", ())) != 2:
        return model
    return keras.Model(model.inputs, [model.output, features], name=model.name)
