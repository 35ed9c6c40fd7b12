"""OpenVINO as an engine for edgeclf's ONNX models.

On x86 CPUs OpenVINO runs edgeclf's own int8 ONNX file faster than onnxruntime when the machine is
idle (benchmarks/results/engines.md: 0.75x onnxruntime's time at 2 threads, 0.90x at 1), and it
runs the whole graph, the unknown score included. Where it pays is a question for the device:
``edgeclf bench FOLDER --engines`` times it beside the others, and ``predict`` runs it where it won.
It is optional (``pip install 'edgeclf[openvino]'``). ``OpenVINOSession`` offers the part of
onnxruntime's session API that ``Classifier`` uses, as ``litert.LiteRTSession`` does; the model's
metadata is read from the ONNX file itself (``protoedit.read_metadata``).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeclf.errors import EdgeclfError, first_line
from edgeclf.model.nodes import ModelMeta, NodeArg
from edgeclf.model.protoedit import read_metadata

ENGINE = "OpenVINO"
INSTALL_HINT = "pip install 'edgeclf[openvino]'"
#: Models compiled per session, one per batch size seen: a static shape compiles to faster kernels
#: than a dynamic one, and compiling again per call would cost hundreds of milliseconds.
MAX_BATCH_SIZES = 4
_TYPES = {"u8": "tensor(uint8)", "f32": "tensor(float)", "f16": "tensor(float16)", "i64": "tensor(int64)"}
_MAX_MODEL_BYTES = 2 << 30


def available() -> bool:
    """Whether OpenVINO is installed (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


def version() -> str:
    from importlib import metadata

    try:
        return f"OpenVINO {metadata.version('openvino')}"
    except metadata.PackageNotFoundError:
        return "OpenVINO (not installed)"


class OpenVINOSession:
    """An ONNX model compiled by OpenVINO for the CPU at ``threads`` threads, behind ``run``,
    ``get_inputs``, ``get_outputs``, ``get_modelmeta`` and ``get_providers``. ``run`` is safe from
    several threads (one run at a time: an infer request holds its tensors)."""

    def __init__(self, path: str | os.PathLike, threads: int) -> None:
        try:
            import openvino as ov
        except ImportError:
            raise EdgeclfError(f"running a model on OpenVINO needs openvino, which is not installed: {INSTALL_HINT}") from None
        self.path = Path(path)
        self.threads = threads
        if self.path.stat().st_size > _MAX_MODEL_BYTES:
            raise EdgeclfError(f"{self.path}: {self.path.stat().st_size} bytes, larger than edgeclf reads")
        try:  # protoedit's own errors for a file that is not protobuf (e.g. "unsupported wire type 4") too
            self._metadata = read_metadata(self.path.read_bytes())
            self._core = ov.Core()
            self._model = self._core.read_model(str(self.path))
        except Exception as e:  # OpenVINO raises RuntimeError and its own types for a bad file
            raise EdgeclfError(f"{self.path}: not a model OpenVINO can read ({first_line(e)})") from None
        self._inputs = [_node(p) for p in self._model.inputs]
        self._outputs = [_node(p) for p in self._model.outputs]
        self._compiled: OrderedDict[int, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
                        # float32 where the model is float: bf16 on CPUs that have it would change the answers
                        "INFERENCE_PRECISION_HINT": "f32"}
        self._for_batch(1)  # compiled now: a model OpenVINO cannot compile fails at start, not mid-stream

    def _for_batch(self, n: int) -> Any:
        """The infer request for ``n`` images (compiled on first use)."""
        if n not in self._compiled:
            if len(self._compiled) >= MAX_BATCH_SIZES:
                self._compiled.popitem(last=False)
            model = self._model.clone()
            name = self._inputs[0].name
            try:  # -1: a dimension the graph leaves dynamic (height and width may be)
                model.reshape({name: [n, *[-1 if d is None else d for d in self._inputs[0].shape[1:]]]})
                compiled = self._core.compile_model(model, "CPU", self._config)
            except Exception as e:  # noqa: BLE001 - OpenVINO's own types
                raise EdgeclfError(f"{self.path}: OpenVINO cannot compile this model ({first_line(e)})") from None
            self._compiled[n] = compiled.create_infer_request()
        self._compiled.move_to_end(n)
        return self._compiled[n]

    def get_inputs(self) -> list[NodeArg]:
        return list(self._inputs)

    def get_outputs(self) -> list[NodeArg]:
        return list(self._outputs)

    def get_modelmeta(self) -> ModelMeta:
        return ModelMeta(dict(self._metadata))

    def get_providers(self) -> list[str]:
        return [ENGINE]

    def run(self, output_names: Sequence[str] | None, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        names = list(output_names or [o.name for o in self._outputs])
        x = feed[self._inputs[0].name]
        with self._lock:
            request = self._for_batch(len(x))
            request.infer({0: np.ascontiguousarray(x)})
            return [np.array(request.get_tensor(name).data, copy=True) for name in names]


def _node(port: Any) -> NodeArg:
    """An OpenVINO model port as onnxruntime's ``NodeArg``."""
    return NodeArg(port.get_any_name(), _dims(port.get_partial_shape()),
                   _TYPES.get(port.get_element_type().get_type_name(), "?"))


def _dims(shape: Any) -> list:
    """An OpenVINO partial shape as onnxruntime lists one: ints, None where dynamic."""
    return [d.get_length() if d.is_static else None for d in shape]
