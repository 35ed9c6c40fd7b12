"""Issue 26, items 10, 12, 13, 14 and 15: what a model's output must be, training's lines in a log,
the GPU build shadowed by the CPU one, ``predict`` on a run folder, and ``eval`` of a run on its
own validation split. Real ONNX sessions and real ``edgeclf`` subprocesses throughout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import ROOT, error_line, run_cli
from onnx_fixtures import BGR, COLOURS, edgeclf_metadata, make_colour_model

from benchmarks.onnx_models import FLOAT, model, node, save, tensor, value_info
from edgeclf.errors import EdgeclfError
from edgeclf.model.classifier import Classifier


def make_logits_model(path: Path, metadata: dict[str, str], size: tuple[int, int] = (32, 32)) -> Path:
    """The colour model without its softmax: mean colour x 0.05 - 4, so a row holds negative values
    and does not sum to 1 (red (255, 0, 0) -> logits (8.75, -4, -4))."""
    nodes = [node("Cast", ["image"], ["xf"], to=FLOAT), node("ReduceMean", ["xf"], ["mean"], axes=[1, 2], keepdims=0),
             node("MatMul", ["mean", "scale"], ["scaled"]), node("Sub", ["scaled", "shift"], ["probs"])]
    data = model(nodes, "logits", [value_info("image", 2, ["N", *size, 3])], [value_info("probs", FLOAT, ["N", 3])],
                 [tensor("scale", np.eye(3, dtype=np.float32) * np.float32(0.05)), tensor("shift", np.full(3, 4, np.float32))],
                 metadata=metadata)
    return save(data, path)


def _image(tmp: Path, colour: str = "green") -> Path:
    path = tmp / f"{colour}.png"
    cv2.imwrite(str(path), np.full((40, 40, 3), BGR[colour], np.uint8))
    return path


# ------------------------------------------------------------------ 10: outputs that are not probabilities
def test_a_model_giving_logits_without_saying_so_is_refused(tmp_path):
    path = make_logits_model(tmp_path / "logits.onnx", edgeclf_metadata(COLOURS, (32, 32)))
    with pytest.raises(EdgeclfError, match="not probabilities"):
        Classifier(path, provider="cpu").predict(np.full((32, 32, 3), BGR["red"], np.uint8))
    line = error_line(run_cli("predict", path, _image(tmp_path), "--json"))
    assert str(path) in line and "not probabilities" in line and "output=logits" in line, line


def test_logits_declared_in_the_metadata_are_softmaxed(tmp_path):
    path = make_logits_model(tmp_path / "logits.onnx", {**edgeclf_metadata(COLOURS, (32, 32)), "output": "logits"})
    clf = Classifier(path, provider="cpu")
    for colour in COLOURS:
        p = clf.predict(np.full((32, 32, 3), BGR[colour], np.uint8))
        assert p.label == colour and sum(p.probs.values()) == pytest.approx(1, abs=1e-5) and min(p.probs.values()) > 0
    res = run_cli("predict", path, _image(tmp_path, "blue"), "--json")
    assert res.returncode == 0, res.stderr
    row = json.loads(res.stdout)
    assert row["label"] == "blue" and sum(row["probs"].values()) == pytest.approx(1, abs=1e-4)


def test_an_unknown_output_kind_is_refused_at_load(tmp_path):
    path = make_colour_model(tmp_path / "m.onnx", metadata={**edgeclf_metadata(COLOURS, (32, 32)), "output": "scores"})
    with pytest.raises(EdgeclfError, match="metadata output 'scores'"):
        Classifier(path, provider="cpu")


def test_a_real_softmax_model_still_passes(tmp_path):
    """The check must not refuse edgeclf's own models (float rounding in the softmax)."""
    clf = Classifier(make_colour_model(tmp_path / "m.onnx"), provider="cpu")
    assert clf.predict(np.full((32, 32, 3), BGR["green"], np.uint8)).label == "green"


# ------------------------------------------------------------------ 13: onnxruntime and onnxruntime-gpu both installed
def _fake_gpu_distribution(tmp: Path) -> Path:
    site = tmp / "fake-site"
    info = site / "onnxruntime_gpu-1.20.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: onnxruntime-gpu\nVersion: 1.20.0\n")
    return site


def test_cuda_asked_for_with_both_onnxruntime_builds_installed_says_why_in_one_line(tmp_path):
    """Both builds at once cannot be installed for real on a machine without the GPU wheel, so the
    GPU one is a distribution record only (a dist-info folder on PYTHONPATH): what pip leaves
    behind when ``pip install '.[gpu]'`` installs onnxruntime-gpu and then the CPU onnxruntime over
    it (the CPU build's files win, as here). edgeclf reads the installed distributions, so the
    message must name the clash and the fix."""
    from importlib import metadata

    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("the GPU build of onnxruntime is the one installed: nothing shadows it here")
    try:
        metadata.distribution("onnxruntime-gpu")
        pytest.skip("onnxruntime-gpu is really installed here")
    except metadata.PackageNotFoundError:
        pass
    model_path, image = make_colour_model(tmp_path / "m.onnx"), _image(tmp_path)
    fix = "pip uninstall -y onnxruntime && pip install --force-reinstall --no-deps onnxruntime-gpu"
    plain = run_cli("predict", model_path, image, "--provider", "cuda")
    assert plain.returncode == 0 and "onnxruntime-gpu" not in plain.stderr, plain.stderr  # no clash, no word of one
    env = {"PYTHONPATH": os.pathsep.join([str(_fake_gpu_distribution(tmp_path)), os.environ.get("PYTHONPATH", "")])}
    res = run_cli("predict", model_path, image, "--provider", "cuda", "--json", env=env)
    assert res.returncode == 0, res.stderr
    warnings = [line for line in res.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "both onnxruntime (CPU) and onnxruntime-gpu are installed" in warnings[0], res.stderr
    assert fix in warnings[0] and warnings[0].endswith("falling back to cpu")
    line = error_line(run_cli("predict", model_path, image, "--provider", "cuda", "--strict", env=env))
    assert "onnxruntime-gpu" in line and fix in line, line
    bench = run_cli("bench", model_path, "--provider", "cuda", "--runs", 2, "--warmup", 1, "--threads", 1, "--json", env=env)
    assert bench.returncode == 0 and fix in bench.stderr, bench.stderr
    data = tmp_path / "data"
    for colour in ("red", "green"):
        (data / colour).mkdir(parents=True)
        _image(data / colour, colour)
    ev = run_cli("eval", model_path, data, "--json", env=env)  # eval runs on "auto": a GPU was meant
    assert ev.returncode == 0 and fix in ev.stderr and "provider 'auto'" in ev.stderr, ev.stderr


def test_the_documented_gpu_install_is_the_one_ci_runs():
    """The README and docs/devices.md give the command sequence CI's GPU lane runs (and checks with
    tests/test_gpu_package.py): onnxruntime is a base dependency, so it is removed after the
    install and the GPU build's files, which it shares a folder with, are put back."""
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip uninstall -q -y onnxruntime" in ci and "--force-reinstall --no-deps" in ci
    command = ('pip install ".[gpu]" && pip uninstall -y onnxruntime && '
               'pip install --force-reinstall --no-deps "onnxruntime-gpu>=1.17"')
    for doc in ("README.md", "docs/devices.md"):
        assert command in (ROOT / doc).read_text(), doc


# ------------------------------------------------------------------ 14: predict on a run folder or a .keras file
def _run_folder(tmp: Path, exported: tuple[str, ...] = ("model.onnx",)) -> Path:
    """A run folder as ``edgeclf train`` + ``edgeclf export`` leave it, as far as predict looks:
    run.json and model.keras (not read), and the export's ONNX files in export/."""
    run = tmp / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"class_names": list(COLOURS)}))
    (run / "model.keras").write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip: predict must not open it
    for name in exported:
        make_colour_model(run / "export" / name)
    return run


def test_predict_on_a_run_folder_runs_its_export(tmp_path):
    run = _run_folder(tmp_path, ("model.onnx", "model.int8.onnx"))
    res = run_cli("predict", run, _image(tmp_path, "red"), "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["label"] == "red"
    assert f"edgeclf: running {run / 'export' / 'model.int8.onnx'}" in res.stderr.splitlines()
    res = run_cli("predict", run / "export", _image(tmp_path, "blue"), "--json")  # the export folder itself
    assert res.returncode == 0 and json.loads(res.stdout)["label"] == "blue", res.stderr


def test_predict_on_a_run_not_exported_names_the_export_command(tmp_path):
    run = _run_folder(tmp_path, ())
    line = error_line(run_cli("predict", run, _image(tmp_path)))
    assert f"edgeclf export {run} --int8" in line and "not exported yet" in line, line
    line = error_line(run_cli("predict", run / "model.keras", _image(tmp_path)))
    assert f"edgeclf export {run / 'model.keras'} --int8" in line and "a Keras model" in line, line


def test_predict_on_a_keras_file_whose_run_was_exported_runs_the_export(tmp_path):
    run = _run_folder(tmp_path)
    res = run_cli("predict", run / "model.keras", _image(tmp_path, "green"), "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["label"] == "green", res.stderr


# ------------------------------------------------------------------ 12 and 15: a real training run
@pytest.fixture(scope="module")
def trained(tmp_path_factory, shapes_dir):
    """A small real run (edgenet, 2 epochs), trained with stderr piped as into a log file; a patched
    interval makes the throttled lines (reading, steps) show however fast the run."""
    out = tmp_path_factory.mktemp("round3") / "run"
    code = "import sys; import edgeclf.train.epochs as e; e.PLAIN_EVERY_S = 0; from edgeclf.cli import main; sys.argv[0] = 'edgeclf'; main()"
    args = ["train", str(shapes_dir), "--out", str(out), "--model", "edgenet", "--epochs", "2", "--img-size", "32", "--batch-size", "32"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "EDGECLF_CACHE_DIR": str(tmp_path_factory.mktemp("cache"))}
    res = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=900, env=env)
    assert res.returncode == 0, res.stderr
    return out, res.stderr


@pytest.mark.tf
def test_training_into_a_log_prints_lines_before_and_during_the_epochs(trained):
    _, log = trained
    lines = log.splitlines()
    ready = next(i for i, line in enumerate(lines) if line.startswith("found 96 training and 24 validation images in 3 classes"))
    first_epoch = next(i for i, line in enumerate(lines) if line.startswith("epoch   1/2"))
    reading = [i for i, line in enumerate(lines) if line.startswith("reading images: ")]
    steps = [i for i, line in enumerate(lines) if line.startswith("epoch 1/2  step ")]
    assert reading and max(reading) < ready < min(steps) < first_epoch, log
    assert "image cache" in lines[reading[0]] and "edgenet 32x32 built; epoch 1/2 starts (3 steps an epoch)" in lines[ready]
    assert "\x1b[" not in log  # plain text: no colours or cursor moves in a log


@pytest.mark.tf
def test_training_into_a_log_is_not_silent_before_the_first_epoch(tmp_path, shapes_dir):
    """The CLI as shipped (no patched interval): the data and model line comes before epoch 1."""
    res = run_cli("train", shapes_dir, "--out", tmp_path / "run", "--model", "edgenet", "--epochs", "1", "--img-size", "32")
    assert res.returncode == 0, res.stderr
    lines = res.stderr.splitlines()
    assert lines[0].startswith("found 96 training and 24 validation images in 3 classes"), res.stderr
    first_epoch = next(i for i, line in enumerate(lines) if line.startswith("epoch   1/1"))
    assert all(line.startswith("epoch 1/1  step ") for line in lines[1:first_epoch]), res.stderr  # a slow step, at most


@pytest.mark.tf
def test_eval_of_a_run_without_data_scores_its_validation_split(trained, shapes_dir):
    run, _ = trained
    res = run_cli("eval", run, "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    recorded = json.loads((run / "run.json").read_text())
    assert report["split"] == "val" and report["split_source"] == "run.json"
    assert report["n_images"] == len(recorded["splits"]["val"]) == 24
    assert report["accuracy"] == pytest.approx(recorded["val_report"]["accuracy"], abs=1e-6)  # the same images
    text = run_cli("eval", run)
    assert text.returncode == 0, text.stderr
    assert "on 24 images of the run's validation split (run.json)" in " ".join(text.stdout.split())  # piped: wrapped
    given = json.loads(run_cli("eval", run, shapes_dir, "--json").stdout)  # with DATA_DIR: as before
    assert given["n_images"] == 120 and "split" not in given


@pytest.mark.tf
def test_eval_without_data_when_the_split_cannot_be_scored(trained, tmp_path, shapes_dir):
    run, _ = trained
    copy = shutil.copytree(run, tmp_path / "moved")
    record = json.loads((copy / "run.json").read_text())
    record["splits"]["val"] = [str(tmp_path / "gone" / Path(p).relative_to(shapes_dir)) for p in record["splits"]["val"]]
    record["data_dir"] = str(tmp_path / "gone")
    (copy / "run.json").write_text(json.dumps(record))
    line = error_line(run_cli("eval", copy), after_skip_warnings=True)
    assert "none of the 24 validation images run.json lists can be read" in line and "DATA_DIR" in line, line
    onnx = make_colour_model(tmp_path / "m.onnx")
    line = error_line(run_cli("eval", onnx))
    assert "no run.json" in line and "DATA_DIR" in line, line
