"""Static int8 quantization with onnxruntime.quantization, calibrated on real images.

QDQ format, per-channel int8 weights, uint8 activations, the model first run through
``quant_pre_process`` (shape inference + graph clean-up, so the quantizer sees fused Conv+BN).
onnxruntime then fuses each DequantizeLinear -> Conv -> ReLU -> QuantizeLinear into one
QLinearConv at session start. The softmax stays in float: it is a handful of values, and a
uint8 softmax would round the output probabilities to steps of 1/256.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import platform
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data
from onnxruntime.quantization.shape_inference import quant_pre_process

from edge_runtime import metadata as md

METHODS: dict[str, CalibrationMethod] = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}
FLOAT_OPS = ("Softmax",)  # left in float32 (see module docstring)


class ImageBatches(CalibrationDataReader):
    """Feeds uint8 RGB images [N, H, W, 3] to the calibrator in equal batches, reporting progress.

    Batches are equal (the largest divisor of N up to ``batch_size``) because onnxruntime's
    histogram calibrators (Entropy, Percentile) fail on a shorter last batch.
    """

    def __init__(self, images: np.ndarray, batch_size: int = 16, progress: Callable[[int], None] | None = None) -> None:
        n = max(len(images), 1)
        self.batch_size = max(d for d in range(1, max(1, batch_size) + 1) if n % d == 0)
        self.images, self.progress = images, progress
        self.start = 0

    def get_next(self) -> dict | None:
        if self.start >= len(self.images):
            return None
        batch = self.images[self.start : self.start + self.batch_size]
        self.start += self.batch_size
        if self.progress:
            self.progress(len(batch))
        return {md.INPUT_NAME: batch}

    def rewind(self) -> None:
        self.start = 0


def cpu_has_vnni() -> bool:
    """Whether this x86 CPU has VNNI (AVX512-VNNI or AVX-VNNI) integer dot-product instructions."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


def needs_reduce_range() -> bool:
    """onnxruntime's advice: 7-bit weights on x86 CPUs without VNNI, where the u8s8 instruction
    (vpmaddubsw) can saturate; full range on VNNI CPUs and on ARM."""
    machine = platform.machine().lower()
    return machine in ("x86_64", "amd64", "i386", "i686") and not cpu_has_vnni()


def prepare(fp32_path: Path, out_path: Path) -> None:
    """``quant_pre_process`` (ONNX shape inference and optimisation; symbolic shape inference is
    for transformer-style dynamic shapes and is skipped: CNN shapes are static but the batch)."""
    quant_pre_process(str(fp32_path), str(out_path), skip_symbolic_shape=True)


# ORT's Entropy defaults (128 histogram bins, 128 quantized bins) leave the KL search a single
# candidate, the full range, so Entropy came out identical to MinMax; 2048 bins (TensorRT's
# choice) give it real thresholds to choose from. Ranges are asymmetric: activations are uint8.
CALIBRATOR_OPTIONS: dict[str, dict] = {
    "minmax": {"symmetric": False},
    "entropy": {"symmetric": False, "num_bins": 2048, "num_quantized_bins": 128},
    "percentile": {"symmetric": False, "num_bins": 2048, "percentile": 99.999},
}


def calibrate(prepared_path: Path, calib_images: np.ndarray, method: str, cache_path: Path,
              progress: Callable[[int], None] | None = None) -> None:
    """Collect activation ranges with ``method`` on ``calib_images``; save them to ``cache_path``."""
    with tempfile.TemporaryDirectory(prefix="edgeclf-calib-") as tmp, contextlib.redirect_stdout(io.StringIO()):
        calibrator = create_calibrator(
            str(prepared_path),
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=METHODS[method],
            extra_options=CALIBRATOR_OPTIONS[method],
        )
        calibrator.collect_data(ImageBatches(calib_images, progress=progress))
        save_tensors_data(calibrator.compute_data(), cache_path)


def quantize(
    prepared_path: Path,
    out_path: Path,
    calib_images: np.ndarray,
    method: str,
    reduce_range: bool | None = None,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Write a QDQ int8 model of ``prepared_path`` calibrated with ``method`` on ``calib_images``."""
    model = onnx.load(str(prepared_path))
    exclude = [n.name for n in model.graph.node if n.op_type in FLOAT_OPS]
    with tempfile.TemporaryDirectory(prefix="edgeclf-quant-") as tmp:
        if _takes_range_cache():
            cache = Path(tmp) / f"ranges-{method}.json"
            calibrate(prepared_path, calib_images, method, cache, progress)
            calibration = {"calibration_data_reader": None, "calibration_cache_path": str(cache)}
        else:  # older onnxruntime: its own calibrator settings (Entropy then equals MinMax)
            calibration = {"calibration_data_reader": ImageBatches(calib_images, progress=progress),
                           "extra_options": {"CalibTensorRangeSymmetric": False}}
        # The calibrators print their settings on stdout, which belongs to --json.
        with contextlib.redirect_stdout(io.StringIO()):
            quantize_static(
                str(prepared_path),
                str(out_path),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                reduce_range=needs_reduce_range() if reduce_range is None else reduce_range,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=METHODS[method],
                nodes_to_exclude=exclude,
                **calibration,
            )


def _takes_range_cache() -> bool:
    return "calibration_cache_path" in inspect.signature(quantize_static).parameters
