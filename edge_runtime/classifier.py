"""Classifier: an exported edgeclf ONNX model in an onnxruntime session.

First version (issue 2/3 scaffolding): CPU session, metadata, batch inference on preprocessed
arrays. Issue 4 extends it (providers, threads, Prediction objects, thread safety).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import onnxruntime as ort

from . import metadata as md
from .errors import EdgeclfError
from .preprocess import resize_rgb


class Classifier:
    """An image classifier exported by ``edgeclf export``.

    ``labels`` and ``size`` (height, width) are only needed for models without edgeclf metadata.
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        provider: str = "cpu",
        threads: int | None = None,
        labels: Sequence[str] | None = None,
        size: tuple[int, int] | None = None,
    ) -> None:
        self.path = Path(model_path)
        if not self.path.is_file():
            raise EdgeclfError(f"{self.path}: model file does not exist")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises several types for a bad file
            raise EdgeclfError(f"{self.path}: not a loadable ONNX model ({str(e).splitlines()[0][:120]})") from None
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_dtype = np.uint8 if inp.type == "tensor(uint8)" else np.float32
        if len(inp.shape) != 4 or inp.shape[3] != 3:
            raise EdgeclfError(f"{self.path}: model input {inp.name} {inp.shape} is not an NHWC RGB image tensor")
        if labels is None and md.CLASS_NAMES in self.metadata:
            labels = json.loads(self.metadata[md.CLASS_NAMES])
        if size is None and md.INPUT_HEIGHT in self.metadata:
            size = (int(self.metadata[md.INPUT_HEIGHT]), int(self.metadata[md.INPUT_WIDTH]))
        if size is None and all(isinstance(d, int) for d in inp.shape[1:3]):
            size = (int(inp.shape[1]), int(inp.shape[2]))
        if labels is None or size is None:
            raise EdgeclfError(f"{self.path}: model has no edgeclf metadata; pass labels and size")
        self.class_names = list(labels)
        self.size = size

    def preprocess(self, image_bgr: np.ndarray) -> np.ndarray:
        return resize_rgb(image_bgr, self.size)

    def predict_arrays(self, batch_rgb: np.ndarray) -> np.ndarray:
        """Probabilities [N, classes] for preprocessed RGB uint8 images [N, H, W, 3]."""
        return self.session.run(None, {self.input_name: batch_rgb.astype(self.input_dtype, copy=False)})[0]
