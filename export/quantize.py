"""Static int8 quantization with onnxruntime.quantization, calibrated on real images.

QDQ format, per-channel int8 weights, uint8 activations, the model first run through
``quant_pre_process`` (shape inference + graph clean-up, so the quantizer sees fused Conv+BN).
onnxruntime then fuses each DequantizeLinear -> Conv -> ReLU -> QuantizeLinear into one
QLinearConv at session start. The softmax stays in float: it is a handful of values, and a
uint8 softmax would round the output probabilities to steps of 1/256.
"""

from __future__ import annotations

import contextlib
import io
import platform
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
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
    # The calibrators print their settings on stdout, which belongs to --json.
    with contextlib.redirect_stdout(io.StringIO()):
        quantize_static(
            str(prepared_path),
            str(out_path),
            ImageBatches(calib_images, progress=progress),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=needs_reduce_range() if reduce_range is None else reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=METHODS[method],
            nodes_to_exclude=exclude,
            extra_options={"CalibTensorRangeSymmetric": False},
        )
