"""Static int8 quantization with onnxruntime.quantization, calibrated on real images.

QDQ format, per-channel int8 weights (7-bit: see ``REDUCE_RANGE``), uint8 activations, the model first run through
``quant_pre_process`` (shape inference + graph clean-up, so the quantizer sees fused Conv+BN).
onnxruntime then fuses each DequantizeLinear -> Conv -> ReLU -> QuantizeLinear into one
QLinearConv at session start. The softmax stays in float: it is a handful of values, and a
uint8 softmax would round the output probabilities to steps of 1/256.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
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
from edge_runtime.sysinfo import CPU_FAMILIES

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


#: Weights quantized to 7 bits (-64..63) on every export, whatever CPU exports. onnxruntime's
#: u8 x s8 kernels on x86 without VNNI (AVX2, AVX-512) add pairs of products in saturating int16:
#: 255 x 127 x 2 overflows it, 255 x 64 x 2 does not. With full-range weights, a model exported on
#: a VNNI workstation gave another answer on 8 of 30 images on an AVX2-only CPU (qemu Haswell);
#: with 7-bit weights it gives bit-identical probabilities on x86 with and without VNNI, Cortex-A72
#: and Cortex-A76 (benchmarks/results/int8_cpus.md), so the accuracy the int8 guard measures on
#: the exporting machine is the accuracy on each of them.
REDUCE_RANGE = True
#: Where this policy was checked (the emulated CPUs of tests/test_devices_emulated.py and this host).
INT8_CPUS = CPU_FAMILIES


def int8_target() -> dict:
    """What an int8 model is made for, for export.json and the model's metadata."""
    return {"cpus": list(INT8_CPUS), "reduce_range": REDUCE_RANGE,
            "why": "7-bit weights: no int16 saturation on x86 without VNNI; the same results on every CPU listed"}


def mark_target(model: onnx.ModelProto) -> None:
    """Record in ``model``'s metadata the CPU families it was made for (read by the runtime)."""
    entry = model.metadata_props.add()
    entry.key, entry.value = md.INT8_CPUS, json.dumps(list(INT8_CPUS))


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
                reduce_range=REDUCE_RANGE if reduce_range is None else reduce_range,
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
