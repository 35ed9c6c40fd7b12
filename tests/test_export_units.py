"""Export pieces that need no TensorFlow: the parity figures and the int8 policy."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import TRAIN_EXTRA

onnx = pytest.importorskip("onnx", reason=TRAIN_EXTRA)

from edgeclf import sysinfo  # noqa: E402
from edgeclf.export import parity, quantize  # noqa: E402
from edgeclf.model import metadata as md  # noqa: E402


def test_parity_figures():
    ref = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.50004, 0.49996, 0.0]], np.float32)
    same = ref.copy()
    f = parity.compare(ref, same)
    assert f == {"n": 3, "n_ties": 1, "top1_agreement": 1.0, "max_abs_diff": 0.0, "mean_abs_diff": 0.0}
    assert parity.parity_ok(f)

    flipped_tie = ref[:, [1, 0, 2]].copy()
    flipped_tie[:2] = ref[:2]
    f = parity.compare(ref, flipped_tie)  # only the near-tie flipped: still agrees, but dp is 8e-5
    assert f["top1_agreement"] == 1.0 and f["max_abs_diff"] == pytest.approx(8e-5, abs=1e-6)
    assert parity.parity_ok(f)

    wrong = ref.copy()
    wrong[0] = [0.2, 0.7, 0.1]
    f = parity.compare(ref, wrong)
    assert f["top1_agreement"] == 0.5 and not parity.parity_ok(f)
    assert "top-1 agreement 50.00% on 2 images (1 near-ties aside)" in parity.describe(f)

    drift = ref + np.float32(2e-4)
    assert not parity.parity_ok(parity.compare(ref, drift))


def test_int8_policy_is_the_same_on_every_exporting_cpu():
    """7-bit weights whatever CPU exports (measured: full-range weights saturate on x86 without
    VNNI); the families it was checked on are every family the runtime tells apart."""
    assert quantize.REDUCE_RANGE is True
    target = quantize.int8_target()
    assert target["reduce_range"] and target["cpus"] == list(sysinfo.CPU_FAMILIES)
    model = onnx.ModelProto()
    quantize.mark_target(model)
    assert {p.key: json.loads(p.value) for p in model.metadata_props} == {md.INT8_CPUS: list(sysinfo.CPU_FAMILIES)}


def test_calibration_reader_batches_and_rewinds():
    def batches(n):
        seen = []
        reader = quantize.ImageBatches(np.zeros((n, 8, 8, 3), np.uint8), batch_size=16, progress=seen.append)
        sizes = []
        while (batch := reader.get_next()) is not None:
            sizes.append(len(batch["image"]))
        assert seen == sizes
        reader.rewind()
        assert len(reader.get_next()["image"]) == sizes[0]
        return sizes

    # equal batches: the histogram calibrators cannot take a shorter last one
    assert batches(40) == [10] * 4
    assert batches(48) == [16] * 3
    assert batches(37) == [1] * 37


def _rescale_model(path, a: float, b: float):
    """uint8 image -> Cast -> Mul(a) -> Add(b) -> Transpose -> Conv 3x3 -> Relu -> GAP -> Gemm -> Softmax."""
    import onnx
    from onnx import TensorProto as T, helper as h, numpy_helper as nh

    rng = np.random.default_rng(0)
    inits = [nh.from_array(np.array(a, np.float32), "a"), nh.from_array(np.array(b, np.float32), "b"),
             nh.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "W"),
             nh.from_array(np.zeros(8, np.float32), "B"),
             nh.from_array(rng.normal(0, 0.5, (8, 2)).astype(np.float32), "G"), nh.from_array(np.zeros(2, np.float32), "GB")]
    nodes = [
        h.make_node("Cast", ["image"], ["f"], to=T.FLOAT), h.make_node("Mul", ["f", "a"], ["m"]),
        h.make_node("Add", ["m", "b"], ["r"]), h.make_node("Transpose", ["r"], ["t"], perm=[0, 3, 1, 2]),
        h.make_node("Conv", ["t", "W", "B"], ["c"], kernel_shape=[3, 3]), h.make_node("Relu", ["c"], ["re"]),
        h.make_node("GlobalAveragePool", ["re"], ["g"]), h.make_node("Flatten", ["g"], ["fl"]),
        h.make_node("Gemm", ["fl", "G", "GB"], ["lo"]), h.make_node("Softmax", ["lo"], ["probs"], axis=1),
    ]
    for i, n in enumerate(nodes):
        n.name = f"{n.op_type.lower()}_{i}"  # tf2onnx names every node; the quantizer's exclusions go by name
    graph = h.make_graph(nodes, "rescale", [h.make_tensor_value_info("image", T.UINT8, ["N", 16, 16, 3])],
                         [h.make_tensor_value_info("probs", T.FLOAT, ["N", 2])], inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("a, b, folds", [(1 / 128, -127 / 128, True), (1 / 127.5, -1.0, False)])
def test_input_rescale_folds_into_the_quantized_input_only_when_exact(tmp_path, monkeypatch, a, b, folds):
    """EfficientNet-Lite's (x - 127) / 128 is the uint8 image itself at scale 1/128, zero point
    127: the int8 graph loses its rescale ops and computes exactly what it did with them;
    x / 127.5 - 1 (zero point 127.5) is not a whole number and stays as it is."""
    import onnx
    import onnxruntime as ort

    fp32 = _rescale_model(tmp_path / "m.onnx", a, b)
    prepared = tmp_path / "prepared.onnx"
    quantize.prepare(fp32, prepared)
    calib = np.random.default_rng(1).integers(0, 256, (32, 16, 16, 3), dtype=np.uint8)
    folded, plain = tmp_path / "folded.onnx", tmp_path / "plain.onnx"
    quantize.quantize(prepared, folded, calib, "minmax", reduce_range=False)
    monkeypatch.setattr(quantize, "fold_input_rescale", lambda m: False)
    quantize.quantize(prepared, plain, calib, "minmax", reduce_range=False)

    ops = [n.op_type for n in onnx.load(str(folded)).graph.node]
    assert ("Mul" not in ops and "Add" not in ops) == folds, ops
    assert "Mul" in [n.op_type for n in onnx.load(str(plain)).graph.node]
    onnx.checker.check_model(onnx.load(str(folded)))
    x = np.random.default_rng(2).integers(0, 256, (16, 16, 16, 3), dtype=np.uint8)
    run = lambda p: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]  # noqa: E731
    ref, got = run(plain), run(folded)
    np.testing.assert_allclose(got, ref, atol=1e-6)  # the rescale's range is pinned: folding changes nothing
    assert np.abs(got - run(fp32)).max() < 0.05


def depthwise_model(path, size: int = 16, width: int = 32):
    """uint8 image -> Conv 3x3 (3->width) -> Relu -> depthwise Conv 3x3 -> Relu -> depthwise Conv
    5x5 -> Relu -> Conv 1x1 -> Relu -> GAP -> Gemm -> Softmax: an inverted-residual block's shape,
    with 3x3 and 5x5 depthwise filters over a multiple of 16 channels (what sends onnxruntime to
    its specialised depthwise kernels, as EfficientNet-Lite's are). At 8 bits, the first 3x3
    convolution's pairs of products overflow int16 on x86 without VNNI."""
    import onnx
    from onnx import TensorProto as T, helper as h, numpy_helper as nh

    rng = np.random.default_rng(0)
    inits = [nh.from_array(np.array(1 / 255, np.float32), "a"),
             nh.from_array(rng.normal(0, 0.5, (width, 3, 3, 3)).astype(np.float32), "W1"),
             nh.from_array(rng.normal(0, 0.5, (width, 1, 3, 3)).astype(np.float32), "DW3"),
             nh.from_array(rng.normal(0, 0.3, (width, 1, 5, 5)).astype(np.float32), "DW5"),
             nh.from_array(rng.uniform(0.3, 1.0, (width, width, 1, 1)).astype(np.float32) / width, "PW"),
             nh.from_array(rng.normal(0, 0.5, (width, 2)).astype(np.float32), "G"), nh.from_array(np.zeros(2, np.float32), "GB")]
    nodes = [
        h.make_node("Cast", ["image"], ["f"], to=T.FLOAT), h.make_node("Mul", ["f", "a"], ["m"]),
        h.make_node("Transpose", ["m"], ["t"], perm=[0, 3, 1, 2]),
        h.make_node("Conv", ["t", "W1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]), h.make_node("Relu", ["c1"], ["r1"]),
        h.make_node("Conv", ["r1", "DW3"], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=width),
        h.make_node("Relu", ["c2"], ["r2"]),
        h.make_node("Conv", ["r2", "DW5"], ["c3"], kernel_shape=[5, 5], pads=[2, 2, 2, 2], group=width),
        h.make_node("Relu", ["c3"], ["r3"]),
        h.make_node("Conv", ["r3", "PW"], ["c4"], kernel_shape=[1, 1]), h.make_node("Relu", ["c4"], ["r4"]),
        h.make_node("GlobalAveragePool", ["r4"], ["g"]), h.make_node("Flatten", ["g"], ["fl"]),
        h.make_node("Gemm", ["fl", "G", "GB"], ["lo"]), h.make_node("Softmax", ["lo"], ["probs"], axis=1),
    ]
    for i, n in enumerate(nodes):
        n.name = f"{n.op_type.lower()}_{i}"
    graph = h.make_graph(nodes, "depthwise", [h.make_tensor_value_info("image", T.UINT8, ["N", size, size, 3])],
                         [h.make_tensor_value_info("probs", T.FLOAT, ["N", 2])], inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def quantized_weights(path) -> dict[str, np.ndarray]:
    """Each Conv/Gemm's int8 weights in a QDQ model, by the op that uses them."""
    from onnx import numpy_helper as nh

    m = onnx.load(str(path))
    inits = {i.name: nh.to_array(i) for i in m.graph.initializer}
    made_by = {o: n for n in m.graph.node for o in n.output}
    out = {}
    for n in m.graph.node:
        dq = made_by.get(n.input[1]) if n.op_type in ("Conv", "Gemm") else None
        if dq is not None and dq.op_type == "DequantizeLinear" and inits[dq.input[0]].dtype == np.int8:
            group = next((a.i for a in n.attribute if a.name == "group"), 1)
            out[f"{n.op_type}{'-depthwise' if group > 1 else ''}:{n.name}"] = inits[dq.input[0]]
    return out


@pytest.mark.parametrize("reduce_range", [True, False])
def test_depthwise_convolutions_keep_8_bit_weights(tmp_path, reduce_range):
    """7-bit exports give depthwise convolutions full 8-bit weights (their kernels cannot saturate)
    and every other weight 7 bits; an 8-bit export gives every weight 8 bits."""
    prepared = tmp_path / "prepared.onnx"
    quantize.prepare(depthwise_model(tmp_path / "m.onnx"), prepared)
    calib = np.random.default_rng(1).integers(0, 256, (32, 16, 16, 3), dtype=np.uint8)
    quantize.quantize(prepared, tmp_path / "q.onnx", calib, "minmax", reduce_range=reduce_range)
    weights = quantized_weights(tmp_path / "q.onnx")
    assert sum("depthwise" in k for k in weights) == 2 and len(weights) >= 4, list(weights)
    for name, w in weights.items():
        per_channel_max = np.abs(w.reshape(len(w), -1).astype(int)).max(axis=1) if name.startswith("Conv") else None
        if "depthwise" in name or not reduce_range:
            assert np.abs(w.astype(int)).max() == 127, name  # symmetric per-channel: the largest weight is 127
            if per_channel_max is not None:
                assert per_channel_max.min() > 64, name
        else:
            assert np.abs(w.astype(int)).max() <= 64, name  # 255 x 64 x 2 = 32640 fits int16


@pytest.mark.parametrize("group, shape, depthwise", [
    (8, [8, 1, 3, 3], True), (32, [32, 1, 5, 5], True),
    (8, [16, 1, 3, 3], False),  # depth multiplier 2: onnxruntime runs it as a grouped GEMM
    (4, [8, 2, 3, 3], False),  # grouped, two channels a group
    (1, [8, 8, 1, 1], False), (None, [8, 1, 3, 3], False),  # no group attribute: a plain convolution
])
def test_which_convolutions_are_depthwise(group, shape, depthwise):
    from onnx import helper as h

    conv = h.make_node("Conv", ["x", "w"], ["y"], **({"group": group} if group else {}))
    assert quantize._depthwise(conv, shape) is depthwise
    assert quantize._depthwise(conv, None) is False  # weights computed in the graph: left at 7 bits
