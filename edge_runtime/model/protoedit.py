"""Rewrite named tensors and metadata of a serialized ONNX model, with numpy alone.

The device has onnxruntime but not the ``onnx`` package, and ``add-class`` must change a model
there: its head (``edgeclf_head/W``, ``/b``), the unknown score's bank and the class names. An
ONNX file is a protobuf message; this module walks its wire format only as deep as that needs
(model -> graph -> initializer tensors, model -> metadata entries) and copies every other field
byte for byte, so what it does not understand it leaves as it was.

The file is untrusted: every length is checked against the bytes that remain, nesting is fixed
at two levels, and a tensor is decoded only when its dims and raw bytes agree.
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np

from edgeclf.errors import EdgeclfError

# ModelProto, GraphProto, TensorProto and StringStringEntryProto field numbers (onnx.proto3).
MODEL_GRAPH, MODEL_METADATA = 7, 14
GRAPH_INITIALIZER = 5
TENSOR_DIMS, TENSOR_TYPE, TENSOR_NAME, TENSOR_RAW = 1, 2, 8, 9
ENTRY_KEY, ENTRY_VALUE = 1, 2
#: ONNX element types this module reads and writes, as numpy types.
DTYPES = {1: np.float32, 3: np.int8, 7: np.int64, 10: np.float16}
_CODES = {np.dtype(v): k for k, v in DTYPES.items()}


class ProtoError(EdgeclfError):
    """The bytes are not the protobuf message they should be."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ProtoError("truncated or overlong varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            if value >= 1 << 64:
                raise ProtoError("varint above 64 bits")
            return value, pos
        shift += 7


def fields(buf: bytes) -> Iterator[tuple[int, int, bytes | int]]:
    """(field number, wire type, value) of each field of one message: bytes for length-delimited
    and fixed-width fields, an int for varints."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            n, pos = _varint(buf, pos)
            if n > len(buf) - pos:
                raise ProtoError(f"field {field} claims {n} bytes, {len(buf) - pos} remain")
            value, pos = buf[pos:pos + n], pos + n
        elif wire in (1, 5):
            n = 8 if wire == 1 else 4
            if n > len(buf) - pos:
                raise ProtoError("truncated fixed-width field")
            value, pos = buf[pos:pos + n], pos + n
        else:
            raise ProtoError(f"unsupported wire type {wire}")
        yield field, wire, value


def _encode_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def encode(field: int, wire: int, value: bytes | int) -> bytes:
    """One field in wire format."""
    key = _encode_varint(field << 3 | wire)
    if wire == 0:
        return key + _encode_varint(int(value))
    if wire == 2:
        return key + _encode_varint(len(value)) + bytes(value)
    return key + bytes(value)


def tensor_name(buf: bytes) -> str | None:
    for f, w, v in fields(buf):
        if f == TENSOR_NAME and w == 2:
            return bytes(v).decode("utf-8", "replace")
    return None


def decode_tensor(buf: bytes) -> np.ndarray:
    """A TensorProto with raw_data of a type in DTYPES, as an array (a copy)."""
    dims: list[int] = []
    dtype, raw = None, None
    for f, w, v in fields(buf):
        if f == TENSOR_DIMS and w == 0:
            dims.append(int(v))
        elif f == TENSOR_DIMS and w == 2:  # packed
            pos = 0
            while pos < len(v):
                d, pos = _varint(v, pos)
                dims.append(d)
        elif f == TENSOR_TYPE and w == 0:
            dtype = DTYPES.get(int(v))
        elif f == TENSOR_RAW and w == 2:
            raw = v
    if dtype is None or raw is None:
        raise ProtoError("tensor is not stored as raw float32, float16, int8 or int64 data")
    if len(dims) > 8 or any(d > len(raw) for d in dims):
        raise ProtoError(f"tensor dims {dims[:8]} do not match its {len(raw)} bytes")
    count = math.prod(dims)
    if count * np.dtype(dtype).itemsize != len(raw):
        raise ProtoError(f"tensor dims {dims} do not match its {len(raw)} bytes")
    return np.frombuffer(raw, dtype).reshape(dims).copy()


def encode_tensor(name: str, array: np.ndarray) -> bytes:
    """A TensorProto holding ``array`` (float32, float16, int8 or int64) as raw little-endian data."""
    a = np.ascontiguousarray(array)
    if a.dtype not in _CODES:
        raise ValueError(f"encode_tensor: unsupported dtype {a.dtype}")
    dims = b"".join(_encode_varint(int(d)) for d in a.shape)
    return (encode(TENSOR_DIMS, 2, dims) + encode(TENSOR_TYPE, 0, _CODES[a.dtype]) +
            encode(TENSOR_NAME, 2, name.encode()) + encode(TENSOR_RAW, 2, a.astype(a.dtype.newbyteorder("<")).tobytes()))


def read_tensors(model: bytes, names: set[str]) -> dict[str, np.ndarray]:
    """The initializers of ``model`` named in ``names`` that it has."""
    out: dict[str, np.ndarray] = {}
    for f, w, graph in fields(model):
        if f == MODEL_GRAPH and w == 2:
            for g, gw, t in fields(graph):
                if g == GRAPH_INITIALIZER and gw == 2 and tensor_name(t) in names:
                    out[tensor_name(t)] = decode_tensor(t)
    return out


def rewrite(model: bytes, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> bytes:
    """``model`` with the initializers named in ``tensors`` replaced (each must exist) and the
    metadata entries of ``metadata`` set (replaced or added); every other byte as it was."""
    missing = set(tensors)
    parts = []
    for f, w, v in fields(model):
        if f == MODEL_GRAPH and w == 2:
            graph = []
            for g, gw, t in fields(v):
                name = tensor_name(t) if g == GRAPH_INITIALIZER and gw == 2 else None
                if name in tensors:
                    t = encode_tensor(name, tensors[name])
                    missing.discard(name)
                graph.append(encode(g, gw, t))
            v = b"".join(graph)
        elif f == MODEL_METADATA and w == 2:
            key = next((bytes(x).decode("utf-8", "replace") for k, kw, x in fields(v) if k == ENTRY_KEY and kw == 2), None)
            if key in metadata:
                continue  # written anew below
        parts.append(encode(f, w, v))
    if missing:
        raise ProtoError(f"the model has no initializer {sorted(missing)[0]!r}")
    for key, value in metadata.items():
        parts.append(encode(MODEL_METADATA, 2, encode(ENTRY_KEY, 2, key.encode()) + encode(ENTRY_VALUE, 2, value.encode())))
    return b"".join(parts)


def read_metadata(model: bytes) -> dict[str, str]:
    """The model's metadata_props."""
    out = {}
    for f, w, v in fields(model):
        if f == MODEL_METADATA and w == 2:
            entry = {k: bytes(x).decode("utf-8", "replace") for k, kw, x in fields(v) if kw == 2}
            out[entry.get(ENTRY_KEY, "")] = entry.get(ENTRY_VALUE, "")
    return out
