"""What machine is this, how much memory did we use, and how fast can its CPU multiply?

Standard library, numpy and (for the int8 probe) onnxruntime only: it runs on the device.
"""

from __future__ import annotations

import base64
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def cpu_model() -> str:
    """The CPU's marketing name ("AMD EPYC 9B14", "Cortex-A72 (Raspberry Pi 4 Model B)", ...)."""
    name = board = ""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            key, value = key.strip().lower(), value.strip()
            if key == "model name" and not name:
                name = value
            elif key == "model" and not board and not value.isdigit():  # ARM boards: "Raspberry Pi 4 ..."
                board = value
    except OSError:
        pass
    if not name:
        name = platform.processor() or platform.machine() or "unknown"
    return f"{name} ({board})" if board else name


#: The CPU families whose int8 arithmetic differs, by what onnxruntime's int8 kernels do on them:
#: x86 with VNNI (exact u8 x s8 dot products), x86 with AVX2 or AVX-512 but no VNNI (u8 x s8 pairs
#: summed in saturating int16: full-range weights can overflow), ARM with the dot-product
#: extension (Cortex-A76, Pi 5) and ARM with NEON only (Cortex-A72, Pi 4).
CPU_FAMILIES = ("x86-vnni", "x86-avx2", "arm64-dotprod", "arm64-neon")


def cpu_family(cpuinfo: str | None = None, machine: str | None = None) -> str:
    """This CPU's family for int8 inference (one of ``CPU_FAMILIES``, else "x86-sse" or the machine
    name), read from /proc/cpuinfo's feature flags."""
    machine = (machine or platform.machine()).lower()
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            cpuinfo = ""
    flags = set(cpuinfo.split())
    if machine in ("x86_64", "amd64"):
        if flags & {"avx512_vnni", "avx_vnni"}:
            return "x86-vnni"
        return "x86-avx2" if "avx2" in flags else "x86-sse"
    if machine in ("aarch64", "arm64"):
        return "arm64-dotprod" if "asimddp" in flags else "arm64-neon"
    return machine


def cpu_cores() -> int:
    """Cores this process may run on (respects taskset / container CPU sets)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def available_memory_bytes() -> int:
    """Memory the system can give without swapping (MemAvailable; total memory where unknown)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 30


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork+exec, so a
    # process started by a big one (a test runner, a benchmark driver) would report the parent's.
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


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


def python_env(**overrides: str) -> dict[str, str]:
    """This process's environment for a child Python that imports edgeclf, also when edgeclf runs
    from a source tree rather than an installed package."""
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, **overrides}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


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
    from .session import open_session  # imports onnxruntime, which only this probe needs

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
    env = python_env(**{k: "1" for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")})
    code = f"from edgeclf.sysinfo import {probe} as m; print(m(seconds={seconds}))"
    try:
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True)
        return float(out.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError, OSError):
        if precision == "int8":
            return int8_matmul_peak_gops(seconds=seconds)  # already one thread
        return matmul_peak_gflops(seconds=seconds) / cpu_cores()  # rough, but better than nothing


def describe() -> dict:
    """The machine in a few fields, for benchmark reports."""
    return {
        "cpu": cpu_model(),
        "cores": cpu_cores(),
        "arch": platform.machine(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }
