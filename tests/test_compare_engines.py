"""benchmarks/compare.py's other engines without them installed: choosing engines, a row with a
one-line reason for each that cannot run (never a crash), thread-count lists, and the child
process that runs onnxruntime-openvino (here a stand-in onnxruntime module)."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest
from conftest import ROOT


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # compare's parts import each other as the script does
    import compare_engines
    import compare_report
    import compare_runners

    return compare_engines, compare_runners, compare_report


def test_engines_choose_formats_and_unknown_ones_are_named(bench):
    engines, _, _ = bench
    assert engines.chosen_formats("openvino,ncnn") == {"openvino_fp32", "openvino_int8", "openvino_qdq_int8",
                                                        "ncnn_fp32", "ncnn_int8"}
    assert engines.chosen_formats("onnxruntime,litert_int8", skip="onnx_fp32") == {"onnx_int8", "litert_int8"}
    assert engines.chosen_formats(None) == set(engines.FORMATS)
    with pytest.raises(ValueError, match="unknown engine 'tflite'"):
        engines.chosen_formats("tflite")


def test_thread_count_lists(bench):
    import argparse

    import compare

    assert compare.thread_counts("1,2") == [1, 2] and compare.thread_counts("4") == [4]
    for bad in ("0", "1,1", "two", ","):
        with pytest.raises(argparse.ArgumentTypeError):
            compare.thread_counts(bad)
    with pytest.raises(SystemExit):
        compare.parse_args(["--run", "r", "--engines", "nope"])


def test_engines_not_installed_are_rows_with_a_reason(bench, monkeypatch, tmp_path):
    """openvino, nncf, ncnn and pnnx made unimportable, onnxruntime-openvino's folder missing: every
    format at every thread count gets a one-line reason, which the table shows."""
    engines, runners, report = bench
    for mod in ("openvino", "nncf", "ncnn", "pnnx"):
        monkeypatch.setitem(sys.modules, mod, None)  # import raises ImportError
    formats = runners.Formats(engines.chosen_formats("openvino,ort_openvino,ncnn"))
    onnx = (tmp_path / "model.onnx", tmp_path / "model.int8.onnx")
    engines.add_engines(formats, [1, 2], 2, onnx, lambda: np.zeros((1, 8, 8, 3), np.uint8), (8, 8), tmp_path,
                        tmp_path / "no-such-folder")
    assert formats.runners == [] and formats.closers == []
    expected = {f"{f}@{t}" for f in formats.wanted for t in (1, 2)}
    assert set(formats.errors) == expected
    for key, reason in formats.errors.items():
        assert "\n" not in reason and len(reason) < 400, key
        if key.startswith(("openvino", "ncnn")):
            assert reason.startswith("not installed") and "pip install" in reason, (key, reason)
        else:
            assert "no onnxruntime here" in reason and "onnxruntime-openvino" in reason, (key, reason)
    rows = report.summarise([], {}, {}, 8, {}, {}, formats.errors)
    table = "\n".join(report.results_table(rows))
    assert len(rows) == len(expected) and all(r["error"] for r in rows)
    assert "| OpenVINO int8 (NNCF), 2 threads | unavailable: not installed (" in table
    assert "| ncnn fp32 (pnnx from ONNX), 1 thread | unavailable: not installed (" in table


def test_ncnn_int8_says_why_it_is_not_available(bench, monkeypatch, tmp_path):
    engines, _, _ = bench
    fake = tmp_path / "ncnn"
    fake.mkdir()
    (fake / "__init__.py").write_text("__version__ = '0.test'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "ncnn", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    reason = engines.ncnn_int8_unavailable()
    assert reason.startswith("not available: ncnn's int8 needs ncnn2table and ncnn2int8") and "0.test" in reason


FAKE_ORT = '''
__version__ = "0.fake"
import numpy as np
def get_available_providers():
    return {providers!r}
class SessionOptions:
    intra_op_num_threads = 0
    def add_session_config_entry(self, k, v):
        pass
class _Arg:
    def __init__(self, name):
        self.name = name
class InferenceSession:
    def __init__(self, path, so, providers):
        self.threads = so.intra_op_num_threads
    def get_inputs(self):
        return [_Arg("image")]
    def get_outputs(self):
        return [_Arg("probs"), _Arg("unknown_score")]
    def get_providers(self):
        return ["OpenVINOExecutionProvider"]
    def run(self, outs, feed):
        x = feed["image"].reshape(len(feed["image"]), -1).astype(np.float32)
        m = x.mean(axis=1) / 255
        return [np.stack([m, 1 - m, np.full(len(x), self.threads)], axis=1)]
'''


def fake_onnxruntime(folder, providers):
    (folder / "onnxruntime").mkdir(parents=True)
    (folder / "onnxruntime" / "__init__.py").write_text(textwrap.dedent(FAKE_ORT.format(providers=providers)))
    return folder


def test_the_child_process_runs_a_model_and_times_itself(bench, tmp_path):
    engines, _, _ = bench
    folder = fake_onnxruntime(tmp_path / "ortov", ["OpenVINOExecutionProvider", "CPUExecutionProvider"])
    closers: list = []
    r = engines.ort_openvino_runner("ort_openvino_int8@2", tmp_path / "m.onnx", 2, folder, closers)
    try:
        x = np.random.default_rng(0).integers(0, 256, (5, 6, 7, 3), dtype=np.uint8)
        y = r.predict(x)
        assert y.shape == (5, 3) and y.dtype == np.float32
        assert np.allclose(y[:, 0], x.reshape(5, -1).mean(axis=1) / 255, atol=1e-6)
        assert (y[:, 2] == 2).all()  # the child's session got the thread count
        assert 0 < r.own_time() < 1.0
        assert r.runtime == "onnxruntime-openvino 0.fake (OpenVINO EP, every node)"
        assert r.env["PYTHONPATH"].split(":")[0] == str(folder) and r.threads == 2
    finally:
        for close in closers:
            close()


def test_a_child_without_the_openvino_provider_is_a_row(bench, tmp_path):
    engines, runners, _ = bench
    folder = fake_onnxruntime(tmp_path / "ortcpu", ["CPUExecutionProvider"])
    formats = runners.Formats({"ort_openvino_fp32"})
    formats.add("ort_openvino_fp32", lambda: engines.ort_openvino_runner("ort_openvino_fp32", tmp_path / "m.onnx", 1,
                                                                       folder, formats.closers))
    assert formats.runners == [] and formats.closers == []
    assert formats.errors["ort_openvino_fp32"].startswith(
        "onnxruntime 0.fake at ") and "has no OpenVINOExecutionProvider" in formats.errors["ort_openvino_fp32"]


def test_a_child_that_dies_at_start_is_a_row_with_its_last_words(bench, tmp_path):
    engines, runners, _ = bench
    folder = tmp_path / "dies"
    (folder / "onnxruntime").mkdir(parents=True)
    (folder / "onnxruntime" / "__init__.py").write_text("import os, sys\nsys.stderr.write('boom: no CPU plugin\\n')\n"
                                                        "sys.stderr.flush()\nos._exit(3)\n")
    formats = runners.Formats({"ort_openvino_int8"})
    formats.add("ort_openvino_int8", lambda: engines.ort_openvino_runner("ort_openvino_int8", tmp_path / "m.onnx", 1,
                                                                       folder, formats.closers))
    assert formats.runners == [] and formats.errors == {"ort_openvino_int8": "child process failed: boom: no CPU plugin"}
