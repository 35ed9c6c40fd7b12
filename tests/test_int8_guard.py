"""The int8 guard's decision (export/int8.py ``judge``): a paired comparison of int8 with fp32 on
the same photos, each figure with its uncertainty, so that one photo cannot decide either way and
real damage is still caught; the stratified sample of training photos it is judged on
(export/data.py); and its figures from real onnxruntime sessions."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import TRAIN_EXTRA

onnx = pytest.importorskip("onnx", reason=TRAIN_EXTRA)

from edgeclf.export import data, int8, quantize  # noqa: E402
from edgeclf.metrics import wilson_interval  # noqa: E402


# ---------------------------------------------------------------------------- the decision on counts
def test_one_flip_in_48_is_accepted():
    """The face-mask case: 97.92% vs 100% on 48 validation photos rejected a good int8 model."""
    g = int8.judge(48, 1, 0, 0.01)
    assert g["accepted"] and g["reasons"] == []
    assert g["drop"] == pytest.approx(1 / 48) and g["drop_ci95"][0] < 0 < g["drop_ci95"][1]
    assert g["top1_agreement"] == pytest.approx(47 / 48) and g["top1_agreement_ci95"][1] > 0.97


def test_25_flips_of_500_are_rejected():
    """A model that loses 5% of 500 photos: the drop and the agreement are both credibly out of bounds."""
    g = int8.judge(500, 25, 0, 0.01)
    assert not g["accepted"]
    assert g["drop_ci95"][0] > 0.03 and g["top1_agreement_ci95"][1] < 0.97
    assert g["reasons"] == ["drop credibly above --max-drop 0.01", "top-1 agreement credibly below its 97.0% floor"]


def test_int8_better_than_fp32_is_accepted():
    for n, c in ((48, 1), (48, 3), (300, 8), (2000, 40)):
        g = int8.judge(n, 0, c, 0.01)
        if c / n <= 0.03:  # at most the churn the floor allows
            assert g["accepted"], (n, c, g)
        assert g["drop"] < 0 and g["drop_ci95"][0] < 0


def test_agreement_far_below_the_floor_is_rejected_even_with_no_net_drop():
    g = int8.judge(500, 30, 30, 0.01)  # as many photos gained as lost: no drop, but 12% of answers changed
    assert g["drop"] == 0 and g["drop_ci95"][0] < 0
    assert not g["accepted"] and g["reasons"] == ["top-1 agreement credibly below its 97.0% floor"]
    # with more than two classes, photos both get wrong but differently count as disagreements too
    g = int8.judge(500, 0, 0, 0.01, n_disagree=60)
    assert not g["accepted"] and g["top1_agreement"] == pytest.approx(0.88)


def test_a_single_photo_cannot_decide_either_way():
    for n in (48, 100, 300, 912, 2000):
        assert int8.judge(n, 1, 0, 0.01)["accepted"] and int8.judge(n, 0, 1, 0.01)["accepted"]
    # a credible 2-point drop on 2,000 photos is caught, and one photo more or less does not change that
    assert not int8.judge(2000, 40, 0, 0.01)["accepted"] and not int8.judge(2000, 39, 0, 0.01)["accepted"]


def test_probability_change_is_judged_with_its_uncertainty():
    assert not int8.judge(500, 0, 0, 0.01, prob_change=(0.2, 0.1))["accepted"]
    g = int8.judge(500, 0, 0, 0.01, prob_change=(0.03, 0.05))
    assert g["accepted"] and g["mean_prob_change_ci95"][1] == pytest.approx(0.03 + 1.96 * 0.05 / math.sqrt(500), abs=1e-4)
    g = int8.judge(10, 0, 0, 0.01, prob_change=(0.06, 0.1))  # above the limit, but on 10 photos: not credibly
    assert g["accepted"] and g["mean_prob_change_ci95"][0] < 0.05


def test_drop_interval_is_the_wilson_interval_of_the_discordant_photos():
    """b of the m = b + c photos where exactly one model is right: (lo, hi) for b/m gives the
    drop's m/n (2 lo - 1) to m/n (2 hi - 1)."""
    lo, hi = wilson_interval(7, 10)
    assert int8.drop_interval(200, 7, 3) == pytest.approx((10 / 200 * (2 * lo - 1), 10 / 200 * (2 * hi - 1)))
    assert int8.drop_interval(200, 0, 0) == (0.0, 0.0)
    # the lower end above --max-drop is what rejects
    assert int8.judge(200, 7, 3, -0.01)["accepted"] is (10 / 200 * (2 * lo - 1) <= -0.01)


def test_limits_follow_max_drop():
    """The default's floor and limit (97%, 5 points), looser with a looser --max-drop, never tighter
    than the default's; --max-drop 1 (benchmarks measure, they do not gate) accepts anything."""
    assert int8.limits(0.01) == {"max_drop": 0.01, "agreement_floor": pytest.approx(0.97), "max_mean_prob_change": 0.05}
    assert int8.limits(0.0)["agreement_floor"] == pytest.approx(0.97)
    assert int8.limits(0.1)["agreement_floor"] == pytest.approx(0.7)
    assert int8.judge(100, 100, 0, 1.0, prob_change=(1.0, 0.0))["accepted"]
    assert not int8.judge(100, 0, 0, -1)["accepted"]  # a negative --max-drop asks for a credible gain


def test_compare_counts_from_probabilities():
    fp32 = np.array([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]], np.float32)
    q = np.array([[0.8, 0.15, 0.05], [0.6, 0.3, 0.1], [0.3, 0.2, 0.5], [0.2, 0.3, 0.5]], np.float32)
    labels = np.array([0, 1, 2, 1])  # photo 2: int8 loses it; photo 4: both wrong, differently
    g = int8.compare(fp32, q, labels, 0.01)
    assert (g["n"], g["fp32_right_int8_wrong"], g["int8_right_fp32_wrong"]) == (4, 1, 0)
    assert g["top1_agreement"] == 0.5 and g["accuracy_fp32"] == 0.75 and g["accuracy_int8"] == 0.5
    assert g["mean_prob_change"] == pytest.approx((0.1 + 0.5 + 0.1 + 0.4) / 4)
    json.dumps(g, allow_nan=False)  # export.json takes it as it is


def test_what_the_verdict_rests_on_is_said():
    assert int8.judged_on(48, 864, 0) == "912 photos (48 validation + 864 training)"
    assert int8.judged_on(48, 240, 200) == "288 photos (48 validation + 240 training, 200 of them used for calibration)"
    assert int8.judged_on(30, 0, 0) == "30 photos (30 validation)"
    line = int8.describe(int8.judge(500, 25, 0, 0.01))
    assert "agreement 95.00% (95% CI 92.7-96.6%, floor 97%)" in line and "drop +5.00 points (95% CI +3.67 to +5.00" in line
    assert "\n" not in line


# ------------------------------------------------------------------------- the photos it judges on
def test_stratified_sample_keeps_each_class_share():
    paths = [f"p{i}" for i in range(100)]
    labels = [0] * 70 + [1] * 20 + [2] * 10
    keep = data.stratified_sample(paths, labels, 30, seed=0)
    assert keep == sorted(keep) and len(set(keep)) == 30
    assert [sum(labels[i] == c for i in keep) for c in range(3)] == [21, 6, 3]
    assert keep == data.stratified_sample(paths, labels, 30, seed=0) != data.stratified_sample(paths, labels, 30, seed=1)
    assert data.stratified_sample(paths, labels, 100, seed=0) == list(range(100))
    assert data.stratified_sample(paths, labels, 0, seed=0) == []
    assert len(data.stratified_sample(paths, [0] * 99 + [1], 7, seed=0)) == 7  # largest remainders fill it


# -------------------------------------------------------------------------------- real sessions
def test_guard_on_real_sessions(tmp_path):
    """fp32 and its int8 model in onnxruntime, judged on the same images: a faithful int8 model
    passes with every figure said; a model that answers otherwise is caught."""
    import onnxruntime as ort

    from benchmarks.onnx_models import make_conv_model

    fp32 = make_conv_model(tmp_path / "m.onnx", size=32, width=8)
    quantize.prepare(fp32, tmp_path / "prepared.onnx")
    images = np.random.default_rng(0).integers(0, 256, (300, 32, 32, 3), dtype=np.uint8)
    run = lambda p: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"image": images})[0]  # noqa: E731
    ref = run(fp32)
    labels = ref.argmax(1)  # fp32 right on every photo: any loss is int8's
    quantize.quantize(tmp_path / "prepared.onnx", tmp_path / "int8.onnx", images[:64], "minmax", reduce_range=True)
    g = int8.compare(ref, run(tmp_path / "int8.onnx"), labels, 0.01)
    assert g["n"] == 300 and g["accuracy_fp32"] == 1.0
    assert g["accepted"], int8.describe(g)
    assert g["top1_agreement"] == 1 - (g["fp32_right_int8_wrong"] / 300)  # fp32 right everywhere: a change is a loss
    json.dumps(g, allow_nan=False)

    # a model that is not the same any more (other weights: what a broken quantization amounts to)
    other = make_conv_model(tmp_path / "other.onnx", size=32, width=8, seed=1)
    g = int8.compare(ref, run(other), labels, 0.01)
    assert not g["accepted"] and "drop credibly above --max-drop 0.01" in g["reasons"], int8.describe(g)
