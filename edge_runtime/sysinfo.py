"""What machine is this, and how much memory did we use? (Standard library only: it runs on the device.)"""

from __future__ import annotations

import os
import platform
import resource
import sys
from pathlib import Path

#: ARM cores by (implementer, part) from /proc/cpuinfo, which on ARM has no "model name" line.
ARM_CORES = {
    (0x41, 0xD03): "Cortex-A53", (0x41, 0xD04): "Cortex-A35", (0x41, 0xD05): "Cortex-A55",
    (0x41, 0xD07): "Cortex-A57", (0x41, 0xD08): "Cortex-A72", (0x41, 0xD09): "Cortex-A73",
    (0x41, 0xD0A): "Cortex-A75", (0x41, 0xD0B): "Cortex-A76", (0x41, 0xD0C): "Neoverse-N1",
    (0x41, 0xD0D): "Cortex-A77", (0x41, 0xD40): "Neoverse-V1", (0x41, 0xD41): "Cortex-A78",
    (0x41, 0xD42): "Cortex-A78AE", (0x41, 0xD44): "Cortex-X1", (0x41, 0xD46): "Cortex-A510",
    (0x41, 0xD47): "Cortex-A710", (0x41, 0xD48): "Cortex-X2", (0x41, 0xD49): "Neoverse-N2",
    (0x41, 0xD4B): "Cortex-A78C", (0x41, 0xD4F): "Neoverse-V2", (0x41, 0xD80): "Cortex-A520",
    (0x41, 0xD81): "Cortex-A720", (0x41, 0xD82): "Cortex-X4", (0x41, 0xD87): "Cortex-A725",
    (0x4E, 0x004): "NVIDIA Carmel",
}


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def _arm_cores(pairs: list[tuple[str, str]]) -> str:
    """The distinct cores named by cpuinfo's implementer/part lines, in order ("Cortex-A55 + Cortex-A76")."""
    names: list[str] = []
    implementer = 0
    for key, value in pairs:
        try:
            number = int(value, 0)
        except ValueError:
            continue
        if key == "cpu implementer":
            implementer = number
        elif key == "cpu part":
            name = ARM_CORES.get((implementer, number), f"ARM part 0x{implementer:02x}:0x{number:03x}")
            if name not in names:
                names.append(name)
    return " + ".join(names)


def cpu_model(cpuinfo: str | None = None, board: str | None = None) -> str:
    """The CPU's name ("AMD EPYC 9B14", "Cortex-A72 (Raspberry Pi 4 Model B Rev 1.4)", "Cortex-A78AE
    (NVIDIA Jetson AGX Orin)", ...): the core from /proc/cpuinfo, the board from its "Model" line or
    else the device tree. Benchmark records are matched to a machine by this name."""
    if cpuinfo is None:
        cpuinfo = _read("/proc/cpuinfo")
    pairs = []
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        pairs.append((key.strip().lower(), value.strip()))
    name, arm = next((v for k, v in pairs if k == "model name" and v), ""), _arm_cores(pairs)
    if arm and (not name or name.startswith("ARMv")):  # 32-bit ARM kernels: "ARMv7 Processor rev 3 (v7l)"
        name = arm
    if board is None:
        board = next((v for k, v in pairs if k == "model" and v and not v.isdigit()), "")  # x86: "model : 17"
        if not board and any(k == "cpu part" for k, _ in pairs):
            board = _read("/proc/device-tree/model")
    board = board.replace("\0", "").strip()
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
