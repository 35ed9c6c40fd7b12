"""Multiply-accumulates per frame of an ONNX model, without the ``onnx`` package.

onnxruntime's profiler records every node's real input and output shapes; one profiled run at
batch 1 (graph optimisations off, so the nodes are the model's own) gives the work of each
convolution and matrix multiply. Element-wise ops, pooling and softmax are not counted: they are
a rounding error next to the convolutions, and the usual MAC figures leave them out too.
"""

from __future__ import annotations

import json
import os
import tempfile
from math import prod
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgeclf.model.session import open_session

# Ops whose work is  output elements x (weights per output channel); the weight is the 4-D input.
CONV_OPS = {"Conv", "ConvInteger", "QLinearConv", "FusedConv", "NhwcConv", "NhwcFusedConv"}
# Ops whose work is  output elements x inner dimension (the first input's last axis).
MATMUL_OPS = {
    "MatMul", "Gemm", "FusedMatMul", "FusedGemm", "QGemm", "QLinearMatMul", "MatMulInteger",
    "MatMulIntegerToFloat", "DynamicQuantizeMatMul",
}


# Ops that multiply in integers (onnxruntime's QGEMM kernels): a model that runs them runs int8.
INTEGER_OPS = {"QLinearConv", "ConvInteger", "QLinearMatMul", "MatMulInteger", "QGemm", "MatMulIntegerToFloat",
               "DynamicQuantizeMatMul", "NhwcQLinearConv"}


def _shapes(entries: list[dict]) -> list[list[int]]:
    return [next(iter(e.values())) for e in entries]


def node_macs(op: str, inputs: list[list[int]], outputs: list[list[int]]) -> int:
    """MACs of one profiled node (0 for ops that are not convolutions or matrix multiplies)."""
    if not outputs or not inputs:
        return 0
    out = prod(outputs[0])
    if op in CONV_OPS:
        weights = [s for s in inputs[1:] if len(s) == 4]
        return out * prod(weights[0][1:]) if weights else 0
    if op in MATMUL_OPS:
        return out * inputs[0][-1] if inputs[0] else 0
    return 0


def _profile(model_path: str | os.PathLike, input_shape: tuple[int, ...], input_dtype, optimized: bool) -> list[dict]:
    """onnxruntime's profile events of one run on zeros."""
    # Pre-packed weights vanish from the profile's input shapes; unoptimised, keep them visible.
    raw = {} if optimized else {"graph_optimization_level": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                                "config": {"session.disable_prepacking": "1"}}
    with tempfile.TemporaryDirectory() as tmp:
        sess = open_session(model_path, threads=1, enable_profiling=True, profile_file_prefix=str(Path(tmp) / "macs"), **raw)
        feed = {sess.get_inputs()[0].name: np.zeros(input_shape, input_dtype)}
        sess.run(None, feed)
        return json.loads(Path(sess.end_profiling()).read_text())


def runs_integer_kernels(model_path: str | os.PathLike, input_shape: tuple[int, ...], input_dtype=np.uint8) -> bool:
    """Whether onnxruntime's CPU provider, graph optimised as for inference, runs any integer
    convolution or matrix multiply (a QDQ model's DequantizeLinear -> Conv becomes QLinearConv)."""
    events = _profile(model_path, input_shape, input_dtype, optimized=True)
    return any(e.get("cat") == "Node" and e.get("args", {}).get("op_name") in INTEGER_OPS for e in events)


def count_macs(model_path: str | os.PathLike, input_shape: tuple[int, ...], input_dtype=np.uint8) -> int | None:
    """MACs for one input of ``input_shape`` (batch 1), or None when the profile has no shapes."""
    events = _profile(model_path, input_shape, input_dtype, optimized=False)
    total, seen = 0, False
    for e in events:
        args = e.get("args", {})
        if e.get("cat") != "Node" or "input_type_shape" not in args:
            continue
        seen = True
        total += node_macs(args.get("op_name", ""), _shapes(args["input_type_shape"]), _shapes(args.get("output_type_shape", [])))
    return total if seen else None
