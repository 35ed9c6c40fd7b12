"""benchmarks/compare.py's other engines without them installed: choosing engines, a row with a
one-line reason for each that cannot run (never a crash), thread-count lists, and the child
process that runs onnxruntime-openvino (here a stand-in onnxruntime module)."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest
from conftest import ROOT
from tflite_fixtures import colour_tflite


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


# ------------------------------------------------------------- edgeclf's own LiteRT path as a row
def test_edgeclf_litert_is_an_engine_and_without_its_file_a_row_saying_how(bench, tmp_path):
    engines, runners, report = bench
    assert engines.chosen_formats("edgeclf_litert") == {"edgeclf_litert_int8"}
    assert "edgeclf_litert_int8" not in engines.chosen_formats("litert")  # compare's own conversion only
    formats = runners.Formats(engines.chosen_formats("edgeclf_litert"))
    for t in (1, 2):
        k = f"edgeclf_litert_int8@{t}"
        formats.add(k, lambda k=k, t=t: runners.edgeclf_litert_runner(k, tmp_path, t))
    why = f"not available: no model.int8.tflite in {tmp_path} (edgeclf export RUN --format tflite)"
    assert formats.runners == [] and formats.errors == {"edgeclf_litert_int8@1": why, "edgeclf_litert_int8@2": why}
    table = report.results_table(report.summarise([], {}, {}, 8, {}, {}, formats.errors))
    assert f"| edgeclf LiteRT int8 (export --format tflite), 2 threads | {why} | 2 | | | | | | | | |" in table
    assert table[0].endswith("| peak RSS MiB | first inference ms |") and table[1].count("|") == 12


@pytest.mark.tf
def test_edgeclf_litert_row_runs_the_export_tflite_through_classifier(bench, tmp_path):
    """A real int8 .tflite with edgeclf's metadata in the export folder: the row runs it through
    Classifier (LiteRT), scores it, and its fresh-process probe reports memory and first inference."""
    pytest.importorskip("tensorflow", reason="needs the train extra: pip install '.[train]'")
    pytest.importorskip("ai_edge_litert", reason="needs ai-edge-litert: pip install '.[litert]'")
    from compare_timing import probe_format
    from onnx_fixtures import COLOURS

    from edgeclf.model import litert
    from edgeclf.model.metadata import model_metadata

    engines, runners, report = bench
    (tmp_path / "model.int8.tflite").write_bytes(
        litert.with_metadata(colour_tflite(tmp_path), model_metadata(list(COLOURS), (32, 32), "colour", "int8")))
    formats = runners.Formats(engines.chosen_formats("edgeclf_litert"))
    formats.add("edgeclf_litert_int8", lambda: runners.edgeclf_litert_runner("edgeclf_litert_int8", tmp_path, 1))
    assert formats.errors == {} and len(formats.runners) == 1
    r = formats.runners[0]
    assert r.file == tmp_path / "model.int8.tflite" and r.threads == 1 and r.runtime.startswith("edgeclf Classifier, ai-edge-litert")
    rgb = np.eye(3)[np.arange(12) % 3] * 200 + np.random.default_rng(1).integers(0, 40, (12, 3))
    x = np.broadcast_to(rgb[:, None, None, :], (12, 32, 32, 3)).astype(np.uint8)
    acc = formats.score(x, np.arange(12) % 3, x[:4], 4)
    assert acc == {"edgeclf_litert_int8": 1.0}
    probe = probe_format(r.fmt, r.file, (32, 32), 1)
    assert probe is not None and probe["rss_mb"] > 0 and 0 < probe["first_ms"] < 120_000
    rows = report.summarise([r], {r.name: [0.001, 0.002]}, {r.name: [0.01]}, 4, acc, {r.name: probe["rss_mb"]}, {},
                            {r.name: probe["first_ms"]})
    assert rows[0]["first_inference_ms"] == probe["first_ms"] and rows[0]["label"] == "edgeclf LiteRT int8 (export --format tflite)"
    assert report.results_table(rows)[-1].endswith(f"| {probe['rss_mb']:.0f} | {probe['first_ms']:.0f} |")


# --------------------------------------------------------- edgeclf's own OpenVINO engine as a row
def test_edgeclf_openvino_row_runs_the_int8_onnx_through_classifier(bench, tmp_path):
    """The real colour model as an export's int8 ONNX: the row runs it through Classifier's OpenVINO
    engine (not compare's own OpenVINO runner), scores it like the others, and is an engine of its own."""
    pytest.importorskip("openvino", reason="needs openvino: pip install '.[openvino]'")
    from onnx_fixtures import COLOURS, make_colour_model

    engines, runners, report = bench
    assert engines.chosen_formats("edgeclf_openvino") == {"edgeclf_openvino_int8"}
    assert "edgeclf_openvino_int8" not in engines.chosen_formats("openvino")
    onnx = make_colour_model(tmp_path / "model.int8.onnx")
    formats = runners.Formats(engines.chosen_formats("edgeclf_openvino"))
    formats.add("edgeclf_openvino_int8@2", lambda: runners.edgeclf_openvino_runner("edgeclf_openvino_int8@2", onnx, 2))
    assert formats.errors == {} and len(formats.runners) == 1
    r = formats.runners[0]
    assert r.file == onnx and r.threads == 2 and r.runtime.startswith("edgeclf Classifier, OpenVINO")
    rgb = np.eye(3)[np.arange(12) % 3] * 200 + np.random.default_rng(1).integers(0, 40, (12, 3))
    x = np.broadcast_to(rgb[:, None, None, :], (12, 32, 32, 3)).astype(np.uint8)
    assert len(COLOURS) == 3 and formats.score(x, np.arange(12) % 3, x[:4], 4) == {"edgeclf_openvino_int8@2": 1.0}
    rows = report.summarise([r], {r.name: [0.001, 0.002]}, {r.name: [0.01]}, 4, {r.name: 1.0}, {}, {})
    assert rows[0]["label"] == "edgeclf OpenVINO engine on its int8 ONNX, 2 threads"


def test_edgeclf_openvino_without_openvino_is_a_row_saying_how(bench, tmp_path, monkeypatch):
    engines, runners, _ = bench
    from edgeclf.model import openvino_engine

    monkeypatch.setattr(openvino_engine, "available", lambda: False)
    formats = runners.Formats({"edgeclf_openvino_int8"})
    formats.add("edgeclf_openvino_int8", lambda: runners.edgeclf_openvino_runner("edgeclf_openvino_int8",
                                                                               tmp_path / "m.onnx", 1))
    assert formats.runners == [] and formats.errors == {
        "edgeclf_openvino_int8": f"not installed (openvino): {openvino_engine.INSTALL_HINT}"}


# ------------------------------------------------------- the goal: edgeclf's default path vs its peers
def _row(fmt: str, p50: float, p99: float, acc: float | None = 0.99, t: int | None = None) -> dict:
    return {"format": fmt, "key": f"{fmt}@{t}" if t else fmt, "threads": t or 2, "p50_ms": p50, "p99_ms": p99,
            "accuracy": acc, "batch_fps": 100.0}


def _default_goal(goals: list[dict], condition: str = "idle") -> dict:
    return next(g for g in goals if g["goal"].startswith("edgeclf's default path") and f"({condition})" in g["goal"])


def test_the_default_path_is_chosen_by_bench_engines_own_rule(bench):
    _, _, report = bench
    from edgeclf.bench import engines as product

    assert report.MARGIN is product.MARGIN  # imported, not copied
    onnx = _row("onnx_int8", 5.0, 6.0)
    assert report.default_path([onnx, _row("edgeclf_litert_int8", 4.8, 5.0)]) is onnx  # 4% faster: onnxruntime stays
    fast = _row("edgeclf_litert_int8", 4.7, 5.0)
    assert report.default_path([onnx, fast]) is fast  # 6% faster: LiteRT
    assert report.default_path([fast]) is fast and report.default_path([_row("litert_int8", 1, 1)]) is None
    assert report.default_path([{**onnx, "error": "x"}, {"format": "edgeclf_litert_int8", "error": "no file"}]) is None
    ov = _row("edgeclf_openvino_int8", 4.4, 5.5)  # OpenVINO 12% faster than onnxruntime, 6.4% than LiteRT
    assert report.default_path([onnx, fast, ov]) is ov
    tied = _row("edgeclf_openvino_int8", 4.5, 5.5)  # 4.3% faster than LiteRT at p50, a longer tail: LiteRT
    assert report.default_path([onnx, fast, tied]) is fast
    assert report.default_path([onnx, _row("edgeclf_openvino_int8", 4.8, 5.0)]) is onnx  # 4%: onnxruntime stays


def test_the_default_path_goal_against_the_fastest_peer_at_equal_accuracy(bench):
    _, _, report = bench
    rows = [_row("onnx_int8", 5.0, 6.0), _row("edgeclf_litert_int8", 4.9, 5.2), _row("onnx_fp32", 1.0, 1.0),
            _row("litert_int8", 5.1, 7.0, acc=0.995),  # exactly 0.5 point: a peer
            _row("ort_openvino_int8", 6.0, 5.5, acc=0.985),  # 0.5 point below: a peer, the best p99
            _row("openvino_qdq_int8", 3.0, 3.0, acc=0.98),  # faster, but 1 point less accurate: not a peer
            _row("opencv_int8", 2.0, 2.0, acc=None), _row("keras_call", 0.5, 0.5)]
    g = _default_goal(report.check_goals(rows))
    assert g["default"] == "onnx_int8" and g["peer_p50"] == "litert_int8" and g["peer_p99"] == "ort_openvino_int8"
    assert g["met"] is False and g["ratio_p50"] == pytest.approx(5.0 / 5.1) and g["ratio_p99"] == pytest.approx(6.0 / 5.5)
    assert "= 0.980x LiteRT int8's 5.100 ms" in g["figure"] and "= 1.091x onnxruntime-openvino int8's 5.500 ms" in g["figure"]
    rows[1] = _row("edgeclf_litert_int8", 4.0, 5.0)  # LiteRT now chosen, and faster than every peer at both
    g = _default_goal(report.check_goals(rows))
    assert g["met"] is True and g["default"] == "edgeclf_litert_int8" and "default edgeclf LiteRT int8" in g["figure"]
    lonely = _default_goal(report.check_goals([_row("onnx_int8", 5.0, 6.0), _row("openvino_int8", 1.0, 1.0, acc=0.9)]))
    assert lonely["met"] is None and "no peer int8 row within 0.5 point of ONNX int8 (onnxruntime)'s 99.00%" in lonely["figure"]
    none = _default_goal(report.check_goals([_row("litert_int8", 1.0, 1.0)]))
    assert none["met"] is None and none["figure"].startswith("not measured")


def test_the_default_path_goal_per_thread_setting_and_condition(bench):
    _, _, report = bench
    idle = [_row("onnx_int8", 5.0, 6.0, t=1), _row("edgeclf_litert_int8", 4.0, 4.5, t=1), _row("litert_int8", 4.2, 4.6, t=1),
            _row("onnx_int8", 3.0, 4.0, t=2), _row("litert_int8", 2.5, 3.0, t=2)]
    loaded = [_row("onnx_int8", 5.0, 6.0, t=1), _row("edgeclf_litert_int8", 4.9, 5.5, t=1), _row("litert_int8", 5.2, 6.5, t=1),
              _row("onnx_int8", 3.0, 4.0, t=2), _row("litert_int8", 3.5, 4.5, t=2)]
    goals = report.goals_by_threads(idle, loaded, [1, 2])
    mine = {(g["threads"], "co-tenant" if "(co-tenant)" in g["goal"] else "idle"): g
            for g in goals if g["goal"].startswith("edgeclf's default path")}
    assert set(mine) == {(1, "idle"), (1, "co-tenant"), (2, "idle"), (2, "co-tenant")}
    assert mine[1, "idle"]["met"] is True and mine[1, "idle"]["goal"].endswith("(idle) [1 thread]")
    assert mine[2, "idle"]["met"] is False and mine[2, "co-tenant"]["met"] is True
    # loaded, at 1 thread, LiteRT is no longer 5% faster: the rule picks ONNX int8; idle it picked LiteRT
    assert mine[1, "co-tenant"]["default"] == "onnx_int8" and mine[1, "co-tenant"]["met"] is True
    assert "chosen on the idle figures, bench --engines would run edgeclf LiteRT int8" in mine[1, "co-tenant"]["figure"]
    assert "bench --engines would run" not in mine[2, "co-tenant"]["figure"]


@pytest.mark.parametrize("legacy", [False, True])
def test_compare_reads_photos_by_the_runs_resize_rule(bench, tmp_path, legacy):
    """compare.py's labelled photos (the run's validation split, or --data) and LiteRT's calibration
    photos come at the pixels the model was trained on: INTER_AREA for a run from before the
    halving resize, which run.json records."""
    import cv2

    from edgeclf.image import RESIZE, RESIZE_AREA, resize_rgb

    _, runners, _ = bench
    rule = RESIZE_AREA if legacy else RESIZE
    photo = np.random.default_rng(5).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    cv2.imwrite(str(tmp_path / "a" / "p.png"), photo)
    cv2.imwrite(str(tmp_path / "b" / "q.png"), photo[::-1])
    run = {"input_size": [50, 70], "class_names": ["a", "b"], "preprocessing": {"resize": rule},
           "data_dir": str(tmp_path), "splits": {"val": ["a/p.png", "b/q.png"], "train": [str(tmp_path / "a" / "p.png")]}}
    x, y, _ = runners.load_images(run, None)
    assert list(y) == [0, 1] and np.array_equal(x[0], resize_rgb(photo, (50, 70), rule))
    assert not np.array_equal(x[0], resize_rgb(photo, (50, 70), RESIZE_AREA if not legacy else RESIZE))
    x2, _, _ = runners.load_images(run, tmp_path)
    assert np.array_equal(x2, x)
    calib, _ = runners.litert_calibration(run, None, 1, np.random.default_rng(0))
    assert np.array_equal(calib[0], x[0])
