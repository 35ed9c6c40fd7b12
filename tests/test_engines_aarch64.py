"""benchmarks/engines_aarch64.py's judging and report, and its child on this host: a real ONNX
model through the same opener the emulated CPU runs (the emulated run itself is a benchmark:
minutes per engine under qemu)."""

from __future__ import annotations


import numpy as np
import pytest
from conftest import ROOT


@pytest.fixture
def lane(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import engines_aarch64

    return engines_aarch64


def test_a_row_counts_agreement_and_accuracy(lane):
    y = np.array([0, 1, 1, 0])
    host = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.6, 0.4]], np.float32)
    arm = host.copy()
    arm[2] = [0.55, 0.45]  # one photo answered otherwise on the emulated CPU
    row = lane.compare_row("onnx_int8", host, arm, y, ("", ""), 12.3)
    assert row["top1_agreement"] == 0.75 and row["accuracy_host"] == 1.0 and row["accuracy_arm"] == 0.75
    assert row["max_abs_diff"] == pytest.approx(0.15)
    failed = lane.compare_row("ncnn_fp32", host, None, y, ("", "ImportError: no ncnn"), 1.0)
    assert failed["error"] == "ImportError: no ncnn" and failed["where"] == "aarch64"
    md = lane.markdown({"cpu": "cortex-a76", "host": "x86", "model": "lite0 224x224", "n": 4, "rows": [row, failed],
                        "command": "python benchmarks/engines_aarch64.py"})
    assert "| onnx_int8 |" in md and "75%" in md and "failed on aarch64: ImportError: no ncnn" in md
    assert all(k in md for k in lane.NOT_RUN)


def test_the_child_runs_an_onnx_model_and_opencv(lane, tmp_path):
    from onnx_fixtures import make_colour_model, solid

    model = make_colour_model(tmp_path / "model.onnx")
    x = np.stack([solid(c, 32, 32)[..., ::-1] for c in ("red", "green", "blue")])  # RGB, as the models take
    np.save(tmp_path / "x.npy", x)
    fmts = ["onnx_fp32", "opencv_fp32"]
    try:
        import openvino  # noqa: F401
        fmts.append("edgeclf_openvino_int8")  # edgeclf's own OpenVINO engine on the same file
    except ImportError:
        pass
    for fmt in fmts:
        probs, err, _ = lane.run_child("host", fmt, model, tmp_path / "x.npy", tmp_path, None)
        assert err == "" and probs is not None, err
        assert list(probs.argmax(1)) == [0, 1, 2], fmt
    probs, err, _ = lane.run_child("host", "onnx_fp32", tmp_path / "missing.onnx", tmp_path / "x.npy", tmp_path, None)
    assert probs is None and "does not exist" in err


def test_the_bare_litert_row_reads_the_probabilities_of_a_two_output_model(lane, tmp_path):
    """edgeclf's LiteRT export has a second output, the embedding, for the unknown score: the
    bare interpreter row must judge the probabilities, whichever order LiteRT lists them in."""
    pytest.importorskip("tensorflow", reason="the fixture converts a Keras model: pip install '.[train]'")
    pytest.importorskip("ai_edge_litert", reason="runs .tflite models: pip install '.[litert]'")
    from onnx_fixtures import solid
    from tflite_fixtures import scored_colour_tflite

    raw, names = scored_colour_tflite(tmp_path, width=4)
    assert len(names) == 2
    (tmp_path / "model.int8.tflite").write_bytes(raw)
    np.save(tmp_path / "x.npy", np.stack([solid(c, 32, 32)[..., ::-1] for c in ("red", "green", "blue")]))
    probs, err, _ = lane.run_child("host", "litert_int8", tmp_path / "model.int8.tflite", tmp_path / "x.npy", tmp_path, None)
    assert err == "" and probs.shape == (3, 3) and list(probs.argmax(1)) == [0, 1, 2], err
