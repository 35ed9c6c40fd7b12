"""Classifier: an exported edgeclf ONNX model in an onnxruntime session.

Loads the model and its metadata (class names, input size, colour order), picks the execution
providers (TensorRT, CUDA or CPU), and classifies BGR images as OpenCV reads them, with the same
preprocessing as training. ``predict`` and ``predict_batch`` are safe to call from several threads
at once: onnxruntime's ``InferenceSession.run`` is thread-safe and preprocessing keeps no state.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import onnxruntime as ort

from . import metadata as md
from . import providers as prov
from .errors import EdgeclfError, first_line
from .images import to_bgr8
from .preprocess import resize_rgb

_DTYPES = {"tensor(uint8)": np.uint8, "tensor(float)": np.float32, "tensor(float16)": np.float16}


@dataclass(frozen=True)
class Prediction:
    """One image's result: the top class, its probability, and every class's probability."""

    label: str
    index: int
    score: float
    probs: dict[str, float]

    def top(self, k: int) -> list[tuple[str, float]]:
        """The ``k`` most probable classes as (label, probability), best first."""
        return sorted(self.probs.items(), key=lambda kv: -kv[1])[: max(1, k)]

    @classmethod
    def from_probs(cls, probs: np.ndarray, class_names: Sequence[str]) -> "Prediction":
        i = int(np.argmax(probs))
        return cls(class_names[i], i, float(probs[i]), {c: float(p) for c, p in zip(class_names, probs)})


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


class Classifier:
    """An image classifier exported by ``edgeclf export``.

    ``provider``: "auto" (TensorRT, then CUDA, then CPU, whichever is installed), "cpu", "cuda" or
    "tensorrt"; a missing one falls back to CPU with a warning, or raises with ``strict``.
    ``threads``: CPU intra-op threads (default: the usable cores, at most 4). ``device_id``: the GPU.
    ``spin``: let idle worker threads busy-wait (onnxruntime's default). Off by default: a device
    shares its cores with capture, decoding and serving, and spinning workers take the CPU they
    need; measured on the default model (benchmarks/results/ort_session.md), not spinning gave a
    lower p50, a shorter tail and more throughput both beside a co-tenant and on the shared
    development machine. Turn it on only for a core budget nothing else touches.
    ``labels`` and ``size`` (height, width) are only needed for models without edgeclf metadata.
    ``self.providers`` lists what actually runs.
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        provider: str = "auto",
        threads: int | None = None,
        labels: Sequence[str] | None = None,
        size: tuple[int, int] | None = None,
        device_id: int = 0,
        strict: bool = False,
        fp16: bool = True,
        spin: bool = False,
        warn: Callable[[str], None] = _warn,
    ) -> None:
        self.path = Path(model_path)
        if not self.path.exists():
            raise EdgeclfError(f"{self.path}: model file does not exist")
        if not self.path.is_file():
            raise EdgeclfError(f"{self.path}: not a file (expected an .onnx model)")
        if threads is not None and threads < 1:
            raise EdgeclfError(f"--threads must be at least 1 (got {threads})")
        plan = prov.plan_providers(provider, ort.get_available_providers(), self.path, device_id, fp16, strict)
        if plan.warning:
            warn(plan.warning)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.threads = threads or prov.default_threads()
        opts.intra_op_num_threads = self.threads
        self.session_config = prov.cpu_session_config(spin)
        for key, value in self.session_config.items():
            opts.add_session_config_entry(key, value)
        if any(name == prov.TENSORRT for name in plan.names):
            prov.tensorrt_cache_dir(self.path).mkdir(parents=True, exist_ok=True)
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=plan.providers)
        except Exception as e:  # onnxruntime raises several types for a bad file
            raise EdgeclfError(f"{self.path}: not a loadable ONNX model ({first_line(e)})") from None
        self.providers: list[str] = self.session.get_providers()
        wanted = prov.PROVIDERS.get(provider.lower())
        if wanted and wanted in plan.names and wanted not in self.providers:
            # Listed as available, but failed to initialise (missing CUDA/TensorRT libraries).
            msg = f"provider {provider!r} failed to start; running on {', '.join(prov.short_names(self.providers))}"
            if strict:
                raise EdgeclfError(msg)
            warn(msg)
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)

        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        if inp.type not in _DTYPES:
            raise EdgeclfError(f"{self.path}: model input {inp.name!r} has type {inp.type}, not an image tensor (uint8 or float)")
        self.input_dtype = _DTYPES[inp.type]
        if len(inp.shape) != 4 or inp.shape[3] != 3:
            raise EdgeclfError(f"{self.path}: model input {inp.name!r} {inp.shape} is not an NHWC RGB image tensor [N, H, W, 3]")
        out = self.session.get_outputs()[0]
        self.output_name = out.name
        if len(out.shape) != 2:
            raise EdgeclfError(f"{self.path}: model output {out.name!r} {out.shape} is not [N, classes] probabilities")

        if labels is None and md.CLASS_NAMES in self.metadata:
            labels = json.loads(self.metadata[md.CLASS_NAMES])
        if size is None and md.INPUT_HEIGHT in self.metadata:
            size = (int(self.metadata[md.INPUT_HEIGHT]), int(self.metadata[md.INPUT_WIDTH]))
        if size is None and all(isinstance(d, int) and d > 0 for d in inp.shape[1:3]):
            size = (int(inp.shape[1]), int(inp.shape[2]))
        if labels is None or size is None:
            missing = " and ".join(n for n, v in (("class names", labels), ("input size", size)) if v is None)
            raise EdgeclfError(f"{self.path}: model has no edgeclf metadata ({missing}); pass labels and size")
        if isinstance(out.shape[1], int) and out.shape[1] != len(labels):
            raise EdgeclfError(f"{self.path}: model has {out.shape[1]} outputs but {len(labels)} class names")
        colour = self.metadata.get(md.COLOR_ORDER, "RGB").upper()
        if colour != "RGB":
            raise EdgeclfError(f"{self.path}: colour order {colour!r} is not supported (edgeclf models take RGB)")
        self.class_names = list(labels)
        self.size = (int(size[0]), int(size[1]))

    def __repr__(self) -> str:
        return f"Classifier({str(self.path)!r}, providers={prov.short_names(self.providers)}, size={self.size}, classes={len(self.class_names)})"

    def preprocess(self, image_bgr: np.ndarray) -> np.ndarray:
        """BGR image as OpenCV reads it -> RGB uint8 at the model's input size (training's resize)."""
        return resize_rgb(image_bgr, self.size)

    def predict_arrays(self, batch_rgb: np.ndarray) -> np.ndarray:
        """Probabilities [N, classes] for preprocessed RGB uint8 images [N, H, W, 3]."""
        return self.session.run([self.output_name], {self.input_name: batch_rgb.astype(self.input_dtype, copy=False)})[0]

    def predict(self, image_bgr: np.ndarray) -> Prediction:
        """Classify one BGR image (any size; grey, alpha and 16-bit are converted first)."""
        return self.predict_batch([image_bgr])[0]

    def predict_batch(self, images_bgr: Sequence[np.ndarray]) -> list[Prediction]:
        """Classify several BGR images in one inference call."""
        if len(images_bgr) == 0:
            return []
        batch = np.stack([self.preprocess(to_bgr8(img)) for img in images_bgr])
        return self.predictions(self.predict_arrays(batch))

    def predictions(self, probs: np.ndarray) -> list[Prediction]:
        """``Prediction`` objects for rows of probabilities from ``predict_arrays``."""
        return [Prediction.from_probs(p, self.class_names) for p in probs]
