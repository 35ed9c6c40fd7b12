"""The suite's CPU-dependent int8 tests on an x86 CPU with AVX2 but no VNNI, emulated by qemu user mode.

One CI machine is such a CPU: there onnxruntime's u8 x s8 kernels add pairs of products in
saturating int16 (tests/int8_kernels.py), and a test that assumed exact products failed there
only. This lane runs those tests on qemu's Haswell with this venv's own Python, whatever CPU the
host has, after checking that onnxruntime really takes its AVX2 path there (the saturation shows).
A test that starts a subprocess would run that child natively (qemu user mode does not follow
exec), so only in-process tests are listed.

Skipped when qemu-user-static is missing; CI (``.ci/run``) sets EDGECLF_REQUIRE_EMULATION=1, so
there a missing emulator fails instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT, TRAIN_EXTRA

pytest.importorskip("onnx", reason=TRAIN_EXTRA)

QEMU = "qemu-x86_64-static"
CPU = "Haswell-v4"  # AVX2, FMA, no AVX-512, no VNNI
#: The tests whose results depend on the CPU's int8 kernels, and that run in this process.
CPU_DEPENDENT = (
    "tests/test_bench.py::test_int8_probe_model_is_the_helper_built_matmul_integer",
    "tests/test_bench.py::test_count_macs_fp32_and_int8",
    "tests/test_bench.py::test_precision_run_picks_the_peak_probe",
    "tests/test_int8_cpus.py",
    "tests/test_export_units.py",
)
# Full-range weights and a k long enough that some int16 pair sum overflows.
PROBE = """
import json, sys
import numpy as np, onnxruntime as ort
sys.path.insert(0, "tests")
from int8_kernels import exact_matmul, pair_saturated_matmul
from edgeclf.bench import peak
rng = np.random.default_rng(0)
a, b = rng.integers(0, 256, (8, 64), dtype=np.uint8), rng.integers(-128, 128, (64, 8), dtype=np.int8)
y = ort.InferenceSession(peak.INT8_MATMUL_ONNX, providers=["CPUExecutionProvider"]).run(None, {"a": a, "b": b})[0]
print(json.dumps({"exact": bool(np.array_equal(y, exact_matmul(a, b, 128))),
                  "saturated": bool(np.array_equal(y, pair_saturated_matmul(a, b, 128)))}))
"""


def haswell(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """This venv's Python with ``args`` on the emulated CPU (qemu's TCG warnings dropped)."""
    env = {**os.environ, "QEMU_CPU": CPU}
    res = subprocess.run([QEMU, sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=env,
                         cwd=ROOT)
    res.stderr = "\n".join(line for line in res.stderr.splitlines() if "TCG doesn't support" not in line)
    return res


@pytest.fixture(scope="module")
def emulator() -> None:
    if shutil.which(QEMU) is None:
        if os.environ.get("EDGECLF_REQUIRE_EMULATION") == "1":
            pytest.fail(f"{QEMU} is not installed (EDGECLF_REQUIRE_EMULATION=1)")
        pytest.skip(f"{QEMU} is not installed: apt-get install qemu-user-static")


def test_onnxruntime_takes_its_avx2_path_on_the_emulated_cpu(emulator):
    res = haswell("-c", PROBE)
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout.splitlines()[-1]) == {"exact": False, "saturated": True}


def test_cpu_dependent_tests_pass_on_the_emulated_cpu(emulator):
    res = haswell("-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", *CPU_DEPENDENT, timeout=600)
    summary = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else ""
    assert res.returncode == 0, f"on emulated {CPU}:\n{res.stdout[-4000:]}\n{res.stderr[-2000:]}"
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) >= 10 and "skipped" not in summary, summary
