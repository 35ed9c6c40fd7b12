"""LiteRT (TensorFlow Lite) models in the runtime.

``edgeclf export --format tflite`` writes ``model.int8.tflite``: where LiteRT's int8 kernels are
faster than onnxruntime's (benchmarks/results/engines.md), ``predict``, ``eval`` and ``bench`` run
it through ``ai-edge-litert`` (the optional ``litert`` extra; the base install does not need it).
``LiteRTSession`` offers the small part of onnxruntime's ``InferenceSession`` that ``Classifier``
uses, so everything above the session is the same for both engines.

The model's metadata (class names, input size, precision: the keys of ``metadata``) travels inside
the ``.tflite`` file, in a zip archive appended after the flatbuffer: LiteRT reads the flatbuffer
from the start and ignores what follows, which is how TFLite's own metadata packs associated files.
One file to copy to the device, readable with the standard library. Where the export gave it the
unknown score, the model has a second output, the embedding, and the archive holds the training
photos' embeddings (an ``.npy`` array, read without pickle): the session computes the score from
them as the ONNX graph does, so a LiteRT model answers "none of its classes" too.
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

from edgeclf.errors import EdgeclfError, first_line, safe_text
from edgeclf.model import metadata as md
from edgeclf.model.nodes import ModelMeta, NodeArg
from edgeclf.model.unknown import nearest_distance, parse_calibration, unit_rows
from edgeclf.quiet import captured_output

SUFFIX = ".tflite"
#: What ``Classifier.providers`` lists for a LiteRT model (onnxruntime's list holds provider names).
ENGINE = "LiteRT"
METADATA_MEMBER = "edgeclf/metadata.json"
_MAX_METADATA_BYTES = 1 << 20  # a few kB in practice; a bigger member is not edgeclf's
#: The unknown score's bank: the training photos' embeddings [M, D], float16 (``export/unknown.py``).
BANK_MEMBER = "edgeclf/unknown_bank.npy"
_MAX_BANK_BYTES = 64 << 20  # 1,000 x 1,280 float16 is 2.6 MB
#: Metadata key: the name of each of the model's outputs in LiteRT's order, as a JSON list
#: (absent: the model has one output, the probabilities).
OUTPUTS_KEY = "tflite_outputs"
_OUTPUT_NAMES = (md.OUTPUT_NAME, md.EMBEDDING_NAME)
#: Interpreters kept per session, one per batch size seen (resizing one in place re-plans the graph).
MAX_BATCH_SIZES = 4
INSTALL_HINT = "pip install 'edgeclf[litert]'"

_TYPES = {np.uint8: "tensor(uint8)", np.int8: "tensor(int8)", np.float32: "tensor(float)", np.float16: "tensor(float16)"}


def is_tflite(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() == SUFFIX


def with_metadata(payload: bytes, metadata: Mapping[str, str], bank: np.ndarray | None = None) -> bytes:
    """``payload`` (a .tflite flatbuffer) with ``metadata`` (and the unknown score's ``bank``)
    appended as a zip archive."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(METADATA_MEMBER, json.dumps(dict(metadata), sort_keys=True))
        if bank is not None:
            array = io.BytesIO()
            np.save(array, np.asarray(bank, np.float16), allow_pickle=False)
            z.writestr(BANK_MEMBER, array.getvalue())
    return payload + buf.getvalue()


def _member(path: str | os.PathLike, name: str, limit: int, what: str) -> bytes | None:
    """The bytes of archive member ``name`` appended to ``path``, at most ``limit`` of them; None
    when there is no archive or no such member. A one-line error when it is damaged or too big."""
    try:
        z = zipfile.ZipFile(path)
    except zipfile.BadZipFile:  # no archive appended: a .tflite from elsewhere
        return None
    except (OSError, ValueError, RuntimeError, EOFError, zipfile.LargeZipFile) as e:
        raise EdgeclfError(f"{path}: unreadable edgeclf {what} ({first_line(e)})") from None
    try:
        with z:
            if name not in z.namelist():
                return None
            info = z.getinfo(name)
            if info.file_size > limit:
                raise EdgeclfError(f"{path}: edgeclf {what} is {info.file_size} bytes (at most {limit})")
            with z.open(info) as f:
                return f.read(limit + 1)[:limit]  # the declared size may lie: read no more than the bound
    except (zipfile.BadZipFile, OSError, ValueError, RuntimeError, EOFError, zipfile.LargeZipFile) as e:
        # the archive is there but damaged: a bad CRC (its member holds other bytes than it declares), a bad header
        raise EdgeclfError(f"{path}: unreadable edgeclf {what} ({first_line(e)})") from None


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata ``with_metadata`` appended to ``path``; {} when there is none (a .tflite from
    elsewhere). A one-line error when the archive is there but unreadable or not string pairs."""
    text = _member(path, METADATA_MEMBER, _MAX_METADATA_BYTES, "metadata")
    if text is None:
        return {}
    try:
        meta = json.loads(text)
    except (ValueError, RecursionError):
        raise EdgeclfError(f"{path}: edgeclf metadata is not valid JSON") from None
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise EdgeclfError(f"{path}: edgeclf metadata is not an object of strings")
    return meta


def read_bank(path: str | os.PathLike) -> np.ndarray | None:
    """The unknown score's bank appended to ``path`` as float32 [M, D]; None when there is none."""
    raw = _member(path, BANK_MEMBER, _MAX_BANK_BYTES, "unknown bank")
    if raw is None:
        return None
    # The .npy header is read by hand: np.load would allocate the shape it declares before reading
    # a byte of data, and a crafted header can declare terabytes.
    f = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
    except (ValueError, OSError, EOFError, SyntaxError, TypeError) as e:
        raise EdgeclfError(f"{path}: unreadable edgeclf unknown bank ({first_line(e, 80)})") from None
    if len(shape) != 2 or dtype.str not in ("<f2", "<f4") or not 0 < shape[0] * shape[1] * dtype.itemsize == len(raw) - f.tell():
        raise EdgeclfError(f"{path}: edgeclf unknown bank is not a little-endian float16 or float32 matrix of the "
                           f"size it declares ({safe_text(dtype.str)} {safe_text(str(shape))[:40]}, {len(raw) - f.tell()} bytes)")
    bank = np.frombuffer(raw, dtype, offset=f.tell()).reshape(shape, order="F" if fortran else "C")
    if not np.isfinite(bank).all():
        raise EdgeclfError(f"{path}: edgeclf unknown bank is not a finite float matrix (NaN or infinity in it)")
    return bank.astype(np.float32)


def has_unknown_score(path: str | os.PathLike) -> bool:
    """Whether the LiteRT model at ``path`` carries the unknown score (False too where it is absent or unreadable)."""
    try:
        meta = read_metadata(path) if Path(path).is_file() else {}
        if md.UNKNOWN not in meta or md.EMBEDDING_NAME not in meta.get(OUTPUTS_KEY, ""):
            return False
        with zipfile.ZipFile(path) as z:
            return BANK_MEMBER in z.namelist()
    except (EdgeclfError, OSError, zipfile.BadZipFile, ValueError, RuntimeError, EOFError):
        return False


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
    (its batch dimension free), the output ``metadata.OUTPUT_NAME`` and, where the export gave the
    model its unknown score, ``metadata.EMBEDDING_NAME`` and ``metadata.UNKNOWN_NAME`` (computed
    here from the bank, as the ONNX graph does); quantized input and output tensors are converted
    here, so callers feed uint8 pixels and read float outputs. ``run`` is safe from several threads
    (one at a time: an interpreter holds its tensors)."""

    def __init__(self, path: str | os.PathLike, threads: int, interpreter: type | None = None) -> None:
        self.path = Path(path)
        self.threads = threads
        self._interpreter = interpreter or interpreter_class()
        self._metadata = read_metadata(self.path)
        self._by_batch: OrderedDict[int, tuple[Any, dict, list[dict]]] = OrderedDict()
        self._lock = threading.Lock()
        it, inp, outs = self._open(None, quiet=True)
        if len(it.get_input_details()) != 1:
            raise EdgeclfError(f"{self.path}: model has {len(it.get_input_details())} inputs; edgeclf models have one")
        self._names = self._output_names(len(outs))
        sig = list(inp.get("shape_signature", inp["shape"]))
        self._batch_fixed = sig[0] != -1
        dims = [int(sig[0]) if self._batch_fixed else None, *[None if d == -1 else int(d) for d in sig[1:]]]
        self._input = _node(md.INPUT_NAME, dims, inp["dtype"])
        self._outputs = [_node(n, [None, *[int(d) for d in o["shape"][1:]]], np.float32)  # probabilities first, as in ONNX
                         for n, o in sorted(zip(self._names, outs), key=lambda no: _OUTPUT_NAMES.index(no[0]))]
        self._bank, self._k = self._unknown_bank(outs)
        if self._bank is not None:
            self._outputs.append(_node(md.UNKNOWN_NAME, [None], np.float32))
        self._by_batch[int(inp["shape"][0])] = (it, inp, outs)

    def _output_names(self, n: int) -> list[str]:
        """What each of the interpreter's ``n`` outputs is, from the metadata (one output: the probabilities)."""
        text = self._metadata.get(OUTPUTS_KEY)
        if text is None:
            if n != 1:
                raise EdgeclfError(f"{self.path}: model has {n} outputs and no edgeclf metadata naming them; "
                                   "edgeclf models have one, the probabilities")
            return [md.OUTPUT_NAME]
        try:
            names = json.loads(text)
        except (ValueError, RecursionError):
            names = None
        if (not isinstance(names, list) or len(names) != n or md.OUTPUT_NAME not in names
                or not all(isinstance(x, str) and x in _OUTPUT_NAMES for x in names) or len(set(names)) != n):
            raise EdgeclfError(f"{self.path}: metadata {OUTPUTS_KEY} does not name the model's {n} outputs "
                               f"(expected a list of {' and '.join(_OUTPUT_NAMES)})")
        return names

    def _unknown_bank(self, outs: list[dict]) -> tuple[np.ndarray | None, int]:
        """The normalised bank and neighbour rank of the unknown score; (None, 0) without one."""
        if md.EMBEDDING_NAME not in self._names or md.UNKNOWN not in self._metadata:
            return None, 0
        bank = read_bank(self.path)
        if bank is None:
            return None, 0
        k = parse_calibration(self._metadata[md.UNKNOWN], self.path).k
        dim = int(outs[self._names.index(md.EMBEDDING_NAME)]["shape"][-1])
        if bank.shape[1] != dim or not 1 <= k <= len(bank):
            raise EdgeclfError(f"{self.path}: edgeclf unknown bank {bank.shape} does not fit the model's "
                               f"{dim}-wide embedding with k = {k}")
        return unit_rows(bank), k

    def _open(self, batch: int | None, quiet: bool = False) -> tuple[Any, dict, list[dict]]:
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
        return it, it.get_input_details()[0], list(it.get_output_details())

    def _for_batch(self, n: int) -> tuple[Any, dict, list[dict]]:
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
        return list(self._outputs)

    def get_modelmeta(self) -> ModelMeta:
        return ModelMeta(dict(self._metadata))

    def get_providers(self) -> list[str]:
        return [ENGINE]

    def run(self, output_names: Sequence[str] | None, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """The outputs named (all of them for None) for ``feed[metadata.INPUT_NAME]`` ([N, H, W, 3])."""
        have = [o.name for o in self._outputs]
        wanted = list(output_names) if output_names else have
        for name in wanted:
            if name not in have:
                raise EdgeclfError(f"{self.path}: LiteRT model has no output {name!r}")
        x = feed[self._input.name]
        with self._lock:
            it, inp, outs = self._for_batch(len(x))
            it.set_tensor(inp["index"], _quantized(x, inp))
            it.invoke()
            got = {n: _dequantized(it.get_tensor(o["index"]), o) for n, o in zip(self._names, outs)
                   if n in wanted or (n == md.EMBEDDING_NAME and md.UNKNOWN_NAME in wanted)}
        if md.UNKNOWN_NAME in wanted:
            got[md.UNKNOWN_NAME] = nearest_distance(unit_rows(got[md.EMBEDDING_NAME]), self._bank, self._k)
        return [got[n] for n in wanted]


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
