"""Static int8 quantization with onnxruntime.quantization, calibrated on real images.

QDQ format, per-channel int8 weights (7-bit, 8-bit in depthwise convolutions: see ``REDUCE_RANGE``), uint8 activations, the model first run through
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
from onnxruntime.quantization.calibrate import (
    HistogramCalibrater,
    HistogramCollector,
    TensorData,
    TensorsData,
    create_calibrator,
    save_tensors_data,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from edgeclf.model import metadata as md
from edgeclf.sysinfo import CPU_FAMILIES

from .qdq_input import bypass_input_quantization, fold_input_rescale

METHODS: dict[str, CalibrationMethod] = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}
FLOAT_OPS = ("Softmax",)  # left in float32 (see module docstring)
#: Images per calibration run: the augmented model outputs every activation, ~30 MB an image for
#: EfficientNet-Lite0 at 160x160, and onnxruntime's arena keeps room for the largest batch.
CALIB_BATCH = 4


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


#: Weights quantized to 7 bits (-64..64) first, whatever CPU exports. onnxruntime's u8 x s8
#: kernels on x86 without VNNI (AVX2, AVX-512) add pairs of products in saturating int16:
#: 255 x 127 x 2 overflows it, 255 x 64 x 2 does not. With full-range weights, an EfficientNet-Lite0
#: exported on a VNNI workstation gave another answer on 6 of 120 photos on an AVX2-only CPU (qemu
#: Haswell); with 7-bit weights (8-bit depthwise ones) it gives the host's probabilities there, and
#: its top-1 on Cortex-A72 and Cortex-A76 (benchmarks/results/int8_cpus.md), so the accuracy the
#: int8 guard measures on the exporting machine is the accuracy on each of them.
REDUCE_RANGE = True
#: Where 7-bit weights were checked (the emulated CPUs of tests/test_devices_emulated.py and this host).
INT8_CPUS = CPU_FAMILIES
#: 7 bits cost some networks accuracy (depthwise convolutions' weights span a wide range: the
#: EfficientNet-Lite0 at 128x128 lost 1.5 points), so depthwise convolutions, which cannot saturate,
#: keep 8 bits (``full_range_depthwise``). Where 7-bit weights fail the accuracy guard, the
#: exporter tries full 8-bit weights, whose results are exact only where no int16 saturation
#: happens: x86 with VNNI and ARM (the runtime warns on any other CPU).
FULL_RANGE_CPUS = ("x86-vnni", "arm64-dotprod", "arm64-neon")


def int8_target(reduce_range: bool = REDUCE_RANGE) -> dict:
    """What an int8 model is made for, for export.json and the model's metadata."""
    if reduce_range:
        return {"cpus": list(INT8_CPUS), "reduce_range": True,
                "why": "7-bit weights (8-bit in depthwise convolutions, whose kernels do not saturate): no int16 "
                       "saturation on x86 without VNNI; the same answers on every CPU listed"}
    return {"cpus": list(FULL_RANGE_CPUS), "reduce_range": False,
            "why": "7-bit weights failed the accuracy guard; 8-bit weights give the measured accuracy on x86 "
                   "with VNNI and on ARM, but may saturate on x86 without VNNI"}


def mark_target(model: onnx.ModelProto, reduce_range: bool = REDUCE_RANGE) -> None:
    """Record in ``model``'s metadata the CPU families it was made for (read by the runtime)."""
    entry = model.metadata_props.add()
    entry.key, entry.value = md.INT8_CPUS, json.dumps(int8_target(reduce_range)["cpus"])


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


def calibration_passes(method: str) -> int:
    """How many times ``calibrate`` runs the calibration images (what its progress counts to, per image)."""
    # The histogram methods stream in two passes (``_histograms``); an older onnxruntime calibrates itself.
    return 2 if method != "minmax" and _takes_range_cache() else 1


def calibrate(prepared_path: Path, calib_images: np.ndarray, method: str, cache_path: Path,
              progress: Callable[[int], None] | None = None) -> TensorsData:
    """Collect activation ranges with ``method`` on ``calib_images``; save them to ``cache_path``
    and return them."""
    with tempfile.TemporaryDirectory(prefix="edgeclf-calib-") as tmp, contextlib.redirect_stdout(io.StringIO()):
        calibrator = create_calibrator(
            str(prepared_path),
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=METHODS[method],
            extra_options=CALIBRATOR_OPTIONS[method],
        )
        if _streams(calibrator):
            calibrator.collector = _histograms(calibrator, calib_images, progress)
        else:  # MinMax keeps two numbers a tensor and image batch: nothing to stream
            calibrator.collect_data(ImageBatches(calib_images, CALIB_BATCH, progress))
        ranges = calibrator.compute_data()
        del calibrator  # its session and augmented model, before the next step needs the memory
    # The pixels are uint8 by contract: their float copy spans exactly 0..255, whatever the
    # calibration images show. Scale 1 / zero point 0 then lets bypass_input_quantization drop a step.
    for name in _input_casts(onnx.load(str(prepared_path))):
        if name in ranges:
            ranges[name] = TensorData(lowest=np.array(0, np.float32), highest=np.array(255, np.float32))
    save_tensors_data(ranges, cache_path)
    return ranges


def _streams(calibrator) -> bool:
    """Whether ``_histograms`` computes what this calibrator's own ``collect_data`` would (histograms of
    values, not of absolute values)."""
    return isinstance(calibrator, HistogramCalibrater) and (calibrator.method != "percentile" or not calibrator.symmetric)


def _histograms(calibrator: HistogramCalibrater, images: np.ndarray, progress: Callable[[int], None] | None):
    """The histograms ``calibrator.collect_data`` would make, holding one batch of activations at a time.

    ``collect_data`` keeps every activation of every image until the end (EfficientNet-Lite0 at
    160x160, 200 images: 8 GB). Here a first pass finds each tensor's range, and the second adds each
    batch to a histogram over that range: bins over a fixed range are additive, so the sums equal
    the histograms of all images taken at once, bin for bin."""
    session = calibrator.infer_session
    names = [o.name for o in session.get_outputs()]
    wanted = [(i, n) for i, n in enumerate(names) if n in calibrator.tensors_to_calibrate]
    low: dict[str, np.ndarray] = {}
    high: dict[str, np.ndarray] = {}
    for outputs in _activations(session, images, progress):
        for i, name in wanted:
            if outputs[i].size:
                lo, hi = np.nanmin(outputs[i]), np.nanmax(outputs[i])
                low[name], high[name] = (lo, hi) if name not in low else (min(low[name], lo), max(high[name], hi))
    collector = HistogramCollector(method=calibrator.method, symmetric=calibrator.symmetric,
                                   num_bins=calibrator.num_bins, num_quantized_bins=calibrator.num_quantized_bins,
                                   percentile=calibrator.percentile, scenario=calibrator.scenario)
    for name in low:  # empty histograms over each tensor's whole range, as collect_value makes them
        threshold = np.array(max(abs(low[name]), abs(high[name])), dtype=low[name].dtype)
        hist, edges = np.histogram(np.empty(0, low[name].dtype), calibrator.num_bins, range=(-threshold, threshold))
        collector.histogram_dict[name] = (hist, edges, low[name], high[name], threshold)
    for outputs in _activations(session, images, progress):
        collector.collect({name: outputs[i] for i, name in wanted if name in low})
    return collector


def _activations(session, images: np.ndarray, progress: Callable[[int], None] | None):
    """The augmented model's outputs, one calibration batch at a time."""
    reader = ImageBatches(images, CALIB_BATCH, progress)
    while (batch := reader.get_next()) is not None:
        yield session.run(None, batch)


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
    reduce_range = REDUCE_RANGE if reduce_range is None else reduce_range
    overrides = full_range_depthwise(model) if reduce_range else {}
    with tempfile.TemporaryDirectory(prefix="edgeclf-quant-") as tmp:
        if _takes_range_cache():
            cache = Path(tmp) / f"ranges-{method}.json"
            calibrate(prepared_path, calib_images, method, cache, progress)
            calibration = {"calibration_data_reader": None, "calibration_cache_path": str(cache),
                           "extra_options": overrides}
        else:  # older onnxruntime: its own calibrator settings (Entropy then equals MinMax)
            calibration = {"calibration_data_reader": ImageBatches(calib_images, progress=progress),
                           "extra_options": {"CalibTensorRangeSymmetric": False, **overrides}}
        # The calibrators print their settings on stdout, which belongs to --json.
        with contextlib.redirect_stdout(io.StringIO()):
            quantize_static(
                str(prepared_path),
                str(out_path),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                reduce_range=reduce_range,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=METHODS[method],
                nodes_to_exclude=exclude,
                **calibration,
            )
    quantized = onnx.load(str(out_path))
    if bypass_input_quantization(quantized) | fold_input_rescale(quantized):
        onnx.save(quantized, str(out_path))


def full_range_depthwise(model: onnx.ModelProto) -> dict:
    """quantize_static's extra option giving depthwise convolutions full 8-bit weights.

    Saturation is a GEMM matter: MLAS's depthwise kernels widen each product to 32 bits (AVX2,
    SSE, generic NEON) or add two of them in 16 bits (its 3x3 and 5x5 ARM kernels), which weights in
    -127..127 keep exact (2 x 128 x 127 = 32512); so 8 bits there cost no CPU its exact results,
    and a depthwise filter of 9 or 25 weights is where the 8th bit counts most."""
    shapes = {i.name: list(i.dims) for i in model.graph.initializer}
    depthwise = {n.input[1]: shapes[n.input[1]][0] for n in model.graph.node
                 if n.op_type == "Conv" and _depthwise(n, shapes.get(n.input[1]))}
    if not depthwise:
        return {}
    # one entry per channel: onnxruntime before 1.18 accepts no shorter list
    return {"TensorQuantOverrides": {w: [{"axis": 0, "reduce_range": False}] * c for w, c in depthwise.items()}}


def _depthwise(conv: onnx.NodeProto, weight_shape: list[int] | None) -> bool:
    """One filter per channel: the only convolution onnxruntime runs with its depthwise kernels."""
    group = next((a.i for a in conv.attribute if a.name == "group"), 1)
    return weight_shape is not None and len(weight_shape) == 4 and group > 1 and weight_shape[:2] == [group, 1]


def _input_casts(model: onnx.ModelProto) -> list[str]:
    """Outputs of the Cast nodes that turn the uint8 ``image`` input into floats."""
    return [n.output[0] for n in model.graph.node if n.op_type == "Cast" and n.input[0] == md.INPUT_NAME]


def _takes_range_cache() -> bool:
    return "calibration_cache_path" in inspect.signature(quantize_static).parameters
