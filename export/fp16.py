"""A float16 copy of the fp32 export, for GPUs (Jetson): half the size, same uint8 input and
float32 ``probs`` output (``keep_io_types``), converted with onnxruntime's float16 tool."""

from __future__ import annotations

import onnx


def to_fp16(proto: onnx.ModelProto) -> onnx.ModelProto:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    # Softmax stays float32: fp16 probabilities lose the small ones.
    return convert_float_to_float16(proto, keep_io_types=True, op_block_list=["Softmax"])
