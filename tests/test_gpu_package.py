"""The GPU providers through the real onnxruntime-gpu package (the ``[gpu]`` extra) on a machine
without a GPU: nothing is faked, the package lists CUDA and TensorRT and they fail to start.

``--provider auto|cuda|tensorrt`` must fall back to CPU with one warning line saying which
provider failed (onnxruntime's own many-line report kept off the terminal and off ``--json``'s
stdout), and fail in one line with ``--strict``. CI runs this file in a venv where onnxruntime-gpu
replaces onnxruntime and sets EDGECLF_REQUIRE_ORT_GPU=1; elsewhere it skips. Where a GPU does
work, the fallback cannot happen and the tests skip.
"""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest
from conftest import error_line, run_cli

ort = pytest.importorskip("onnxruntime", reason="needs onnxruntime, a base dependency: pip install .")
if "CUDAExecutionProvider" not in ort.get_available_providers():
    if os.environ.get("EDGECLF_REQUIRE_ORT_GPU") == "1":
        raise RuntimeError(f"EDGECLF_REQUIRE_ORT_GPU=1 but onnxruntime {ort.__version__} is not the GPU build")
    pytest.skip("onnxruntime is not the GPU build (pip install '.[gpu]')", allow_module_level=True)

from onnx_fixtures import BGR, make_colour_model  # noqa: E402


@pytest.fixture(scope="module")
def model_and_image(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu")
    model = make_colour_model(tmp / "colour.onnx")
    session = ort.InferenceSession(str(model), providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    if "CUDAExecutionProvider" in session.get_providers():
        pytest.skip("CUDA works here: there is no fallback to test")
    image = tmp / "green.png"
    cv2.imwrite(str(image), np.full((40, 40, 3), BGR["green"], np.uint8))
    return model, image


def test_the_package_lists_the_gpu_providers():
    assert {"TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"} <= set(ort.get_available_providers())


@pytest.mark.parametrize("provider, failed", [("auto", "tensorrt, cuda"), ("cuda", "cuda"), ("tensorrt", "tensorrt")])
def test_falls_back_to_cpu_with_one_warning(provider, failed, model_and_image):
    model, image = model_and_image
    r = run_cli("predict", model, image, "--provider", provider, "--json")
    assert r.returncode == 0, r.stderr
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, r.stderr
    assert warnings[0].startswith(f"warning: provider '{provider}': {failed} failed to start")
    assert warnings[0].endswith("; running on cpu")
    assert [line for line in r.stderr.splitlines() if not line.startswith(("warning:", "edgeclf:"))] == [], r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]  # stdout: JSON only
    assert [row["label"] for row in rows] == ["green"]


@pytest.mark.parametrize("provider", ["auto", "cuda", "tensorrt"])
def test_strict_fails_in_one_line(provider, model_and_image):
    model, image = model_and_image
    line = error_line(run_cli("predict", model, image, "--provider", provider, "--strict"))
    assert f"provider '{provider}'" in line and "failed to start" in line


def test_bench_reports_the_provider_that_ran(model_and_image):
    model, _ = model_and_image
    r = run_cli("bench", model, "--provider", "cuda", "--runs", 3, "--warmup", 1, "--threads", 1, "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["provider"] == "CPUExecutionProvider" and report["provider_requested"] == "cuda"
