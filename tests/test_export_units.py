"""Export pieces that need no TensorFlow: the parity figures and the int8 policy."""

from __future__ import annotations

import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from edge_runtime import metadata as md  # noqa: E402
from edge_runtime import sysinfo  # noqa: E402
from export import parity, quantize  # noqa: E402


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
