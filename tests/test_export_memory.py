"""int8 calibration holds one batch of activations at a time, not every image's, and still computes
onnxruntime's own ranges, bin for bin.

onnxruntime's histogram calibrators (Entropy, Percentile) keep every activation of every
calibration image until the end: 8 GB for EfficientNet-Lite0 at 160x160 on 200 images, most of
``edgeclf export --int8``'s peak (benchmarks/results/export_memory.md). Memory is measured with
tracemalloc, which sees numpy's and so onnxruntime's output arrays.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from conftest import TRAIN_EXTRA

onnx = pytest.importorskip("onnx", reason=TRAIN_EXTRA)

from onnxruntime.quantization.calibrate import create_calibrator  # noqa: E402

from benchmarks.onnx_models import make_conv_model  # noqa: E402
from edgeclf.export import quantize  # noqa: E402

IMAGES = np.random.default_rng(0).integers(0, 256, (160, 64, 64, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("calib")
    quantize.prepare(make_conv_model(tmp / "m.onnx", size=64, width=16), tmp / "prepared.onnx")
    return tmp / "prepared.onnx"


def onnxruntime_ranges(prepared, method: str, tmp_path):
    """What onnxruntime's own calibrator computes, every image's activations held at once."""
    calibrator = create_calibrator(str(prepared), augmented_model_path=str(tmp_path / "augmented.onnx"),
                                   calibrate_method=quantize.METHODS[method],
                                   extra_options=quantize.CALIBRATOR_OPTIONS[method])
    calibrator.collect_data(quantize.ImageBatches(IMAGES))
    return calibrator.compute_data()


def peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_streamed_calibration_gives_onnxruntimes_ranges(prepared, tmp_path, method):
    seen: list[int] = []
    ours = quantize.calibrate(prepared, IMAGES, method, tmp_path / "ranges.json", progress=seen.append)
    theirs = onnxruntime_ranges(prepared, method, tmp_path)
    inputs = set(quantize._input_casts(onnx.load(str(prepared))))  # pinned to 0..255 on purpose
    assert set(ours.data) == set(theirs.data) and len(ours.data) > 5
    for name in set(theirs.data) - inputs:
        assert all(np.array_equal(a, b) for a, b in zip(ours[name].range_value, theirs[name].range_value)), name
    assert sum(seen) == quantize.calibration_passes(method) * len(IMAGES)  # what the progress bar counts to


def test_calibration_holds_one_batch_of_activations(prepared, tmp_path):
    """A fraction of what holding every image's activations takes (measured: ~1/8 with 10 batches)."""
    theirs = peak_bytes(lambda: onnxruntime_ranges(prepared, "percentile", tmp_path))
    ours = peak_bytes(lambda: quantize.calibrate(prepared, IMAGES, "percentile", tmp_path / "ranges.json"))
    assert theirs > 15e6  # every image's activations: the comparison means something
    assert ours < theirs / 3, (ours, theirs)
