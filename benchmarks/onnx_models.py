"""Small ONNX models written without the ``onnx`` package, for benchmarks and tests.

The ``onnx`` package comes only with the train extra, yet a device (base install) must be able to
make a stand-in model for ``serve_bench.py`` and run the runtime's own tests. An ONNX file is one
protobuf message (onnx.proto, proto2), and the few fields these models use are written here by
hand, in field-number order as protobuf itself writes them: ``tests/test_onnx_models.py`` checks,
where ``onnx`` is installed, that the bytes are exactly what ``onnx.helper`` makes.
"""

from __future__ import annotations

import json

import struct
from pathlib import Path
from typing import Sequence

import numpy as np

from edgeclf.model.metadata import model_metadata

# onnx.proto's TensorProto.DataType values used here.
FLOAT, UINT8, INT8, INT32 = 1, 2, 3, 6
_DTYPES = {np.dtype(np.float32): FLOAT, np.dtype(np.uint8): UINT8, np.dtype(np.int8): INT8, np.dtype(np.int32): INT32}
# AttributeProto.AttributeType values.
_ATTR_FLOAT, _ATTR_INT, _ATTR_INTS = 1, 2, 7


# ----------------------------------------------------------------------------- protobuf wire format
def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int64s as protobuf writes them: ten bytes of two's complement
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _int(field: int, n: int) -> bytes:
    return _varint(field << 3) + _varint(n)


def _len(field: int, data: bytes | str) -> bytes:
    data = data.encode() if isinstance(data, str) else data
    return _varint(field << 3 | 2) + _varint(len(data)) + data


def _float(field: int, x: float) -> bytes:
    return _varint(field << 3 | 5) + struct.pack("<f", x)


# ---------------------------------------------------------------------------------- ONNX messages
def tensor(name: str, array: np.ndarray) -> bytes:
    """TensorProto: an initializer holding ``array`` (float32, uint8, int8 or int32) as raw data."""
    array = np.asarray(array)
    dims = b"".join(_int(1, d) for d in array.shape)
    return dims + _int(2, _DTYPES[array.dtype]) + _len(8, name) + _len(9, array.astype(array.dtype.newbyteorder("<")).tobytes())


def value_info(name: str, elem_type: int, shape: Sequence[int | str]) -> bytes:
    """ValueInfoProto: a graph input or output; an int dimension is fixed, a str one named."""
    dims = b"".join(_len(1, _int(1, d) if isinstance(d, int) else _len(2, d)) for d in shape)
    tensor_type = _int(1, elem_type) + _len(2, dims)
    return _len(1, name) + _len(2, _len(1, tensor_type))


def node(op_type: str, inputs: Sequence[str], outputs: Sequence[str], **attrs: int | float | Sequence[int]) -> bytes:
    """NodeProto; attributes are ints, floats or lists of ints, sorted by name as onnx.helper does."""
    out = b"".join(_len(1, i) for i in inputs) + b"".join(_len(2, o) for o in outputs) + _len(4, op_type)
    for key, value in sorted(attrs.items()):
        if isinstance(value, float):
            body = _float(2, value) + _int(20, _ATTR_FLOAT)
        elif isinstance(value, int):
            body = _int(3, value) + _int(20, _ATTR_INT)
        else:
            body = b"".join(_int(8, v) for v in value) + _int(20, _ATTR_INTS)
        out += _len(5, _len(1, key) + body)
    return out


def model(nodes: Sequence[bytes], name: str, inputs: Sequence[bytes], outputs: Sequence[bytes],
          initializers: Sequence[bytes] = (), *, opset: int = 13, ir_version: int = 8,
          metadata: dict[str, str] | None = None) -> bytes:
    """ModelProto of one graph (default domain at ``opset``), with ``metadata`` as metadata_props."""
    graph = (b"".join(_len(1, n) for n in nodes) + _len(2, name) + b"".join(_len(5, t) for t in initializers)
             + b"".join(_len(11, v) for v in inputs) + b"".join(_len(12, v) for v in outputs))
    props = b"".join(_len(14, _len(1, k) + _len(2, v)) for k, v in (metadata or {}).items())
    return _int(1, ir_version) + _len(7, graph) + _len(8, _len(1, "") + _int(2, opset)) + props


def save(data: bytes, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------------------------ the models
def edgeclf_metadata(class_names: Sequence[str], size: tuple[int, int], precision: str = "fp32") -> dict[str, str]:
    """The metadata ``edgeclf export`` writes (``edgeclf.model.metadata.model_metadata``), for a test model of ``size``."""
    return model_metadata(list(class_names), size, "colour-test", precision)


def make_conv_model(path: Path, size: int = 128, width: int = 32, seed: int = 0,
                    class_names: Sequence[str] = ("red", "green", "blue")) -> Path:
    """A small CNN with random weights and about the cost of a real edge classifier (three
    stride-2 3x3 convolutions, ~60 M multiply-adds at 128x128): for load tests and benchmarks,
    where the model's answers do not matter but its share of the CPU does. The interface of an
    exported edgeclf model: uint8 ``image`` [N, size, size, 3] RGB -> ``probs`` [N, 3]."""
    rng = np.random.default_rng(seed)
    chans = [3, width, 2 * width, 4 * width]
    inits = []
    nodes = [node("Cast", ["image"], ["xf"], to=FLOAT), node("Transpose", ["xf"], ["h0"], perm=[0, 3, 1, 2])]
    for i in range(3):
        w = rng.normal(0, (2 / (9 * chans[i])) ** 0.5 / (255 if i == 0 else 1), (chans[i + 1], chans[i], 3, 3))
        inits.append(tensor(f"w{i}", w.astype(np.float32)))
        nodes += [
            node("Conv", [f"h{i}", f"w{i}"], [f"c{i}"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]),
            node("Relu", [f"c{i}"], [f"h{i + 1}"]),
        ]
    inits.append(tensor("fc", rng.normal(0, 0.1, (chans[-1], len(class_names))).astype(np.float32)))
    nodes += [
        node("GlobalAveragePool", ["h3"], ["gap"]),
        node("Flatten", ["gap"], ["feat"]),
        node("MatMul", ["feat", "fc"], ["logits"]),
        node("Softmax", ["logits"], ["probs"], axis=-1),
    ]
    data = model(nodes, "conv", [value_info("image", UINT8, ["N", size, size, 3])],
                 [value_info("probs", FLOAT, ["N", len(class_names)])], inits,
                 metadata=edgeclf_metadata(class_names, (size, size)))
    return save(data, path)


#: The colour model's classes (tests/onnx_fixtures.py has the matching test images).
COLOURS = ("red", "green", "blue")


def make_colour_model(path: Path, size: tuple[int, int] = (32, 32), metadata: bool | dict[str, str] = True,
                      dynamic_hw: bool = False, input_type: str = "uint8", batch: int | str = "N",
                      two_inputs: bool = False, scale: float = 0.05, unknown: float | None = None) -> Path:
    """uint8 [N, H, W, 3] RGB -> mean colour -> softmax(scale * mean) over (red, green, blue).

    ``metadata``: edgeclf's (True), none (False), or exactly this dict (hostile-input tests);
    ``batch``: the batch dimension (an int fixes it); ``two_inputs``: add a second input;
    ``scale``: NaN makes every weight NaN (a model that answers NaN); ``unknown``: also output an
    ``unknown_score`` (1 - the top probability: a grey image scores 2/3, a pure colour about 0) with
    this threshold in the metadata, as an export with an unknown score does."""
    elem = {"uint8": UINT8, "float": FLOAT}[input_type]
    h, w = ("H", "W") if dynamic_hw else size
    inputs = [value_info("image", elem, [batch, h, w, 3])]
    nodes = [
        node("Cast", ["image"], ["xf"], to=FLOAT),
        node("ReduceMean", ["xf"], ["mean"], axes=[1, 2], keepdims=0),
        node("MatMul", ["mean", "scale"], ["logits"]),
        node("Softmax", ["logits"], ["probs"], axis=-1),
    ]
    if two_inputs:
        inputs.append(value_info("extra", FLOAT, [batch, 3]))
        nodes[2:3] = [node("MatMul", ["mean", "scale"], ["l0"]), node("Add", ["l0", "extra"], ["logits"])]
    if metadata is True:
        metadata = edgeclf_metadata(COLOURS, size)
    outputs = [value_info("probs", FLOAT, [batch, 3])]
    consts = [tensor("scale", np.eye(3, dtype=np.float32) * np.float32(scale))]
    if unknown is not None:
        nodes += [node("ReduceMax", ["probs"], ["top"], axes=[1], keepdims=0), node("Sub", ["one", "top"], ["unknown_score"])]
        outputs.append(value_info("unknown_score", FLOAT, [batch]))
        consts.append(tensor("one", np.array(1.0, np.float32)))
        if metadata:
            metadata = {"unknown": json.dumps({"method": "test", "threshold": unknown}), **metadata}
    data = model(nodes, "colour", inputs, outputs, consts, metadata=metadata or None)
    return save(data, path)
