"""What machine is this, and how much memory did we use? (Standard library only: it runs on the device.)"""

from __future__ import annotations

import os
import platform
import resource
import sys
from pathlib import Path


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


def usable_cpus() -> set[int]:
    """The ids of the CPUs this process may run on (respects taskset / container CPU sets)."""
    try:
        return set(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return set(range(os.cpu_count() or 1))


def cpu_cores() -> int:
    """How many cores this process may run on: the one count every thread and worker default
    starts from (``edgeclf.model.threads``)."""
    return len(usable_cpus())


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


def describe() -> dict:
    """The machine in a few fields, for benchmark reports."""
    return {
        "cpu": cpu_model(),
        "cores": cpu_cores(),
        "arch": platform.machine(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }
