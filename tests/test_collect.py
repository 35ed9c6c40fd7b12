"""predict --collect: the frames worth a look kept as JPEG + JSON, sorted by label, bounded.
Real onnxruntime sessions on the colour model with an unknown score (grey is unknown)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from conftest import error_line, run_cli
from onnx_fixtures import make_colour_model, solid

from edgeclf.model.prediction import Prediction
from edgeclf.predict.options import Result
from edgeclf.sinks.collect import CollectSink
from edgeclf.sources.base import Frame

GREY = np.full((40, 40, 3), 128, np.uint8)


def result(label: str, probs: dict, index: int = 0, source: str = "cam", unknown: bool = False) -> Result:
    best = max(probs, key=probs.get)
    pred = Prediction("unknown" if unknown else label, None if unknown else list(probs).index(best), probs[best], probs, 0.9 if unknown else 0.1)
    return Result(Frame(np.full((30, 40, 3), 90, np.uint8), source, index, 0.0), pred, 1.0)


def test_cli_keeps_unknown_and_close_calls_sorted_by_label(tmp_path):
    model = make_colour_model(tmp_path / "m.onnx", unknown=0.5)
    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "red.png"), solid("red"))
    cv2.imwrite(str(photos / "grey.png"), GREY)
    mix = np.zeros((40, 40, 3), np.uint8)
    mix[..., 2], mix[..., 1] = 200, 190  # red and green nearly tied: a close call
    cv2.imwrite(str(photos / "mix.png"), mix)
    out = tmp_path / "kept"
    r = run_cli("predict", model, photos, "--collect", out, "--collect-margin", "0.3", "--json")
    assert r.returncode == 0, r.stderr
    jpgs = sorted(p.relative_to(out).parts[0] for p in out.glob("*/edgeclf-*.jpg"))
    assert jpgs == ["red", "unknown"]  # the tie (labelled red) and the grey; the clear red is not kept
    side = json.loads(next((out / "unknown").glob("*.json")).read_text())
    assert side["label"] == "unknown" and side["reasons"] == ["unknown", "low margin"] and side["unknown_score"] > 0.5
    assert side["best"] in ("red", "green", "blue") and cv2.imread(str(next((out / "unknown").glob("*.jpg")))) is not None
    inside = run_cli("predict", model, photos, "--collect", photos / "kept")
    assert inside.returncode != 0 and "inside or around the source" in error_line(inside)


def test_label_changes_rate_and_bounds(tmp_path):
    t = [0.0]
    sink = CollectSink(tmp_path / "c", "m.onnx", numbered=True, margin=0.0, interval=1.0, max_files=3, clock=lambda: t[0])
    sure = {"a": 0.99, "b": 0.01}
    other = {"a": 0.01, "b": 0.99}
    sink.write(result("a", sure, 0))  # first frame: nothing to compare with
    t[0] = 0.5
    sink.write(result("b", other, 1))  # changed, kept
    t[0] = 0.7
    sink.write(result("a", sure, 2))  # changed again, but within the interval: not kept
    assert sink.saved == 1
    for i in range(3, 9):  # one a second: a (as frame 2: no change), then b, a, b, a, b
        t[0] += 1.0
        sink.write(result("a" if i % 2 else "b", sure if i % 2 else other, i))
    files = sorted((tmp_path / "c").glob("*/edgeclf-*.jpg"))
    assert sink.saved == 6 and len(files) == 3  # the oldest went first
    assert sorted(int(f.stem.rsplit("-", 1)[1]) for f in files) == [6, 7, 8]
    assert len(list((tmp_path / "c").glob("*/*.json"))) == 3
    (tmp_path / "c" / "a" / "mine.jpg").write_bytes(b"x")  # a user's own file is never removed
    sink2 = CollectSink(tmp_path / "c", "m.onnx", numbered=True, margin=0.0, interval=0.0, max_files=1, clock=lambda: 0.0)
    sink2.write(result("a", sure, 20, unknown=True))
    assert (tmp_path / "c" / "a" / "mine.jpg").exists() and len(list((tmp_path / "c").glob("*/edgeclf-*.jpg"))) == 1


def test_passwords_are_masked_in_sidecars(tmp_path):
    sink = CollectSink(tmp_path / "c", "m.onnx", numbered=True, interval=0.0)
    sink.write(result("a", {"a": 0.5, "b": 0.5}, 3, source="rtsp://user:secret@cam.local/live"))
    side = next((tmp_path / "c").glob("*/*.json")).read_text()
    assert "secret" not in side and "***" in side
    assert "secret" not in next((tmp_path / "c").glob("*/*.jpg")).name


@pytest.mark.parametrize("args, why", [(("--collect-margin", "2"), "--collect-margin"), (("--collect-max", "0"), "--collect-max")])
def test_bad_collect_options(tmp_path, args, why):
    model = make_colour_model(tmp_path / "m.onnx")
    cv2.imwrite(str(tmp_path / "a.png"), solid("red"))
    r = run_cli("predict", model, tmp_path / "a.png", "--collect", tmp_path / "k", *args)
    assert r.returncode != 0 and why in error_line(r)
