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
from onnx import numpy_helper
from onnxruntime.quantization.calibrate import TensorData, create_calibrator, save_tensors_data
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
        ranges = calibrator.compute_data()
    # The pixels are uint8 by contract: their float copy spans exactly 0..255, whatever the
    # calibration images show. Scale 1 / zero point 0 then lets bypass_input_quantization drop a step.
    for name in _input_casts(onnx.load(str(prepared_path))):
        if name in ranges:
            ranges[name] = TensorData(lowest=np.array(0, np.float32), highest=np.array(255, np.float32))
    save_tensors_data(ranges, cache_path)


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
    quantized = onnx.load(str(out_path))
    if bypass_input_quantization(quantized):
        onnx.save(quantized, str(out_path))


def bypass_input_quantization(model: onnx.ModelProto) -> bool:
    """Feed the uint8 ``image`` straight to the int8 graph where Cast -> QuantizeLinear(scale 1,
    zero point 0, uint8) would only turn the pixels back into the same bytes (exact; measured
    7-20% faster per frame for edgenet at 128x128: two passes over the frame less)."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    changed = False
    for cast in [n for n in model.graph.node if n.op_type == "Cast" and n.input[0] == md.INPUT_NAME]:
        consumers = [n for n in model.graph.node if cast.output[0] in n.input]
        if len(consumers) != 1 or consumers[0].op_type != "QuantizeLinear":
            continue
        q = consumers[0]
        scale, zero = (inits.get(name) for name in (q.input[1], q.input[2] if len(q.input) > 2 else ""))
        if scale is None or zero is None or zero.dtype != np.uint8 or scale.size != 1 or zero.size != 1:
            continue
        if float(scale) != 1.0 or int(zero) != 0 or any(o.name == q.output[0] for o in model.graph.output):
            continue
        for n in model.graph.node:
            for i, name in enumerate(n.input):
                if name == q.output[0]:
                    n.input[i] = md.INPUT_NAME
        model.graph.node.remove(cast)
        model.graph.node.remove(q)
        changed = True
    return changed


def _input_casts(model: onnx.ModelProto) -> list[str]:
    """Outputs of the Cast nodes that turn the uint8 ``image`` input into floats."""
    return [n.output[0] for n in model.graph.node if n.op_type == "Cast" and n.input[0] == md.INPUT_NAME]


def _takes_range_cache() -> bool:
    return "calibration_cache_path" in inspect.signature(quantize_static).parameters
