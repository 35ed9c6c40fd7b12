"""Classifier on real onnxruntime sessions: metadata, predictions, odd images, threads, bad models."""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest
from onnx_fixtures import COLOURS, make_colour_model, make_vector_model, solid

from edgeclf.errors import EdgeclfError
from edgeclf.model.classifier import Classifier, Prediction


@pytest.fixture(scope="module")
def colour_model(tmp_path_factory):
    return make_colour_model(tmp_path_factory.mktemp("models") / "colour.onnx", size=(32, 32))


def test_loads_metadata(colour_model):
    clf = Classifier(colour_model)
    assert clf.class_names == list(COLOURS)
    assert clf.size == (32, 32)
    assert clf.input_dtype == np.uint8
    assert clf.metadata["precision"] == "fp32"
    assert "CPUExecutionProvider" in clf.providers


@pytest.mark.parametrize("colour", COLOURS)
def test_predict_returns_a_prediction(colour_model, colour):
    pred = Classifier(colour_model).predict(solid(colour, 100, 37))
    assert isinstance(pred, Prediction)
    assert pred.label == colour and pred.index == COLOURS.index(colour)
    assert set(pred.probs) == set(COLOURS)
    assert pred.score == pred.probs[colour] == max(pred.probs.values())
    assert abs(sum(pred.probs.values()) - 1) < 1e-5
    assert [c for c, _ in pred.top(2)][0] == colour and len(pred.top(2)) == 2


def test_predict_batch_matches_predict(colour_model):
    clf = Classifier(colour_model)
    images = [solid(c, 40 + 10 * i, 90) for i, c in enumerate(["blue", "red", "green", "red"])]
    batch = clf.predict_batch(images)
    assert [p.label for p in batch] == ["blue", "red", "green", "red"]
    for img, p in zip(images, batch):
        assert clf.predict(img).probs == pytest.approx(p.probs, abs=1e-6)
    assert clf.predict_batch([]) == []


def test_odd_images_grey_16bit_alpha(colour_model):
    clf = Classifier(colour_model)
    red = solid("red")
    bgra = cv2.cvtColor(red, cv2.COLOR_BGR2BGRA)
    sixteen = red.astype(np.uint16) * 257
    assert clf.predict(bgra).label == "red"
    assert clf.predict(sixteen).label == "red"
    grey = clf.predict(np.full((20, 20), 128, np.uint8))  # grey: equal channels, equal probabilities
    assert max(grey.probs.values()) - min(grey.probs.values()) < 1e-6


def test_safe_from_several_threads(colour_model):
    clf = Classifier(colour_model, threads=1)
    images = [solid(COLOURS[i % 3], 30 + i, 50 + i) for i in range(24)]
    expected = [clf.predict(img).probs for img in images]
    got: dict[int, dict] = {}
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for _ in range(5):
                for i in range(offset, len(images), 4):
                    got.setdefault(i, clf.predict(images[i]).probs)
                    assert clf.predict(images[i]).probs == pytest.approx(expected[i], abs=1e-6)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert len(got) == len(images)


def test_model_without_metadata_needs_labels_and_size(tmp_path):
    path = make_colour_model(tmp_path / "bare.onnx", metadata=False, dynamic_hw=True)
    with pytest.raises(EdgeclfError, match="no edgeclf metadata"):
        Classifier(path)
    clf = Classifier(path, labels=["r", "g", "b"], size=(24, 40))
    assert clf.size == (24, 40)
    assert clf.predict(solid("green")).label == "g"


def test_model_without_metadata_takes_size_from_fixed_input_shape(tmp_path):
    path = make_colour_model(tmp_path / "fixed.onnx", size=(16, 16), metadata=False)
    clf = Classifier(path, labels=["r", "g", "b"])
    assert clf.size == (16, 16)


def test_float_input_model(tmp_path):
    clf = Classifier(make_colour_model(tmp_path / "f.onnx", input_type="float"))
    assert clf.input_dtype == np.float32
    assert clf.predict(solid("blue")).label == "blue"


def test_wrong_number_of_labels(tmp_path):
    path = make_colour_model(tmp_path / "bare.onnx", metadata=False)
    with pytest.raises(EdgeclfError, match="3 outputs but 2 class names"):
        Classifier(path, labels=["a", "b"], size=(32, 32))


def test_not_an_onnx_file(tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"this is not a protobuf")
    with pytest.raises(EdgeclfError, match="not a loadable ONNX model") as e:
        Classifier(bad)
    assert "\n" not in str(e.value)


def test_model_input_not_an_image(tmp_path):
    with pytest.raises(EdgeclfError, match="not an NHWC RGB image tensor"):
        Classifier(make_vector_model(tmp_path / "vec.onnx"))


def test_missing_model_and_folder(tmp_path):
    with pytest.raises(EdgeclfError, match="does not exist"):
        Classifier(tmp_path / "nope.onnx")
    with pytest.raises(EdgeclfError, match="not a file"):
        Classifier(tmp_path)


def test_bad_threads(colour_model):
    with pytest.raises(EdgeclfError, match="--threads"):
        Classifier(colour_model, threads=0)


def test_workers_do_not_spin_by_default_and_predict_keeps_it_so(colour_model, monkeypatch):
    def spinning(clf: Classifier) -> str:
        try:
            return clf.session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")
        except RuntimeError:  # not set: onnxruntime's default, which spins
            return "default"

    # Off unless asked: spinning workers take the cores capture/decoding need (ort_session.md).
    assert spinning(Classifier(colour_model, threads=2)) == "0"
    assert spinning(Classifier(colour_model, threads=2, spin=False)) == "0"
    assert spinning(Classifier(colour_model, threads=2, spin=True)) in ("default", "1")

    # `edgeclf predict` runs a reader thread beside inference, so its workers must not busy-wait.
    import edgeclf.predict.loop as predict_mod
    import edgeclf.predict.startup as startup_mod

    made: list[Classifier] = []
    monkeypatch.setattr(startup_mod, "Classifier", lambda *a, **k: made.append(Classifier(*a, **k)) or made[-1])
    img = colour_model.parent / "red.png"
    cv2.imwrite(str(img), solid("red"))
    predict_mod.run_predict(predict_mod.PredictOptions(colour_model, str(img), quiet=True))
    # The default adapts its threads (edgeclf.model.adaptive): its workers may spin inside a run, never
    # between runs, when the reader thread decodes the next frame.
    sessions = getattr(made[0].session, "sessions", [made[0].session])
    for sess in sessions:
        opts = sess.get_session_options()
        if opts.intra_op_num_threads > 1 and opts.get_session_config_entry("session.intra_op.allow_spinning") != "0":
            assert opts.get_session_config_entry("session.force_spinning_stop") == "1"


def test_preprocess_follows_the_resize_rule_the_model_was_trained_with(tmp_path):
    """A model exported before the halving resize still gets INTER_AREA's pixels; the rule comes
    from its metadata, and a model without one (or with another tool's) gets this version's."""
    import json

    from onnx_fixtures import edgeclf_metadata

    from edgeclf.image import RESIZE, RESIZE_AREA
    from edgeclf.model import metadata as md

    frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    old_meta = edgeclf_metadata(COLOURS, (32, 32))
    assert json.loads(old_meta[md.PREPROCESSING])["resize"] == RESIZE
    old_meta[md.PREPROCESSING] = json.dumps({"resize": RESIZE_AREA, "rescale": "inside the model"})
    old = Classifier(make_colour_model(tmp_path / "old.onnx", metadata=old_meta))
    new = Classifier(make_colour_model(tmp_path / "new.onnx"))
    bare = Classifier(make_colour_model(tmp_path / "bare.onnx", metadata=False), labels=list(COLOURS), size=(32, 32))
    assert (old.resize, new.resize, bare.resize) == (RESIZE_AREA, RESIZE, RESIZE)
    area = cv2.cvtColor(cv2.resize(frame, (32, 32), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
    assert np.array_equal(old.preprocess(frame), area)
    assert not np.array_equal(new.preprocess(frame), area)


def test_eval_reads_photos_by_the_models_resize_rule(tmp_path, monkeypatch):
    """``edgeclf eval`` of a model trained with INTER_AREA reads the folder by that rule (and the
    unknown photos too), not by this version's."""
    import json

    from onnx_fixtures import edgeclf_metadata

    import edgeclf.data.labelled as labelled
    from edgeclf.evaluate import evaluate
    from edgeclf.image import RESIZE, RESIZE_AREA
    from edgeclf.model import metadata as md

    for colour in COLOURS:
        (tmp_path / "data" / colour).mkdir(parents=True)
        for i in range(2):
            cv2.imwrite(str(tmp_path / "data" / colour / f"{i}.png"), solid(colour, 96, 128))
    (tmp_path / "none").mkdir()
    cv2.imwrite(str(tmp_path / "none" / "grey.png"), np.full((96, 128, 3), 128, np.uint8))
    meta = edgeclf_metadata(COLOURS, (32, 32))
    meta[md.PREPROCESSING] = json.dumps({"resize": RESIZE_AREA})
    models = {RESIZE_AREA: make_colour_model(tmp_path / "old.onnx", metadata=meta, unknown=0.5),
              RESIZE: make_colour_model(tmp_path / "new.onnx", unknown=0.5)}
    real = labelled.resize_rgb
    for rule, model in models.items():
        seen = []
        monkeypatch.setattr(labelled, "resize_rgb", lambda image, size, resize=RESIZE: seen.append(resize) or real(image, size, resize))
        report = evaluate(model, tmp_path / "data", quiet=True, unknown_dir=tmp_path / "none")
        assert report["accuracy"] == 1.0 and len(seen) == 2 * len(COLOURS) + 1 and set(seen) == {rule}
