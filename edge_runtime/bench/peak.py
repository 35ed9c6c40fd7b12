"""How fast can one core of this CPU multiply, in the precision a model runs in?

``edgeclf bench`` holds a model's throughput against this measured peak. numpy and (for the int8
probe) onnxruntime only: it runs on the device.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time

import numpy as np

from edgeclf.sysinfo import cpu_cores


def matmul_peak_gflops(n: int = 512, seconds: float = 0.3) -> float:
    """Measured float32 matrix-multiply speed of numpy's BLAS in this process, best of repeated runs."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty_like(a)
    np.matmul(a, b, out=out)  # warm-up: BLAS thread pool start, page faults
    best = float("inf")
    deadline = time.perf_counter() + seconds
    while True:
        t0 = time.perf_counter()
        np.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - t0)
        if time.perf_counter() > deadline:
            break
    return 2.0 * n**3 / best / 1e9


# MatMulInteger(a uint8 [n,k], b int8 [k,m], zero points 128 and 0) -> int32 [n,m], opset 13: the
# u8 x s8 integer GEMM (MLAS QGEMM) that onnxruntime's quantized convolutions run on. Stored as
# bytes because the device install has no ``onnx`` package; tests rebuild it with onnx.helper.
INT8_MATMUL_ONNX = base64.b64decode(
    "CAgSB2VkZ2VjbGY6mQEKJAoBYQoBYgoEYV96cAoEYl96cBIBeSINTWF0TXVsSW50ZWdlchIRaW50OF9tYXRtdWxfcHJvYmUqDBACKgKAAUIEYV96"
    "cCoLEAMqAQBCBGJfenBaFQoBYRIQCg4IAhIKCgMSAW4KAxIBa1oVCgFiEhAKDggDEgoKAxIBawoDEgFtYhUKAXkSEAoOCAYSCgoDEgFuCgMSAW1C"
    "BAoAEA0="
)

PEAK_PROBES = {
    "float32": "numpy float32 512x512 matmul on one core, best of 0.3 s, times the threads used",
    "int8": "onnxruntime MatMulInteger uint8 x int8 512x512 on one core, best of 0.3 s, times the threads used",
}


def int8_matmul_peak_gops(n: int = 512, seconds: float = 0.3) -> float:
    """Measured uint8 x int8 matrix-multiply speed of onnxruntime on one thread (2 ops per MAC)."""
    from edgeclf.model.session import open_session  # imports onnxruntime, which only this probe needs

    sess = open_session(INT8_MATMUL_ONNX, threads=1, inter_op_num_threads=1)
    rng = np.random.default_rng(0)
    feed = {"a": rng.integers(0, 256, (n, n), dtype=np.uint8), "b": rng.integers(-128, 128, (n, n), dtype=np.int8)}
    sess.run(None, feed)  # warm-up
    best = float("inf")
    deadline = time.perf_counter() + seconds
    while True:
        t0 = time.perf_counter()
        sess.run(None, feed)
        best = min(best, time.perf_counter() - t0)
        if time.perf_counter() > deadline:
            break
    return 2.0 * n**3 / best / 1e9


def core_peak_gflops(seconds: float = 0.3, precision: str = "float32") -> float:
    """Measured matrix-multiply speed of ONE core in the given precision (``float32``: numpy's
    BLAS pinned to one thread; ``int8``: onnxruntime's integer GEMM on one thread).

    A practical ceiling per core for a network of that precision, so the fraction of it a model
    reaches means something: an int8 model is held against the int8 peak. Measured on one core in
    a child process because a multi-threaded probe collapses whenever another process holds a
    core, while the one-core figure stays stable; the machine's peak is this times the cores used.
    """
    probe = {"float32": "matmul_peak_gflops", "int8": "int8_matmul_peak_gops"}[precision]
    env = {**os.environ, **{k: "1" for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}}
    code = f"from {__name__} import {probe} as m; print(m(seconds={seconds}))"  # this module, wherever it lives
    try:
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True)
        return float(out.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError, OSError):
        if precision == "int8":
            return int8_matmul_peak_gops(seconds=seconds)  # already one thread
        return matmul_peak_gflops(seconds=seconds) / cpu_cores()  # rough, but better than nothing
