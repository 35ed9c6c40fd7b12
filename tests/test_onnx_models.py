"""The ONNX models the runtime tests and benchmarks write without the ``onnx`` package
(benchmarks/onnx_models.py, tests/onnx_fixtures.py) are byte for byte the ones ``onnx.helper``
builds, and pass ONNX's checker. Needs ``onnx`` (the train extra); on a base install this module
skips, and the runtime tests that use the models still run."""

from __future__ import annotations

import numpy as np
import pytest
from onnx_fixtures import COLOURS, edgeclf_metadata, make_colour_model, make_conv_model, make_vector_model

onnx = pytest.importorskip("onnx", reason="checking the hand-written ONNX models needs onnx (pip install 'edgeclf[train]')")
from onnx import (
    TensorProto as T,  # noqa: E402
    helper as h,  # noqa: E402
    numpy_helper as nh,  # noqa: E402
)


def _helper_model(nodes, name, inputs, outputs, inits=(), metadata=None):
    model = h.make_model(h.make_graph(nodes, name, inputs, outputs, list(inits)),
                         opset_imports=[h.make_opsetid("", 13)], ir_version=8)
    for k, v in (metadata or {}).items():
        model.metadata_props.add(key=k, value=v)
    return model


def _helper_colour(size=(32, 32), metadata=True, dynamic_hw=False, input_type="uint8", batch="N", two_inputs=False):
    elem = {"uint8": T.UINT8, "float": T.FLOAT}[input_type]
    hw = ["H", "W"] if dynamic_hw else list(size)
    inputs = [h.make_tensor_value_info("image", elem, [batch, *hw, 3])]
    nodes = [
        h.make_node("Cast", ["image"], ["xf"], to=T.FLOAT),
        h.make_node("ReduceMean", ["xf"], ["mean"], axes=[1, 2], keepdims=0),
        h.make_node("MatMul", ["mean", "scale"], ["logits"]),
        h.make_node("Softmax", ["logits"], ["probs"], axis=-1),
    ]
    if two_inputs:
        inputs.append(h.make_tensor_value_info("extra", T.FLOAT, [batch, 3]))
        nodes[2:3] = [h.make_node("MatMul", ["mean", "scale"], ["l0"]), h.make_node("Add", ["l0", "extra"], ["logits"])]
    metadata = edgeclf_metadata(COLOURS, size) if metadata is True else metadata
    return _helper_model(nodes, "colour", inputs, [h.make_tensor_value_info("probs", T.FLOAT, [batch, 3])],
                         [nh.from_array(np.eye(3, dtype=np.float32) * 0.05, "scale")], metadata or None)


def _helper_conv(size=128, width=8, seed=0):
    rng = np.random.default_rng(seed)
    chans = [3, width, 2 * width, 4 * width]
    inits, nodes = [], [h.make_node("Cast", ["image"], ["xf"], to=T.FLOAT),
                        h.make_node("Transpose", ["xf"], ["h0"], perm=[0, 3, 1, 2])]
    for i in range(3):
        w = rng.normal(0, (2 / (9 * chans[i])) ** 0.5 / (255 if i == 0 else 1), (chans[i + 1], chans[i], 3, 3))
        inits.append(nh.from_array(w.astype(np.float32), f"w{i}"))
        nodes += [h.make_node("Conv", [f"h{i}", f"w{i}"], [f"c{i}"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
                  h.make_node("Relu", [f"c{i}"], [f"h{i + 1}"])]
    inits.append(nh.from_array(rng.normal(0, 0.1, (chans[-1], 3)).astype(np.float32), "fc"))
    nodes += [h.make_node("GlobalAveragePool", ["h3"], ["gap"]), h.make_node("Flatten", ["gap"], ["feat"]),
              h.make_node("MatMul", ["feat", "fc"], ["logits"]), h.make_node("Softmax", ["logits"], ["probs"], axis=-1)]
    return _helper_model(nodes, "conv", [h.make_tensor_value_info("image", T.UINT8, ["N", size, size, 3])],
                         [h.make_tensor_value_info("probs", T.FLOAT, ["N", 3])], inits, edgeclf_metadata(COLOURS, (size, size)))


COLOUR_VARIANTS = [
    {},
    {"size": (20, 30), "dynamic_hw": True},
    {"metadata": False, "input_type": "float", "batch": 1, "two_inputs": True},
    {"metadata": {"class_names": "not json", "input_height": "-1"}},
]


@pytest.mark.parametrize("kwargs", COLOUR_VARIANTS, ids=["default", "dynamic-hw", "float-two-inputs", "own-metadata"])
def test_colour_model_is_the_helper_built_one(tmp_path, kwargs):
    written = make_colour_model(tmp_path / "m.onnx", **kwargs).read_bytes()
    expected = _helper_colour(**kwargs)
    onnx.checker.check_model(expected, full_check=True)
    assert written == expected.SerializeToString()


def test_conv_model_is_the_helper_built_one(tmp_path):
    written = make_conv_model(tmp_path / "m.onnx", size=64, width=8).read_bytes()
    expected = _helper_conv(size=64, width=8)
    onnx.checker.check_model(expected, full_check=True)
    assert written == expected.SerializeToString()


def test_vector_model_is_the_helper_built_one(tmp_path):
    written = make_vector_model(tmp_path / "m.onnx").read_bytes()
    expected = _helper_model([h.make_node("Softmax", ["x"], ["probs"], axis=-1)], "vector",
                             [h.make_tensor_value_info("x", T.FLOAT, ["N", 10])], [h.make_tensor_value_info("probs", T.FLOAT, ["N", 10])])
    onnx.checker.check_model(expected, full_check=True)
    assert written == expected.SerializeToString()
