"""'unknown' on the device side: the rule, the model's score and threshold, predict's outputs and
options, smoothing of the decision. Real onnxruntime sessions on a tiny colour model whose
unknown score is known for any image (1 - its top probability: grey scores 2/3, a pure colour ~0)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import error_line, run_cli
from onnx_fixtures import make_colour_model, solid

from edgeclf.errors import EdgeclfError
from edgeclf.model.classifier import Classifier, Prediction
from edgeclf.model.unknown import UNKNOWN_LABEL, UnknownRule, parse_calibration, parse_class_thresholds, rule_for
from edgeclf.predict.loop import Smoother

GREY = np.full((40, 40, 3), 128, np.uint8)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("unknown")
    photos = d / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "a_red.png"), solid("red"))
    cv2.imwrite(str(photos / "b_grey.png"), GREY)
    cv2.imwrite(str(photos / "c_blue.png"), solid("blue"))
    return {"scored": make_colour_model(d / "scored.onnx", unknown=0.5), "plain": make_colour_model(d / "plain.onnx"),
            "photos": photos}


def test_classifier_answers_unknown_far_from_every_class(models):
    clf = Classifier(models["scored"], threads=1)
    assert clf.calibration is not None and clf.calibration.threshold == 0.5
    red, grey = clf.predict_batch([solid("red"), GREY])
    assert (red.label, red.index, red.unknown) == ("red", 0, False)
    assert red.unknown_score is not None and red.unknown_score < 0.1
    assert grey.label == UNKNOWN_LABEL and grey.index is None and grey.unknown
    assert grey.unknown_score == pytest.approx(2 / 3, abs=0.02)
    assert grey.best in ("red", "green", "blue")  # still says which class was nearest
    assert sum(grey.probs.values()) == pytest.approx(1, abs=1e-4)


def test_overrides_and_off(models):
    assert Classifier(models["scored"], threads=1, unknown=False).predict(GREY).label != UNKNOWN_LABEL
    assert Classifier(models["scored"], threads=1, unknown_threshold=0.9).predict(GREY).label != UNKNOWN_LABEL
    strict = Classifier(models["scored"], threads=1, unknown_threshold=1e-9)
    assert strict.predict(solid("red")).label == UNKNOWN_LABEL  # every image is a little off pure red
    # a per-class probability floor works without any score, on a model that has none
    plain = Classifier(models["plain"], threads=1, class_thresholds={"red": 0.999999})
    assert plain.calibration is None
    assert plain.predict(solid("red")).label == UNKNOWN_LABEL
    assert plain.predict(solid("blue")).label == "blue"
    with pytest.raises(EdgeclfError, match="no unknown score"):
        Classifier(models["plain"], threads=1, unknown_threshold=0.5)
    with pytest.raises(EdgeclfError, match="no class 'cats'"):
        Classifier(models["plain"], threads=1, class_thresholds={"cats": 0.5})


def test_rule_and_parsing():
    rule = UnknownRule(0.3, {"cats": 0.8})
    assert rule.is_unknown("dogs", 0.99, 0.31) and not rule.is_unknown("dogs", 0.5, 0.3)
    assert rule.is_unknown("cats", 0.79, 0.0) and not rule.is_unknown("cats", 0.8, None)
    assert not rule_for(parse_calibration('{"threshold": 0.3}'), enabled=False).active
    assert rule_for(parse_calibration('{"threshold": 0.3}'), threshold=0.6).threshold == 0.6
    assert parse_class_thresholds(["cats=0.8", "a=b=0.5"]) == {"cats": 0.8, "a=b": 0.5}
    for bad, why in [("cats", "CLASS=P"), ("cats=high", "not a number"), ("cats=1.5", "from 0 to 1"), ("=0.5", "CLASS=P")]:
        with pytest.raises(EdgeclfError, match=why):
            parse_class_thresholds([bad])
    for text, why in [("[1]", "not an object"), ('{"threshold": "x"}', "not a finite"), ('{"threshold": NaN}', "not a finite"),
                      ("{", "not valid JSON"), ('{"threshold": true}', "not a finite"), ("[" * 5000, "characters long")]:
        with pytest.raises(EdgeclfError, match=why):
            parse_calibration(text, "m.onnx")


def test_hostile_calibration_is_one_line_error(models, tmp_path):
    from onnx_fixtures import COLOURS, edgeclf_metadata

    bad = make_colour_model(tmp_path / "bad.onnx", metadata={**edgeclf_metadata(COLOURS, (32, 32)), "unknown": '{"threshold": [1]}'},
                            unknown=0.5)
    r = run_cli("predict", bad, models["photos"])
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "bad.onnx: metadata unknown: threshold" in error_line(r)


def test_smoothing_decides_on_the_averaged_score():
    rule = UnknownRule(0.5)
    s = Smoother(0.3)
    names = ["a", "b"]
    labels = []
    for score in [0.1, 0.1, 0.9, 0.1, 0.9, 0.9, 0.9, 0.9]:  # one far frame alone flips nothing
        p, sc = s(np.array([0.9, 0.1]), score)
        labels.append(Prediction.from_probs(p, names, sc, rule).label)
    assert labels[:5] == ["a"] * 5
    assert labels[-1] == UNKNOWN_LABEL


def test_cli_outputs_say_unknown(models, tmp_path):
    out_csv = tmp_path / "r.csv"
    r = run_cli("predict", models["scored"], models["photos"], "--json", "--csv", out_csv)
    assert r.returncode == 0, r.stderr
    recs = {Path(j["source"]).name: j for j in map(json.loads, r.stdout.splitlines())}
    assert recs["b_grey.png"]["label"] == "unknown" and recs["b_grey.png"]["index"] is None
    assert recs["b_grey.png"]["unknown"] is True and recs["b_grey.png"]["unknown_score"] > 0.5
    assert recs["a_red.png"]["label"] == "red" and recs["a_red.png"]["unknown"] is False
    rows = {Path(row["source"]).name: row for row in csv.DictReader(out_csv.open())}
    assert rows["b_grey.png"]["label"] == "unknown" and rows["b_grey.png"]["index"] == ""
    human = run_cli("predict", models["scored"], models["photos"])
    line = next(x for x in human.stdout.splitlines() if "b_grey" in x)
    assert "  unknown  " in line and line.endswith(")")
    off = run_cli("predict", models["scored"], models["photos"], "--no-unknown", "--json")
    assert "unknown" not in {json.loads(x)["label"] for x in off.stdout.splitlines()}
    floor = run_cli("predict", models["plain"], models["photos"], "--threshold", "red=0.9999999", "--json")
    assert {Path(j["source"]).name: j["label"] for j in map(json.loads, floor.stdout.splitlines())}["a_red.png"] == "unknown"
    bad = run_cli("predict", models["plain"], models["photos"], "--threshold", "red")
    assert bad.returncode != 0 and "expected CLASS=P" in error_line(bad)


def test_annotation_shows_unknown():
    from edgeclf.sinks.annotation import annotate

    pred = Prediction("unknown", None, 0.4, {"a": 0.4, "b": 0.6 - 0.0}, 0.9)
    known = Prediction("b", 1, 0.6, {"a": 0.4, "b": 0.6}, 0.1)
    img = np.zeros((100, 320, 3), np.uint8)
    # one more line of text for 'unknown': the drawn area is taller
    assert (annotate(img, pred).any(axis=(1, 2))).sum() > (annotate(img, known).any(axis=(1, 2))).sum()


def test_eval_unknown_reports_open_set_figures_and_plot(models, tmp_path):
    data = tmp_path / "data"
    for c in ("red", "green", "blue"):
        (data / c).mkdir(parents=True)
        for i in range(4):
            cv2.imwrite(str(data / c / f"{i}.png"), solid(c, 40 + i, 50))
    cv2.imwrite(str(data / "blue" / "grey.png"), GREY)  # an in-class photo the model finds far
    odd = tmp_path / "odd" / "deep"
    odd.mkdir(parents=True)
    for i in range(3):
        cv2.imwrite(str(odd / f"g{i}.png"), np.full((30, 30, 3), 100 + 20 * i, np.uint8))
    cv2.imwrite(str(odd / "red.png"), solid("red"))  # an unknown the model accepts
    plot = tmp_path / "scores.png"
    r = run_cli("eval", models["scored"], data, "--unknown", tmp_path / "odd", "--plot", plot, "--json")
    assert r.returncode == 0, r.stderr
    u = json.loads(r.stdout)["unknown"]
    assert u["unknown_rejected"]["count"] == 3 and u["unknown_rejected"]["n"] == 4
    assert u["in_class_rejected"]["count"] == 1 and u["in_class_right_and_accepted"]["count"] == 12
    assert u["threshold"] == 0.5 and u["threshold_source"] == "model"
    # the greys outrank the 12 solid photos and tie with the grey in-class one; the red unknown
    # ranks somewhere among the solid ones: (3 * 12.5 + 0..12) / 52
    assert 37.5 / 52 <= u["auroc"] <= 49.5 / 52
    img = cv2.imread(str(plot))
    assert img is not None and img.shape[1] == 900
    loose = run_cli("eval", models["scored"], data, "--unknown", tmp_path / "odd", "--unknown-threshold", "0.9", "--json",
                    "--plot", tmp_path / "p2.png")
    assert json.loads(loose.stdout)["unknown"]["unknown_rejected"]["count"] == 0
    human = run_cli("eval", models["scored"], data, "--unknown", tmp_path / "odd", "--plot", tmp_path / "p3.png")
    assert "unknown photos answered unknown" in human.stdout and "75.0%" in human.stdout
    none = run_cli("eval", models["plain"], data, "--unknown", tmp_path / "odd")
    assert none.returncode != 0 and "no unknown score threshold" in error_line(none)
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run_cli("eval", models["scored"], data, "--unknown", empty)
    assert r.returncode != 0 and "holds no image files" in error_line(r)


def test_auroc_and_false_accepts():
    from edgeclf.metrics import accepted_at, auroc

    assert auroc([0.1, 0.2], [0.3, 0.4]) == 1.0 and auroc([0.3, 0.4], [0.1, 0.2]) == 0.0
    assert auroc([0.5, 0.1], [0.5]) == 0.75  # one tie (half) and one win
    known = np.arange(100) / 100  # 0.00 .. 0.99: the 95% point is 0.9405
    assert accepted_at(known, [0.5, 0.94, 0.95, 2.0]) == 0.5
