"""edgeclf export --format tflite: a real Keras model, TensorFlow's real TFLiteConverter, the
.tflite file run through ai-edge-litert as the runtime runs it."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import TRAIN_EXTRA, error_line, run_cli

pytestmark = pytest.mark.tf
pytest.importorskip("tensorflow", reason=TRAIN_EXTRA)
pytest.importorskip("tf2onnx", reason=TRAIN_EXTRA)
pytest.importorskip("ai_edge_litert", reason="needs ai-edge-litert to run .tflite models: pip install 'edgeclf[litert]'")

from edgeclf.train.tf_quiet import import_tensorflow_quietly

import_tensorflow_quietly()

from test_export import leftovers, make_run

from edgeclf.errors import EdgeclfError
from edgeclf.export import api, tflite
from edgeclf.export.api import ExportCheckError, export_model
from edgeclf.model import litert, metadata as md
from edgeclf.model.exported import TFLITE_INT8_NAME
from edgeclf.model.session import open_session


@pytest.fixture(scope="module")
def seed_run(shapes_dir, tmp_path_factory) -> Path:
    """The small 'seed' CNN at 32x32, fitted until it is mostly right on the generated shapes."""
    return make_run("seed", 32, shapes_dir, tmp_path_factory.mktemp("seed") / "run", epochs=25, steps=None)


@pytest.fixture(scope="module")
def cli_export(seed_run, tmp_path_factory):
    """``edgeclf export RUN --format tflite --json`` once (no --int8): (folder, the JSON printed, the process)."""
    out = tmp_path_factory.mktemp("tflite") / "export"
    r = run_cli("export", seed_run, "--out", out, "--format", "tflite", "--calib-size", 40, "--max-drop", 0.1, "--json")
    assert r.returncode == 0, r.stderr
    return out, json.loads(r.stdout), r


def val_images(seed_run: Path, size=(32, 32)) -> np.ndarray:
    from edgeclf.train.imagecache import load_files

    x, ok, _ = load_files([Path(p) for p in json.loads((seed_run / "run.json").read_text())["splits"]["val"]], size)
    assert len(ok) == 30
    return x


def test_cli_writes_a_checked_tflite_beside_model_onnx(cli_export, seed_run):
    out, report, _ = cli_export
    assert report == json.loads((out / "export.json").read_text())  # stdout holds the JSON object only
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "model.int8.tflite", "model.onnx"]
    assert not leftovers(out) and not list(out.parent.glob(".*"))  # no temporary file or folder left
    payload = (out / TFLITE_INT8_NAME).read_bytes()
    assert report["files"]["tflite_int8"] == TFLITE_INT8_NAME
    assert report["sizes_bytes"]["tflite_int8"] == len(payload)
    assert report["sha256"]["tflite_int8"] == hashlib.sha256(payload).hexdigest()
    assert "int8" not in report  # --int8 still decides model.int8.onnx

    t = report["tflite_int8"]
    n_val = len(json.loads((seed_run / "run.json").read_text())["splits"]["val"])
    assert t["format"] == "LiteRT full-integer int8, uint8 input, float output"
    assert t["n_calib"] == 40 and t["n_eval"] == n_val == t["guard"]["n_validation"]  # calibrated without --int8
    assert t["accepted"] is t["guard"]["accepted"] is True and t["verdict"] == "accepted"
    assert t["n_judged"] == t["guard"]["n"] == n_val + t["guard"]["n_training"] and t["guard"]["n_training"] > 0
    assert t["judged_on"].startswith(f"{t['n_judged']} photos ({n_val} validation + ")
    assert t["drop"] == pytest.approx(t["accuracy_fp32"] - t["accuracy_int8"]) and t["max_drop"] == 0.1
    assert t["unknown_score"] is True and "unknown" not in t  # its figures sit beside fp32's
    assert t["summary"].startswith("LiteRT int8 vs fp32 ONNX on ") and t["summary"].endswith("; accepted")
    u = report["unknown"]["tflite_int8"]
    assert u["calibrated_on"] == n_val and u["set_by"] == "fp32's threshold + median paired score difference"
    assert 0 < t["size_ratio"] < 0.5  # int8 weights: about a quarter of fp32's
    assert t["input_quantization"] == {"scale": 1.0, "zero_point": 0}  # raw pixels in, as they are
    assert "TFLiteConverter" in t["converter"] and t["checked_with"].startswith("ai-edge-litert ")
    assert t["conversion_seconds"] > 0


def test_tflite_carries_its_metadata_and_answers_as_model_onnx(cli_export, seed_run):
    out, report, _ = cli_export
    meta = litert.read_metadata(out / TFLITE_INT8_NAME)
    assert json.loads(meta[md.CLASS_NAMES]) == report["class_names"] == ["circle", "square", "triangle"]
    assert (meta[md.INPUT_HEIGHT], meta[md.INPUT_WIDTH]) == ("32", "32")
    assert meta[md.PRECISION] == "int8" and meta[md.ARCHITECTURE] == "seed"
    assert float(meta[md.VAL_ACCURACY]) == pytest.approx(report["tflite_int8"]["accuracy_int8"], abs=1e-6)

    x = val_images(seed_run)
    onnx_probs = open_session(out / "model.onnx").run([md.OUTPUT_NAME], {md.INPUT_NAME: x})[0]
    session = litert.LiteRTSession(out / TFLITE_INT8_NAME, threads=1)
    assert session.get_inputs()[0].type == "tensor(uint8)"
    probs = session.run([md.OUTPUT_NAME], {md.INPUT_NAME: x})[0]
    assert probs.shape == onnx_probs.shape and probs.dtype == np.float32
    assert (probs.argmax(1) == onnx_probs.argmax(1)).mean() >= 0.95  # at most one of 30 photos
    agreement = (probs.argmax(1) == onnx_probs.argmax(1)).mean()
    assert agreement == pytest.approx(report["tflite_int8"]["top1_agreement"])


def test_classifier_runs_the_tflite(cli_export, seed_run):
    from edgeclf.model import classifier

    if not hasattr(classifier, "litert"):
        pytest.skip("Classifier does not open .tflite models yet (edgeclf.model.classifier does not use edgeclf.model.litert)")
    out, report, _ = cli_export
    clf = classifier.Classifier(out / TFLITE_INT8_NAME, threads=1)  # also checks the file against export.json
    assert clf.class_names == report["class_names"] and clf.size == (32, 32)
    x = val_images(seed_run)
    onnx_top1 = classifier.Classifier(out / "model.onnx", threads=1).predict_arrays(x).argmax(1)
    assert (clf.predict_arrays(x).argmax(1) == onnx_top1).mean() >= 0.95


def test_tflite_scores_unknown_as_model_onnx_does(cli_export, seed_run, tmp_path):
    """The LiteRT model gives the unknown score: its embedding output against the bank in its
    archive, near fp32 ONNX's score on the same photos; its own threshold is in its metadata."""
    from edgeclf.model.classifier import Classifier
    from edgeclf.model.unknown import parse_calibration

    out, report, _ = cli_export
    path = out / TFLITE_INT8_NAME
    assert litert.has_unknown_score(path) and litert.read_bank(path).shape[0] == report["unknown"]["bank"]
    session = litert.LiteRTSession(path, threads=1)
    assert [o.name for o in session.get_outputs()] == [md.OUTPUT_NAME, md.EMBEDDING_NAME, md.UNKNOWN_NAME]
    x = val_images(seed_run)
    scores = session.run([md.UNKNOWN_NAME], {md.INPUT_NAME: x})[0]
    onnx_scores = open_session(out / "model.onnx").run([md.UNKNOWN_NAME], {md.INPUT_NAME: x})[0]
    assert scores.shape == (len(x),) and np.median(np.abs(scores - onnx_scores)) < 0.05
    cal = parse_calibration(litert.read_metadata(path)[md.UNKNOWN])
    assert cal.threshold == pytest.approx(report["unknown"]["tflite_int8"]["threshold"])
    assert np.mean(scores > cal.threshold) <= 0.2  # in-class photos: mostly known

    # The Classifier reads the score as it reads ONNX's: at a threshold that splits these photos
    # and noise (the small seed CNN does not tell noise apart by itself), the answers agree.
    mixed = np.concatenate([x, np.random.default_rng(0).integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)])
    answers = {}
    for name in (TFLITE_INT8_NAME, "model.onnx"):
        clf = Classifier(out / name, threads=1, unknown_threshold=float(np.median(onnx_scores)))
        assert clf.unknown_output == md.UNKNOWN_NAME and clf.calibration is not None
        answers[name] = np.array([p.label == "unknown" for p in clf.predictions(*clf.classify_arrays(mixed))])
    assert 0.2 < answers["model.onnx"].mean() < 0.8
    assert (answers[TFLITE_INT8_NAME] == answers["model.onnx"]).mean() >= 0.85


def test_without_the_unknown_score_the_tflite_has_one_output(seed_run, tmp_path):
    out = tmp_path / "export"
    report = export_model(seed_run, out, tflite=True, calib_size=20, max_drop=0.1, unknown_reject=0, show_progress=False)
    t = report["tflite_int8"]
    assert t["unknown_score"] is False and t["summary"].endswith("; no unknown score") and "unknown" not in report
    session = litert.LiteRTSession(out / TFLITE_INT8_NAME, threads=1)
    assert [o.name for o in session.get_outputs()] == [md.OUTPUT_NAME]
    assert not litert.has_unknown_score(out / TFLITE_INT8_NAME)


def _flatbuffer(path: Path) -> bytes:
    """The .tflite flatbuffer without the archive edgeclf appended."""
    with zipfile.ZipFile(path) as z:
        return path.read_bytes()[: min(i.header_offset for i in z.infolist())]


def _with_bank(raw: bytes, meta: dict, array: np.ndarray, allow_pickle: bool = False) -> bytes:
    """``raw`` with edgeclf's archive holding ``meta`` and ``array`` as the bank, whatever it is."""
    buf, member = io.BytesIO(), io.BytesIO()
    np.save(member, array, allow_pickle=allow_pickle)
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(litert.METADATA_MEMBER, json.dumps(meta))
        z.writestr(litert.BANK_MEMBER, member.getvalue())
    return raw + buf.getvalue()


def test_a_bad_bank_is_one_line(cli_export, tmp_path, monkeypatch):
    """The bank is as untrusted as the model: the wrong width, a non-float, non-finite or pickled
    array, or a member over its bound is a one-line error naming the file, and nothing is unpickled."""
    out, _, _ = cli_export
    path = out / TFLITE_INT8_NAME
    raw, meta, bank = _flatbuffer(path), litert.read_metadata(path), litert.read_bank(path)
    good = tmp_path / "good.tflite"
    good.write_bytes(_with_bank(raw, meta, bank.astype(np.float16)))  # the pieces make a working model again
    assert md.UNKNOWN_NAME in [o.name for o in litert.LiteRTSession(good, threads=1).get_outputs()]
    bad = tmp_path / "bad.tflite"
    cases = ((bank[:, :-1], False, "does not fit the model's"), (bank.astype(np.int32), False, "not a little-endian float16"),
             (bank.astype(">f4"), False, "not a little-endian float16"), (np.full_like(bank, np.nan), False, "not a finite float matrix"),
             (np.array([{"a": 1}], dtype=object), True, "not a little-endian float16"))  # never unpickled
    for array, pickled, words in cases:
        bad.write_bytes(_with_bank(raw, meta, array, pickled))
        with pytest.raises(EdgeclfError) as e:
            litert.LiteRTSession(bad, threads=1)
        assert str(e.value).startswith(f"{bad}: edgeclf unknown bank") or str(e.value).startswith(f"{bad}: unreadable")
        assert words in str(e.value) and "\n" not in str(e.value)
    # A header that declares far more than the member holds (np.load would allocate it first): refused before any allocation
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f2", "fortran_order": False, "shape": (1 << 20, 1 << 20)})
    with zipfile.ZipFile(member := io.BytesIO(), "w") as z:
        z.writestr(litert.METADATA_MEMBER, json.dumps(meta))
        z.writestr(litert.BANK_MEMBER, header.getvalue() + bytes(100))
    bad.write_bytes(raw + member.getvalue())
    with pytest.raises(EdgeclfError, match=r"not a little-endian float16 or float32 matrix of the size it declares"):
        litert.LiteRTSession(bad, threads=1)
    monkeypatch.setattr(litert, "_MAX_BANK_BYTES", 1000)
    with pytest.raises(EdgeclfError, match=r"edgeclf unknown bank is \d+ bytes \(at most 1000\)"):
        litert.LiteRTSession(good, threads=1)


def test_outputs_of_one_width_cannot_be_told_apart(tmp_path):
    """An embedding as wide as the classes: _io_details says so (None), and export then converts
    the model without it (no unknown score) instead of guessing which output is which."""
    from tflite_fixtures import scored_colour_tflite

    raw, _ = scored_colour_tflite(tmp_path, width=3)
    assert tflite._io_details(raw, "m", 3) == ({}, None)
    raw, names = scored_colour_tflite(tmp_path, width=4)
    io_, told = tflite._io_details(raw, "m", 3)
    assert told == names and sorted(told) == [md.EMBEDDING_NAME, md.OUTPUT_NAME] and "input_quantization" in io_


def test_guard_rejects_and_writes_no_tflite(seed_run, tmp_path):
    out = tmp_path / "export"
    r = run_cli("export", seed_run, "--out", out, "--format", "tflite", "--calib-size", 20, "--max-drop", "-1")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("edgeclf: error: LiteRT int8 model rejected: accuracy "), line
    assert "rejected as drop credibly above --max-drop -1.0" in line, line
    assert line.endswith(f"model.onnx and export.json written to {out}, no {TFLITE_INT8_NAME}"), line
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "model.onnx"]
    assert not list(out.parent.glob(".*"))
    report = json.loads((out / "export.json").read_text())
    assert report["tflite_int8"]["accepted"] is False and "tflite_int8" not in report["files"]
    assert report["tflite_int8"]["verdict"].startswith("rejected: drop credibly above --max-drop -1.0")


def test_int8_and_tflite_are_judged_against_one_fp32_run(seed_run, tmp_path, monkeypatch, capsys):
    """fp32's probabilities on the judged photos are computed once and judge both models; the
    summary table has a row for each."""
    calls = []
    real = api.judged_photos
    monkeypatch.setattr(api, "judged_photos", lambda *a, **k: calls.append(1) or real(*a, **k))
    out = tmp_path / "export"
    report = export_model(seed_run, out, int8=True, tflite=True, calib_size=30, calib_method="minmax", max_drop=0.1,
                          show_progress=False)
    assert calls == [1]
    q, t = report["int8"], report["tflite_int8"]
    assert (q["guard"]["n"], q["accuracy_fp32"], q["n_calib"]) == (t["guard"]["n"], t["accuracy_fp32"], t["n_calib"])
    assert q["guard"]["accuracy_fp32"] == t["guard"]["accuracy_fp32"]
    assert sorted(report["files"]) == ["fp32", "int8", "report", "tflite_int8"]

    from edgeclf.export.commands import _print_summary

    _print_summary(report, out)
    table = " ".join(capsys.readouterr().out.split())
    assert "model.int8.onnx" in table and TFLITE_INT8_NAME in table
    assert f"LiteRT int8 vs fp32 ONNX on {t['judged_on']}" in table and "no unknown score" not in table
    assert f"tflite_int8 {report['unknown']['tflite_int8']['threshold']:.4f}" in table  # its threshold beside the others


def test_bad_format_is_one_line(seed_run, tmp_path):
    for value, bad in (("foo", "foo"), ("onnx,tflit", "tflit")):
        r = run_cli("export", seed_run, "--out", tmp_path / "out", "--format", value)
        assert error_line(r) == f"edgeclf: error: --format {bad}: expected onnx or tflite"
    assert not (tmp_path / "out").exists()


def test_without_ai_edge_litert_fails_before_any_work(seed_run, tmp_path, monkeypatch):
    monkeypatch.setattr(litert, "available", lambda: False)
    with pytest.raises(EdgeclfError) as e:
        export_model(seed_run, tmp_path / "out", tflite=True, show_progress=False)
    assert str(e.value) == "--format tflite needs ai-edge-litert to check the model: pip install 'edgeclf[litert]'"
    assert not isinstance(e.value, ExportCheckError) and e.value.exit_code == 2
    assert not (tmp_path / "out").exists()


def test_savedmodel_way_when_the_converter_refuses_the_keras_model(seed_run, tmp_path, monkeypatch):
    """Keras models TFLiteConverter.from_keras_model cannot take go through a SavedModel, in the
    temporary folder given; a model neither way converts is one line naming it."""
    import keras
    import tensorflow as tf

    def refuse(model):
        raise ValueError("not this way")

    monkeypatch.setattr(tf.lite.TFLiteConverter, "from_keras_model", staticmethod(refuse))
    model = keras.models.load_model(seed_run / "model.keras")
    x = val_images(seed_run)
    raw = tflite.convert_int8(model, x[:8], tmp_path, "seed.keras")
    (tmp_path / "m.tflite").write_bytes(raw)
    probs = litert.LiteRTSession(tmp_path / "m.tflite", threads=1).run(None, {md.INPUT_NAME: x})[0]
    keras_probs = np.asarray(model(x.astype(np.float32)))
    assert (probs.argmax(1) == keras_probs.argmax(1)).mean() >= 0.9
    assert (tmp_path / "saved_model").is_dir()  # where the SavedModel went: the temporary folder, not --out

    monkeypatch.setattr(tf.lite.TFLiteConverter, "from_saved_model", staticmethod(refuse))
    with pytest.raises(EdgeclfError, match=r"^seed\.keras: TFLiteConverter cannot convert this model to full-integer "
                                           r"int8 \(not this way\)$"):
        tflite.convert_int8(model, x[:8], tmp_path, "seed.keras")


def test_calibration_pins_the_input_to_raw_pixels_and_nothing_else(seed_run, tmp_path, monkeypatch):
    """The generated shapes never reach 255: without the two pinned pixels the uint8 input's scale
    would be below 1 (their largest value / 255); with them it is 1, and every other tensor's range
    is what it was."""
    import keras
    from ai_edge_litert.interpreter import Interpreter

    def scales(raw: bytes) -> dict[str, float]:
        it = Interpreter(model_content=raw)
        return {t["name"]: t["quantization"][0] for t in it.get_tensor_details() if t["quantization"][0]}

    model = keras.models.load_model(seed_run / "model.keras")
    x = val_images(seed_run)
    assert x.max() < 255
    pinned = scales(tflite.convert_int8(model, x, tmp_path, "seed.keras"))
    monkeypatch.setattr(tflite, "_samples", lambda c: ([c[i : i + 1].astype(np.float32)] for i in range(len(c))))
    plain = scales(tflite.convert_int8(model, x, tmp_path, "seed.keras"))
    changed = {name: (plain[name], pinned[name]) for name in pinned if pinned[name] != plain[name]}
    assert changed and len(changed) <= 2, changed  # the input, and the quantize op that takes it to int8
    assert all(p == pytest.approx(x.max() / 255) and q == 1.0 for p, q in changed.values()), changed
    assert len(pinned) > len(changed) + 4
