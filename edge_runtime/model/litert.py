"""LiteRT (TensorFlow Lite) models in the runtime.

``edgeclf export --format tflite`` writes ``model.int8.tflite``: where LiteRT's int8 kernels are
faster than onnxruntime's (benchmarks/results/engines.md), ``predict``, ``eval`` and ``bench`` run
it through ``ai-edge-litert`` (the optional ``litert`` extra; the base install does not need it).
``LiteRTSession`` offers the small part of onnxruntime's ``InferenceSession`` that ``Classifier``
uses, so everything above the session is the same for both engines.

The model's metadata (class names, input size, precision: the keys of ``metadata``) travels inside
the ``.tflite`` file, in a zip archive appended after the flatbuffer: LiteRT reads the flatbuffer
from the start and ignores what follows, which is how TFLite's own metadata packs associated files.
One file to copy to the device, readable with the standard library.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import threading
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from edgeclf.errors import EdgeclfError, first_line
from edgeclf.model import metadata as md
from edgeclf.model.nodes import ModelMeta, NodeArg
from edgeclf.quiet import captured_output

SUFFIX = ".tflite"
#: What ``Classifier.providers`` lists for a LiteRT model (onnxruntime's list holds provider names).
ENGINE = "LiteRT"
METADATA_MEMBER = "edgeclf/metadata.json"
_MAX_METADATA_BYTES = 1 << 20  # a few kB in practice; a bigger member is not edgeclf's
#: Interpreters kept per session, one per batch size seen (resizing one in place re-plans the graph).
MAX_BATCH_SIZES = 4
INSTALL_HINT = "pip install 'edgeclf[litert]'"

_TYPES = {np.uint8: "tensor(uint8)", np.int8: "tensor(int8)", np.float32: "tensor(float)", np.float16: "tensor(float16)"}


def is_tflite(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() == SUFFIX


def with_metadata(payload: bytes, metadata: Mapping[str, str]) -> bytes:
    """``payload`` (a .tflite flatbuffer) with ``metadata`` appended as a zip archive."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(METADATA_MEMBER, json.dumps(dict(metadata), sort_keys=True))
    return payload + buf.getvalue()


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata ``with_metadata`` appended to ``path``; {} when there is none (a .tflite from
    elsewhere). A one-line error when the archive is there but unreadable or not string pairs."""
    try:
        z = zipfile.ZipFile(path)
    except zipfile.BadZipFile:  # no archive appended: a .tflite from elsewhere
        return {}
    except (OSError, ValueError, RuntimeError, EOFError, zipfile.LargeZipFile) as e:
        raise EdgeclfError(f"{path}: unreadable edgeclf metadata ({first_line(e)})") from None
    try:
        with z:
            if METADATA_MEMBER not in z.namelist():
                return {}
            info = z.getinfo(METADATA_MEMBER)
            if info.file_size > _MAX_METADATA_BYTES:
                raise EdgeclfError(f"{path}: edgeclf metadata is {info.file_size} bytes (at most {_MAX_METADATA_BYTES})")
            with z.open(info) as f:
                text = f.read(_MAX_METADATA_BYTES + 1)  # the declared size may lie: read no more than the bound
    except (zipfile.BadZipFile, OSError, ValueError, RuntimeError, EOFError, zipfile.LargeZipFile) as e:
        # the archive is there but damaged: a bad CRC (its member holds other bytes than it declares), a bad header
        raise EdgeclfError(f"{path}: unreadable edgeclf metadata ({first_line(e)})") from None
    try:
        meta = json.loads(text[:_MAX_METADATA_BYTES])
    except (ValueError, RecursionError):
        raise EdgeclfError(f"{path}: edgeclf metadata is not valid JSON") from None
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise EdgeclfError(f"{path}: edgeclf metadata is not an object of strings")
    return meta


def interpreter_class() -> type:
    """ai-edge-litert's Interpreter, or a one-line error saying how to install it."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise EdgeclfError(f"running .tflite models needs ai-edge-litert, which is not installed: {INSTALL_HINT}") from None
    return Interpreter


def version() -> str:
    """"ai-edge-litert 2.3.0", for reports."""
    from importlib import metadata

    try:
        return f"ai-edge-litert {metadata.version('ai-edge-litert')}"
    except metadata.PackageNotFoundError:
        return "ai-edge-litert (not installed)"


def available() -> bool:
    """Whether ai-edge-litert is installed (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("ai_edge_litert") is not None


def _node(name: str, shape: Sequence[int | None], dtype: Any) -> NodeArg:
    return NodeArg(name, shape, _TYPES.get(np.dtype(dtype).type, f"tensor({np.dtype(dtype).name})"))


class LiteRTSession:
    """A .tflite model behind ``run``, ``get_inputs``, ``get_outputs``, ``get_modelmeta`` and
    ``get_providers``, like an onnxruntime session: one image input named ``metadata.INPUT_NAME``
    (its batch dimension free), one output named ``metadata.OUTPUT_NAME``; quantized input and
    output tensors are converted here, so callers feed uint8 pixels and read float probabilities.
    ``run`` is safe from several threads (one at a time: an interpreter holds its tensors)."""

    def __init__(self, path: str | os.PathLike, threads: int, interpreter: type | None = None) -> None:
        self.path = Path(path)
        self.threads = threads
        self._interpreter = interpreter or interpreter_class()
        self._metadata = read_metadata(self.path)
        self._by_batch: OrderedDict[int, tuple[Any, dict, dict]] = OrderedDict()
        self._lock = threading.Lock()
        it, inp, out = self._open(None, quiet=True)
        if len(it.get_input_details()) != 1 or len(it.get_output_details()) != 1:
            raise EdgeclfError(f"{self.path}: model has {len(it.get_input_details())} inputs and "
                               f"{len(it.get_output_details())} outputs; edgeclf models have one of each")
        sig = list(inp.get("shape_signature", inp["shape"]))
        self._batch_fixed = sig[0] != -1
        dims = [int(sig[0]) if self._batch_fixed else None, *[None if d == -1 else int(d) for d in sig[1:]]]
        self._input = _node(md.INPUT_NAME, dims, inp["dtype"])
        self._output = _node(md.OUTPUT_NAME, [None, *[int(d) for d in out["shape"][1:]]], np.float32)
        self._by_batch[int(inp["shape"][0])] = (it, inp, out)

    def _open(self, batch: int | None, quiet: bool = False) -> tuple[Any, dict, dict]:
        """A new interpreter, resized to ``batch`` images when given, its tensors allocated.
        ``quiet``: swallow what LiteRT prints (an INFO line on stderr, once per process, at the
        first interpreter); only then, as capturing swaps the process's file descriptors, and
        later interpreters open mid-stream while other threads print results and logs."""
        try:
            with captured_output() if quiet else contextlib.nullcontext():
                it = self._interpreter(model_path=str(self.path), num_threads=self.threads)
                inp = it.get_input_details()[0]
                if batch is not None and inp["shape"][0] != batch:
                    it.resize_tensor_input(inp["index"], [batch, *inp["shape"][1:]])
                it.allocate_tensors()
        except EdgeclfError:
            raise
        except Exception as e:  # LiteRT raises ValueError and RuntimeError for a bad file
            raise EdgeclfError(f"{self.path}: not a loadable LiteRT model ({first_line(e)})") from None
        return it, it.get_input_details()[0], it.get_output_details()[0]

    def _for_batch(self, n: int) -> tuple[Any, dict, dict]:
        if n not in self._by_batch:
            if len(self._by_batch) >= MAX_BATCH_SIZES:
                self._by_batch.popitem(last=False)
            self._by_batch[n] = self._open(n)
        self._by_batch.move_to_end(n)
        return self._by_batch[n]

    # ------------------------------------------------------------------ onnxruntime's API
    def get_inputs(self) -> list[NodeArg]:
        return [self._input]

    def get_outputs(self) -> list[NodeArg]:
        return [self._output]

    def get_modelmeta(self) -> ModelMeta:
        return ModelMeta(dict(self._metadata))

    def get_providers(self) -> list[str]:
        return [ENGINE]

    def run(self, output_names: Sequence[str] | None, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """[probabilities] for ``feed[metadata.INPUT_NAME]`` ([N, H, W, 3])."""
        for name in output_names or ():
            if name != self._output.name:
                raise EdgeclfError(f"{self.path}: LiteRT model has no output {name!r}")
        x = feed[self._input.name]
        with self._lock:
            it, inp, out = self._for_batch(len(x))
            it.set_tensor(inp["index"], _quantized(x, inp))
            it.invoke()
            y = it.get_tensor(out["index"])
        return [_dequantized(y, out)]


def _quantized(x: np.ndarray, detail: dict) -> np.ndarray:
    """``x`` as the input tensor takes it: uint8 pixels pass as they are when its scale is 1 and
    zero point 0 (real calibration photos span 0-255), else they are requantized."""
    dtype = detail["dtype"]
    if np.issubdtype(dtype, np.floating):
        return np.ascontiguousarray(x, dtype=dtype)
    scale, zero = detail["quantization"]
    if x.dtype == dtype and scale in (0.0, 1.0) and zero == 0:
        return np.ascontiguousarray(x)
    info = np.iinfo(dtype)
    return np.clip(np.round(x.astype(np.float32) / scale + zero), info.min, info.max).astype(dtype)


def _dequantized(y: np.ndarray, detail: dict) -> np.ndarray:
    if np.issubdtype(detail["dtype"], np.floating):
        return y.astype(np.float32, copy=True)  # the interpreter reuses its buffer on the next call
    scale, zero = detail["quantization"]
    return (y.astype(np.float32) - zero) * scale
