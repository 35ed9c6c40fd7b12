"""How many threads: the one policy for the CPU provider's thread count.

Every count starts from ``sysinfo.cpu_cores()`` (the cores this process may run on). Callers look
``default_threads`` up on this module (``threads.default_threads()``), so tests can patch it here.
"""

from __future__ import annotations

from edgeclf import sysinfo
from edgeclf.errors import EdgeclfError

#: ``--threads`` may ask for at most this many threads per usable core: more only adds contention
#: (and onnxruntime starts every one of them, so 100000 would never finish starting).
THREADS_PER_CORE = 4


def default_threads(cpu_count: int | None = None) -> int:
    """Intra-op threads for the CPU provider: one per core this process may use, at most 4.

    On 2-4 core boards (Raspberry Pi, Jetson Nano) that is every core; more threads than cores
    only adds contention with the capture/decoding thread, and beyond 4 a small CNN gains little.
    """
    if cpu_count is None:
        cpu_count = sysinfo.cpu_cores()
    return max(1, min(4, cpu_count))


def check_threads(threads: int, cpu_count: int | None = None) -> int:
    """``threads`` if it is 1 to ``THREADS_PER_CORE`` x the usable cores, else a one-line error."""
    cores = cpu_count or sysinfo.cpu_cores()
    most = THREADS_PER_CORE * cores
    if not 1 <= threads <= most:
        raise EdgeclfError(f"--threads {threads}: must be 1 to {most} ({THREADS_PER_CORE} x the {cores} "
                           f"core{'s' * (cores > 1)} this process may use)")
    return threads
