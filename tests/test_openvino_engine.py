"""OpenVINO as an engine for an .onnx model: ``OpenVINOSession`` behind ``Classifier`` answers as
onnxruntime does on a real model (a colour classifier whose answers are known), at any batch size
and from several threads; its refusals are one line; ``predict --engine openvino``, ``--engine
auto`` following an engine record of OpenVINO, and ``bench --engines`` timing it."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import error_line, run_cli
from onnx_fixtures import COLOURS, make_colour_model, make_vector_model, solid

from edgeclf.errors import EdgeclfError
from edgeclf.model import engine_choice, openvino_engine, threads as thr
from edgeclf.model.classifier import Classifier
from edgeclf.model.metadata import model_metadata

pytest.importorskip("openvino", reason="needs openvino: pip install '.[openvino]'")

ONNX = "model.int8.onnx"
TOL = 1e-4
RECORD = {"choice": {"engine": "openvino", "file": ONNX, "threads": 1, "label": "OpenVINO, 1 thread", "p50_ms": 1.0}}


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, Path]:
    """An export folder (the colour model as its int8 ONNX model) and a photo of each colour."""
    d = tmp_path_factory.mktemp("openvino")
    (d / "export").mkdir()
    make_colour_model(d / "export" / ONNX)
    (d / "photos").mkdir()
    for c in COLOURS:
        cv2.imwrite(str(d / "photos" / f"{c}.png"), solid(c))
    return {"export": d / "export", "onnx": d / "export" / ONNX, "photos": d / "photos"}


@pytest.fixture
def folder(made, tmp_path) -> Path:
    """A fresh copy of the export folder, for tests that write its engine.json."""
    import shutil

    return Path(shutil.copytree(made["export"], tmp_path / "export"))


@pytest.fixture(scope="module")
def ov(made) -> Classifier:
    return Classifier(made["onnx"], provider="cpu", threads=2, engine="openvino")


@pytest.fixture(scope="module")
def ort(made) -> Classifier:
    return Classifier(made["onnx"], provider="cpu", threads=1)


def _images() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [solid(c) for c in COLOURS] + [rng.integers(0, 256, (40, 50, 3), dtype=np.uint8) for _ in range(9)]


def _probs(preds) -> np.ndarray:
    return np.array([list(p.probs.values()) for p in preds])


def _labels(res: subprocess.CompletedProcess) -> dict[str, str]:
    """{photo stem: label} from predict's human output."""
    assert res.returncode == 0, res.stderr
    return {Path(line.split()[0]).stem: line.split()[1] for line in res.stdout.splitlines()}


# ------------------------------------------------------------------------------------------ Classifier
def test_classifier_runs_the_onnx_on_openvino(ov):
    assert ov.providers == ["OpenVINO"] and isinstance(ov.session, openvino_engine.OpenVINOSession)
    assert (ov.class_names, ov.size, ov.max_batch, ov.threads) == (list(COLOURS), (32, 32), None, 2)
    assert ov.session.threads == 2 and ov.thread_arms == [2]
    assert ov.metadata == model_metadata(list(COLOURS), (32, 32), "colour-test", "fp32")  # read from the ONNX file
    assert [(i.name, i.shape, i.type) for i in ov.session.get_inputs()] == [("image", [None, 32, 32, 3], "tensor(uint8)")]
    assert [o.name for o in ov.session.get_outputs()] == ["probs"]


def test_same_answers_as_onnxruntime(ov, ort):
    images = _images()
    got, want = ov.predict_batch(images), ort.predict_batch(images)
    assert [p.label for p in got[:3]] == list(COLOURS) and min(p.score for p in got[:3]) > 0.9
    assert [p.label for p in got] == [p.label for p in want]
    np.testing.assert_allclose(_probs(got), _probs(want), atol=TOL)
    assert _probs(got)[3:].max() < 0.9  # random images: probabilities inside (0, 1), a real comparison
    for img in images:  # one by one too
        np.testing.assert_allclose(_probs([ov.predict(img)]), _probs([ort.predict(img)]), atol=TOL)


def test_batches_and_threads_answer_as_one_by_one(ov):
    images = _images()
    alone = _probs([ov.predict(img) for img in images])
    sizes = (1, 3, 5, 2, 4, 6, 1, 3)  # six distinct: more than MAX_BATCH_SIZES, so some are compiled again
    assert len(set(sizes)) > openvino_engine.MAX_BATCH_SIZES
    batches = [list(range(i, i + n)) for n in sizes for i in range(0, len(images) - n + 1, n)]

    def run(idx):
        return _probs(ov.predict_batch([images[i] for i in idx]))

    sequential = [run(idx) for idx in batches]
    for idx, probs in zip(batches, sequential):
        np.testing.assert_allclose(probs, alone[idx], atol=TOL)
    assert len(ov.session._compiled) <= openvino_engine.MAX_BATCH_SIZES
    with ThreadPoolExecutor(4) as pool:  # 4 threads at once on one session: each batch as it ran alone
        for got, want in zip(pool.map(run, batches * 3), sequential * 3):
            np.testing.assert_allclose(got, want, atol=1e-6)
    with ThreadPoolExecutor(4) as pool:  # and single images from 4 threads
        got = list(pool.map(lambda img: ov.predict(img).probs, images * 4))
    np.testing.assert_allclose(np.array([list(p.values()) for p in got]), np.concatenate([alone] * 4), atol=1e-6)


def test_unknown_score_runs_on_openvino(tmp_path):
    path = make_colour_model(tmp_path / ONNX, unknown=0.5)
    ov = Classifier(path, provider="cpu", threads=1, engine="openvino")
    ort = Classifier(path, provider="cpu", threads=1)
    assert ov.unknown_output == "unknown_score" and ov.unknown_rule.threshold == 0.5
    grey = np.full((40, 40, 3), 128, np.uint8)
    got, want = ov.predict_batch([solid("red"), grey]), ort.predict_batch([solid("red"), grey])
    assert [p.label for p in got] == ["red", "unknown"] == [p.label for p in want]
    assert got[1].unknown_score == pytest.approx(2 / 3, abs=1e-3) and got[0].unknown_score < 0.1
    assert [p.unknown_score for p in got] == pytest.approx([p.unknown_score for p in want], abs=TOL)


@pytest.mark.parametrize("shape", [{"dynamic_hw": True}, {"batch": 1}])
def test_dynamic_size_and_fixed_batch_models(tmp_path, shape):
    path = make_colour_model(tmp_path / ONNX, **shape)
    ov = Classifier(path, provider="cpu", threads=1, engine="openvino")
    ort = Classifier(path, provider="cpu", threads=1)
    images = _images()[:5]
    assert ov.max_batch == ort.max_batch and [p.label for p in ov.predict_batch(images[:3])] == list(COLOURS)
    np.testing.assert_allclose(_probs(ov.predict_batch(images)), _probs(ort.predict_batch(images)), atol=TOL)


def test_not_an_image_model_is_one_line(tmp_path):
    with pytest.raises(EdgeclfError, match="model has 2 inputs"):
        Classifier(make_colour_model(tmp_path / "two.onnx", two_inputs=True), engine="openvino")
    with pytest.raises(EdgeclfError, match="not an NHWC RGB image tensor"):
        Classifier(make_vector_model(tmp_path / "vector.onnx"), engine="openvino")


def test_gpu_provider_falls_back_or_fails_strict(made):
    with pytest.raises(EdgeclfError, match="OpenVINO runs on the CPU here"):
        Classifier(made["onnx"], provider="cuda", strict=True, engine="openvino")
    warned: list[str] = []
    clf = Classifier(made["onnx"], provider="cuda", threads=1, warn=warned.append, engine="openvino")
    assert len(warned) == 1 and "OpenVINO" in warned[0] and "running on the CPU" in warned[0]
    assert clf.providers == ["OpenVINO"] and clf.predict(solid("blue")).label == "blue"


def test_bad_engine_and_garbage_file_are_one_line(made, tmp_path):
    with pytest.raises(EdgeclfError, match="engine 'bogus': expected onnxruntime or openvino"):
        Classifier(made["onnx"], engine="bogus")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a model at all\n" * 20)
    with pytest.raises(EdgeclfError, match="not a model OpenVINO can read") as e:
        Classifier(bad, engine="openvino")
    assert "\n" not in str(e.value) and str(bad) in str(e.value)
    assert "not a model OpenVINO can read" in error_line(run_cli("predict", bad, made["photos"], "--engine", "openvino"))


NO_OPENVINO = textwrap.dedent("""
    import sys
    from pathlib import Path
    sys.modules["openvino"] = None  # as if not installed
    from edgeclf.bench import engines
    from edgeclf.errors import EdgeclfError
    from edgeclf.model import openvino_engine
    from edgeclf.model.classifier import Classifier
    print("AVAILABLE:", openvino_engine.available())
    try:
        Classifier(sys.argv[1], engine="openvino")
    except EdgeclfError as e:
        print("ERROR:", e)
    print("SKIPPED:", engines.ways(Path(sys.argv[1]).parent)[1])
    sys.argv = ["edgeclf", "predict", sys.argv[1], sys.argv[2], "--engine", "openvino"]
    from edgeclf.cli import main
    main()
""")


def test_missing_openvino_says_how_to_install(made):
    res = subprocess.run([sys.executable, "-c", NO_OPENVINO, str(made["onnx"]), str(made["photos"] / "red.png")],
                         check=False, capture_output=True, text=True, timeout=120)
    out = dict(line.split(": ", 1) for line in res.stdout.splitlines())
    assert out["AVAILABLE"] == "False"
    assert "openvino" in out["ERROR"] and "pip install 'edgeclf[openvino]'" in out["ERROR"]
    assert "OpenVINO: openvino is not installed (pip install 'edgeclf[openvino]')" in out["SKIPPED"]
    assert "pip install 'edgeclf[openvino]'" in error_line(res)


def test_version_and_available():
    assert openvino_engine.available() and openvino_engine.version().startswith("OpenVINO 20")


# ------------------------------------------------------------------------------------------ predict --engine
def test_predict_folder_on_openvino(made):
    res = run_cli("predict", made["export"], made["photos"], "--engine", "openvino")
    assert _labels(res) == {c: c for c in COLOURS}
    assert f"running {made['onnx']}: --engine openvino" in res.stderr
    assert res.stderr.strip().splitlines()[-1].endswith(" on openvino")


def test_predict_named_files(made, tmp_path):
    res = run_cli("predict", made["onnx"], made["photos"] / "green.png", "--engine", "openvino")
    assert _labels(res) == {"green": "green"}
    assert res.stderr.strip().splitlines()[-1].endswith(" on openvino")
    tflite = tmp_path / "model.tflite"
    tflite.write_bytes(b"TFL3" + bytes(100))
    line = error_line(run_cli("predict", tflite, made["photos"], "--engine", "openvino"))
    assert "--engine openvino" in line and "is a LiteRT model" in line


def test_auto_follows_an_openvino_record(folder, made):
    engine_choice.write_record(folder, RECORD)
    res = run_cli("predict", folder, made["photos"], "--engine", "auto")
    assert _labels(res) == {c: c for c in COLOURS}
    assert f"running {folder / ONNX}: chosen here by `edgeclf bench --engines`: OpenVINO, 1 thread" in res.stderr
    assert res.stderr.strip().splitlines()[-1].endswith(" on openvino")
    res = run_cli("predict", folder, made["photos"], "--engine", "onnxruntime")  # the record is only for auto
    assert _labels(res) == {c: c for c in COLOURS} and not res.stderr.strip().endswith(" on openvino")


# ------------------------------------------------------------------------------------------ bench --engines
def test_bench_engines_times_openvino(folder):
    res = run_cli("bench", folder, "--engines", "--runs", 10, "--warmup", 1, "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    counts = {1, thr.default_threads()}
    rows = [r for r in report["results"] if r["engine"] == "openvino"]
    assert {r["threads"] for r in rows} == counts and len(rows) == len(counts)
    for r in rows:
        assert r["latency_ms"]["p50"] > 0 and r["first_inference_ms"] > 0 and r["file"] == ONNX
        assert r["label"] == f"OpenVINO, {r['threads']} thread" + "s" * (r["threads"] > 1)
    assert not any("OpenVINO" in s for s in report["skipped"])
    assert {r["engine"] for r in report["results"]} >= {"onnxruntime", "openvino"}
    assert engine_choice.read_record(folder)["choice"] == report["choice"]
