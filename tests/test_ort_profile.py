"""benchmarks/ort_session_bench.py's thread-scaling profile on a real quantized model: onnxruntime's
own per-node profile, on 1 thread and on 2, summed by op type and by feature-map size. Checks
what the table is made of (nodes, groups, totals); never speed."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from conftest import ROOT, TRAIN_EXTRA
from onnx_fixtures import make_conv_model


@pytest.fixture(scope="module")
def int8_conv(tmp_path_factory):
    pytest.importorskip("onnx", reason=TRAIN_EXTRA)
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    d = tmp_path_factory.mktemp("profile")
    fp32 = make_conv_model(d / "conv.onnx", size=64, width=8)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            self.batches = iter([{"image": rng.integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)} for _ in range(4)])

        def get_next(self):
            return next(self.batches, None)

    int8 = d / "conv.int8.onnx"
    quantize_static(str(fp32), str(int8), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)
    return int8


def test_thread_scaling_groups_every_node_once(int8_conv, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    sys.modules.pop("ort_session_bench", None)
    import ort_session_bench as osb

    nodes = osb.node_times(int8_conv, (64, 64), threads=1, runs=60)
    ops = [r["op"] for r in nodes]
    assert ops.count("QLinearConv") == 3  # the three stride-2 convolutions, quantized and fused
    assert all(r["us"] > 0 for r in nodes)

    s = osb.thread_scaling(int8_conv, (64, 64), cores=2, repeats=2)
    assert s["threads"] == 2 and s["nodes"] == len(nodes)
    for key in ("by_op", "by_feature_map"):
        assert sum(g["nodes"] for g in s[key]) == s["nodes"]
        assert sum(g["us_1"] for g in s[key]) == pytest.approx(s["us_1"], abs=0.2 * len(s[key]))
        assert sum(g["us_n"] for g in s[key]) == pytest.approx(s["us_n"], abs=0.2 * len(s[key]))
    maps = {g["group"]: g["nodes"] for g in s["by_feature_map"]}
    # channels-last outputs of the three convolutions: 64 -> 32 -> 16 -> 8; the rest is the head
    assert {k: maps[k] for k in ("32x32", "16x16", "8x8")} == {"32x32": 1, "16x16": 1, "8x8": 1}
    assert set(maps) - {"32x32", "16x16", "8x8"} == {"head (the nodes after the last convolution)"}
