"""Tiny real ONNX models for the runtime tests, built with the ``onnx`` helper API (test side only).

``make_colour_model`` is an exported-edgeclf-style model that classifies an image by its mean
colour: input ``image`` uint8 NHWC RGB, output ``probs`` softmax over red/green/blue. Simple
enough that the right answer is known for any test image, so tests check real predictions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

COLOURS = ("red", "green", "blue")
#: BGR images that the colour model labels red, green and blue.
BGR = {"red": (0, 0, 255), "green": (0, 255, 0), "blue": (255, 0, 0)}


def _save(model, path: Path, metadata: dict[str, str] | None) -> Path:
    import onnx

    if metadata:
        for k, v in metadata.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = k, v
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def edgeclf_metadata(class_names: Sequence[str], size: tuple[int, int], precision: str = "fp32") -> dict[str, str]:
    return {
        "class_names": json.dumps(list(class_names)),
        "input_height": str(size[0]),
        "input_width": str(size[1]),
        "color_order": "RGB",
        "preprocessing": json.dumps({"resize": "stretch", "rescale": "inside the model"}),
        "architecture": "colour-test",
        "precision": precision,
    }


def make_colour_model(path: Path, size: tuple[int, int] = (32, 32), metadata: bool | dict[str, str] = True,
                      dynamic_hw: bool = False, input_type: str = "uint8", batch: int | str = "N",
                      two_inputs: bool = False) -> Path:
    """uint8 [N, H, W, 3] RGB -> mean colour -> softmax(0.05 * mean) over (red, green, blue).

    ``metadata``: edgeclf's (True), none (False), or exactly this dict (hostile-input tests);
    ``batch``: the batch dimension (an int fixes it); ``two_inputs``: add a second input."""
    from onnx import TensorProto, helper, numpy_helper

    elem = {"uint8": TensorProto.UINT8, "float": TensorProto.FLOAT}[input_type]
    h, w = ("H", "W") if dynamic_hw else size
    inputs = [helper.make_tensor_value_info("image", elem, [batch, h, w, 3])]
    y = helper.make_tensor_value_info("probs", TensorProto.FLOAT, [batch, 3])
    scale = numpy_helper.from_array(np.eye(3, dtype=np.float32) * 0.05, "scale")
    nodes = [
        helper.make_node("Cast", ["image"], ["xf"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["xf"], ["mean"], axes=[1, 2], keepdims=0),
        helper.make_node("MatMul", ["mean", "scale"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
    ]
    if two_inputs:
        inputs.append(helper.make_tensor_value_info("extra", TensorProto.FLOAT, [batch, 3]))
        nodes[2:3] = [helper.make_node("MatMul", ["mean", "scale"], ["l0"]), helper.make_node("Add", ["l0", "extra"], ["logits"])]
    graph = helper.make_graph(nodes, "colour", inputs, [y], [scale])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    if metadata is True:
        metadata = edgeclf_metadata(COLOURS, size)
    return _save(model, path, metadata or None)


def make_conv_model(path: Path, size: int = 128, width: int = 32, seed: int = 0) -> Path:
    """A small CNN with random weights and about the cost of a real edge classifier (three
    stride-2 3x3 convolutions, ~60 M multiply-adds at 128x128): for load tests, where the model's
    answers do not matter but its share of the CPU does. Same interface as the colour model."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    x = helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", size, size, 3])
    y = helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 3])
    chans = [3, width, 2 * width, 4 * width]
    inits = []
    nodes = [
        helper.make_node("Cast", ["image"], ["xf"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["xf"], ["h0"], perm=[0, 3, 1, 2]),
    ]
    for i in range(3):
        w = rng.normal(0, (2 / (9 * chans[i])) ** 0.5 / (255 if i == 0 else 1), (chans[i + 1], chans[i], 3, 3))
        inits.append(numpy_helper.from_array(w.astype(np.float32), f"w{i}"))
        nodes += [
            helper.make_node("Conv", [f"h{i}", f"w{i}"], [f"c{i}"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", [f"c{i}"], [f"h{i + 1}"]),
        ]
    inits.append(numpy_helper.from_array(rng.normal(0, 0.1, (chans[-1], 3)).astype(np.float32), "fc"))
    nodes += [
        helper.make_node("GlobalAveragePool", ["h3"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["feat"]),
        helper.make_node("MatMul", ["feat", "fc"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
    ]
    graph = helper.make_graph(nodes, "conv", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    return _save(model, path, edgeclf_metadata(COLOURS, (size, size)))


def make_vector_model(path: Path) -> Path:
    """A valid ONNX model whose input is a float vector [N, 10], not an image."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 10])
    y = helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 10])
    graph = helper.make_graph([helper.make_node("Softmax", ["x"], ["probs"], axis=-1)], "vector", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    return _save(model, path, None)


def solid(colour: str, h: int = 48, w: int = 64) -> np.ndarray:
    """A BGR image of one colour, with a little noise so it is not trivially uniform."""
    rng = np.random.default_rng(abs(hash(colour)) % 2**32)
    img = np.full((h, w, 3), BGR[colour], np.int16) + rng.integers(-20, 20, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)
