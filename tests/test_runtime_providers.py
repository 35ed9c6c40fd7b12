"""Provider choice with faked provider lists (no GPU here), and what a real session reports."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeclf.errors import EdgeclfError
from edgeclf.model import providers as prov, threads as thr

JETSON = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
CUDA_ONLY = ["CUDAExecutionProvider", "CPUExecutionProvider"]
CPU_ONLY = ["AzureExecutionProvider", "CPUExecutionProvider"]


@pytest.mark.parametrize(
    "requested, available, expected",
    [
        ("auto", JETSON, [prov.TENSORRT, prov.CUDA, prov.CPU]),
        ("auto", CUDA_ONLY, [prov.CUDA, prov.CPU]),
        ("auto", CPU_ONLY, [prov.CPU]),
        ("auto", [], [prov.CPU]),
        ("cpu", JETSON, [prov.CPU]),
        ("cuda", JETSON, [prov.CUDA, prov.CPU]),
        ("tensorrt", JETSON, [prov.TENSORRT, prov.CUDA, prov.CPU]),
        ("CUDA", CUDA_ONLY, [prov.CUDA, prov.CPU]),
    ],
)
def test_plan_picks_the_best_available_in_order(requested, available, expected):
    plan = prov.plan_providers(requested, available)
    assert plan.names == expected
    assert plan.warning is None


@pytest.mark.parametrize("requested, available", [("cuda", CPU_ONLY), ("tensorrt", CUDA_ONLY), ("tensorrt", CPU_ONLY)])
def test_missing_provider_warns_and_falls_back_to_cpu(requested, available):
    plan = prov.plan_providers(requested, available)
    assert plan.names == [prov.CPU]
    assert plan.warning is not None and "\n" not in plan.warning
    assert requested in plan.warning and "falling back to cpu" in plan.warning


def test_missing_provider_with_strict_is_an_error():
    with pytest.raises(EdgeclfError, match="'cuda' is not available"):
        prov.plan_providers("cuda", CPU_ONLY, strict=True)
    # strict changes nothing when the provider exists
    assert prov.plan_providers("cuda", CUDA_ONLY, strict=True).names == [prov.CUDA, prov.CPU]


def test_unknown_provider_name():
    with pytest.raises(EdgeclfError, match="unknown provider 'gpu'"):
        prov.plan_providers("gpu", JETSON)


def test_tensorrt_options_cache_next_to_model_with_fp16(tmp_path):
    model = tmp_path / "deploy" / "model.int8.onnx"
    plan = prov.plan_providers("tensorrt", JETSON, model, device_id=1)
    name, opts = plan.providers[0]
    assert name == prov.TENSORRT
    assert opts["trt_engine_cache_enable"] is True
    assert Path(opts["trt_engine_cache_path"]) == tmp_path / "deploy" / "model.int8.trt_cache"
    assert opts["trt_fp16_enable"] is True
    assert opts["device_id"] == 1
    # the CUDA provider below it gets the same device
    assert plan.providers[1] == (prov.CUDA, {"device_id": 1})
    assert prov.plan_providers("tensorrt", JETSON, model, fp16=False).providers[0][1]["trt_fp16_enable"] is False


def test_cuda_device_id():
    assert prov.plan_providers("cuda", CUDA_ONLY, device_id=3).providers[0] == (prov.CUDA, {"device_id": 3})


@pytest.mark.parametrize("cores, expected", [(1, 1), (2, 2), (4, 4), (6, 4), (64, 4)])
def test_default_threads_suits_small_boards(cores, expected):
    assert thr.default_threads(cores) == expected


def test_default_threads_follows_this_process_affinity():
    import os

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert thr.default_threads() == max(1, min(4, usable))


def test_short_names():
    assert prov.short_names(JETSON) == ["tensorrt", "cuda", "cpu"]
    assert prov.short_names(["AzureExecutionProvider"]) == ["azure"]


def test_classifier_reports_what_runs_and_falls_back(tmp_path):
    from onnx_fixtures import make_colour_model

    from edgeclf.model.classifier import Classifier

    model = make_colour_model(tmp_path / "m.onnx")
    warnings: list[str] = []
    clf = Classifier(model, provider="tensorrt", warn=warnings.append)
    assert clf.providers == ["CPUExecutionProvider"]  # what the session really runs
    assert len(warnings) == 1 and "tensorrt" in warnings[0]
    with pytest.raises(EdgeclfError):
        Classifier(model, provider="cuda", strict=True)
    assert Classifier(model, provider="cpu", threads=1).threads == 1
    assert Classifier(model).threads == thr.default_threads()



def test_cpu_session_config_turns_spinning_off_unless_asked():
    assert prov.cpu_session_config() == {"session.intra_op.allow_spinning": "0"}
    assert prov.cpu_session_config(spin=True) == {}


def test_session_factory_gives_every_session_the_classifiers_defaults(tmp_path):
    """One factory (edgeclf.model.session): a bare session for export checks or benchmarks runs with the
    threads, spinning and optimisation the classifier itself runs with."""
    import numpy as np
    import onnxruntime as ort
    from onnx_fixtures import make_colour_model

    from edgeclf.model.classifier import Classifier
    from edgeclf.model.session import open_session

    model = make_colour_model(tmp_path / "m.onnx")
    # a fixed thread count: the default's adaptive sessions are tested in test_adaptive.py
    clf = Classifier(model, provider="cpu", threads=thr.default_threads())
    for sess in (open_session(model), open_session(model.read_bytes()), clf.session):
        opts = sess.get_session_options()
        assert opts.intra_op_num_threads == clf.threads == thr.default_threads()
        assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
        assert sess.get_providers() == ["CPUExecutionProvider"]
    x = np.full((2, *clf.size, 3), 200, np.uint8)
    np.testing.assert_array_equal(open_session(model).run(None, {clf.input_name: x})[0], clf.predict_arrays(x))


def test_session_factory_takes_explicit_overrides(tmp_path):
    import onnxruntime as ort
    from onnx_fixtures import make_colour_model

    from edgeclf.model.session import open_session

    model = make_colour_model(tmp_path / "m.onnx")
    sess = open_session(model, threads=1, spin=True, config={"session.intra_op.spin_duration_us": "100"},
                        graph_optimization_level=ort.GraphOptimizationLevel.ORT_DISABLE_ALL, inter_op_num_threads=1)
    opts = sess.get_session_options()
    assert (opts.intra_op_num_threads, opts.inter_op_num_threads) == (1, 1)
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    assert opts.get_session_config_entry("session.intra_op.spin_duration_us") == "100"
    with pytest.raises(RuntimeError):  # spin=True: no entry of edgeclf's own, onnxruntime's default
        opts.get_session_config_entry("session.intra_op.allow_spinning")
    assert open_session(model, config={"session.intra_op.allow_spinning": "1"}).get_session_options() \
        .get_session_config_entry("session.intra_op.allow_spinning") == "1"  # config wins over spin
    with pytest.raises(TypeError, match="intra_op_threads"):  # a misspelt option is not silently ignored
        open_session(model, intra_op_threads=2)
