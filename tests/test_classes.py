"""add-class and remove-class on the device: a model's classes changed from a few photos, without
TensorFlow or the onnx package, into a new folder. Real onnxruntime sessions on a model with the
export's layout whose embedding is the mean colour (onnx_fixtures.make_head_model)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import error_line, run_cli
from onnx_fixtures import make_head_model, solid

from edgeclf.errors import EdgeclfError
from edgeclf.image import to_bgr8
from edgeclf.model import metadata as md, protoedit
from edgeclf.model.classes import add_class, read_parts, remove_class
from edgeclf.model.classifier import Classifier

YELLOW = (0, 220, 230)  # BGR


def yellow(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(np.full((40, 40, 3), YELLOW, np.int16) + rng.integers(-25, 25, (40, 40, 3)), 0, 255).astype(np.uint8)


@pytest.fixture()
def model(tmp_path) -> Path:
    return make_head_model(tmp_path / "orig" / "model.onnx")


def test_add_then_remove_a_class(model, tmp_path):
    before = model.read_bytes()
    clf = Classifier(model, threads=1)
    assert clf.predict(yellow(0)).label in ("red", "green")  # no yellow yet: a wrong class
    report = add_class(model, "yellow", [yellow(i) for i in range(5)], tmp_path / "big", source="test")
    assert model.read_bytes() == before  # the original is never changed
    big = Classifier(tmp_path / "big" / "model.onnx", threads=1)
    assert big.class_names == ["red", "green", "blue", "yellow"]
    assert [big.predict(yellow(100 + i)).label for i in range(10)] == ["yellow"] * 10  # unseen yellow photos
    for c in ("red", "green", "blue"):  # the old classes still right
        assert big.predict(solid(c)).label == c
    parts = read_parts(tmp_path / "big" / "model.onnx")
    # each new photo counts k (2 here) times in the bank; no threshold in this model's metadata, so no bonus
    assert parts.w.shape == (3, 4) and len(parts.bank) == 15 + 5 * 2 and list(parts.labels[-10:]) == [3] * 10
    assert parts.bias.shape == (25,) and not parts.bias.any()
    assert np.allclose(parts.w[:, :3], np.eye(3) * 10)  # trained columns held fixed
    record = json.loads((tmp_path / "big" / "export.json").read_text())
    assert record["class_changes"][-1]["added"] == "yellow" and record["class_names"][-1] == "yellow"
    assert report["photos"] == 5 and report["models"]["model.onnx"]["bank"] == 25
    # and back
    remove_class(tmp_path / "big" / "model.onnx", "yellow", tmp_path / "small")
    small = read_parts(tmp_path / "small" / "model.onnx")
    orig = read_parts(model)
    assert small.names == orig.names and np.array_equal(small.w, orig.w) and np.array_equal(small.bank, orig.bank)
    # a trained class can go too: labels above it move down
    remove_class(model, "red", tmp_path / "gb")
    gb = read_parts(tmp_path / "gb" / "model.onnx")
    assert gb.names == ["green", "blue"] and sorted(set(gb.labels)) == [0, 1] and len(gb.bank) == 10
    assert Classifier(tmp_path / "gb" / "model.onnx", threads=1).predict(solid("blue")).label == "blue"


def test_refusals(model, tmp_path):
    imgs = [yellow(0)]
    for args, why in [(("red", imgs, tmp_path / "a"), "already has a class 'red'"),
                      (("unknown", imgs, tmp_path / "b"), "choose another"),
                      (("new\u202e", imgs, tmp_path / "c"), "right-to-left"),
                      (("yellow", [], tmp_path / "d"), "no photo"),
                      (("yellow", imgs, model.parent), "not an empty folder")]:
        with pytest.raises(EdgeclfError, match=why):
            add_class(model, *args)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["orig"]  # nothing half-written
    with pytest.raises(EdgeclfError, match="keeps at least 2"):
        remove_class(_two_classes(model, tmp_path), "green", tmp_path / "x")
    from onnx_fixtures import make_colour_model

    plain = make_colour_model(tmp_path / "plain.onnx")
    with pytest.raises(EdgeclfError, match="export it again"):
        add_class(plain, "yellow", imgs, tmp_path / "y")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(model.read_bytes()[:-7] + b"\xff" * 7)
    with pytest.raises(EdgeclfError, match="broken.onnx"):
        add_class(broken, "yellow", imgs, tmp_path / "z")


def _two_classes(model: Path, tmp_path: Path) -> Path:
    remove_class(model, "red", tmp_path / "two")
    return tmp_path / "two" / "model.onnx"


def test_protoedit_round_trip(model):
    data = model.read_bytes()
    same = protoedit.rewrite(data, {}, {})
    assert protoedit.read_tensors(same, {"edgeclf_head/W"})["edgeclf_head/W"].shape == (3, 3)
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    changed = protoedit.rewrite(data, {"edgeclf_head/W": w}, {"note": "x", "class_names": '["a","b","c","d"]'})
    assert np.array_equal(protoedit.read_tensors(changed, {"edgeclf_head/W"})["edgeclf_head/W"], w)
    meta = protoedit.read_metadata(changed)
    assert meta["note"] == "x" and json.loads(meta["class_names"]) == ["a", "b", "c", "d"]
    with pytest.raises(protoedit.ProtoError, match="no initializer"):
        protoedit.rewrite(data, {"nope": w}, {})
    for bad in (b"\x3a\xff\xff\xff\xff\x0f", b"\x3a\x05ab", b"\x3b"):  # huge length, short field, wire type 3
        with pytest.raises(protoedit.ProtoError):
            list(protoedit.fields(bad))


def test_cli_from_a_folder_and_a_video(model, tmp_path):
    photos = tmp_path / "yellow"
    photos.mkdir()
    for i in range(6):
        cv2.imwrite(str(photos / f"{i}.png"), yellow(i))
    r = run_cli("add-class", model, "yellow", photos, "--out", tmp_path / "big", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["photos"] == 6
    video = tmp_path / "y.mp4"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (40, 40))
    for i in range(30):
        w.write(yellow(i))
    w.release()
    r = run_cli("add-class", model, "yellow", video, "--out", tmp_path / "vid", "--count", 8, "--every", 3)
    assert r.returncode == 0, r.stderr
    assert "from 8 photo(s)" in r.stdout
    p = run_cli("predict", tmp_path / "vid" / "model.onnx", photos, "--json")
    assert {json.loads(x)["label"] for x in p.stdout.splitlines()} == {"yellow"}
    r = run_cli("remove-class", tmp_path / "vid" / "model.onnx", "yellow", "--out", tmp_path / "back")
    assert r.returncode == 0 and "classes: red, green, blue" in r.stdout
    from onnx_fixtures import make_colour_model

    plain = make_colour_model(tmp_path / "plain.onnx", metadata=False)  # not edgeclf's: refused before any photo
    r = run_cli("add-class", plain, "yellow", photos, "--out", tmp_path / "p")
    assert r.returncode != 0 and "Traceback" not in r.stderr and "has no float head" in error_line(r)
    bad = run_cli("add-class", model, "yellow", tmp_path / "missing", "--out", tmp_path / "m")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and "missing" in error_line(bad)


@pytest.mark.parametrize("legacy", [False, True])
def test_photos_are_kept_as_the_model_reads_them(tmp_path, legacy):
    """add-class keeps each photo at the model's input size by the model's own resize rule (the
    halving one, or INTER_AREA for a model trained before it): the new class's embeddings come
    from exactly the pixels predict gives the model for the same photo."""
    from onnx_fixtures import COLOURS, edgeclf_metadata

    from edgeclf.image import RESIZE, RESIZE_AREA, read_image
    from edgeclf.learn import collect
    from edgeclf.model.classes import photo_keeper

    meta = edgeclf_metadata(COLOURS, (37, 41))
    if legacy:
        meta[md.PREPROCESSING] = json.dumps({"resize": RESIZE_AREA, "rescale": "inside the model"})
    model = make_head_model(tmp_path / "m" / "model.onnx", size=(37, 41), metadata=meta)
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(3)
    for i, shape in enumerate([(901, 1203, 3), (700, 500, 3), (20, 30, 3), (300, 300)]):  # big, tall, tiny, grey
        cv2.imwrite(str(photos / f"{i}.png"), rng.integers(0, 256, shape, dtype=np.uint8))
    kept = collect(str(photos), count=1, keep=photo_keeper(model))
    clf = Classifier(model, threads=1)
    assert clf.resize == (RESIZE_AREA if legacy else RESIZE)
    assert [k.shape for k in kept] == [(37, 41, 3)] * 4
    for k, f in zip(kept, sorted(photos.iterdir())):
        assert np.array_equal(clf.preprocess(k), clf.preprocess(to_bgr8(read_image(f))))


def test_hostile_files_and_small_banks(model, tmp_path):
    # a metadata key stored as a varint of 2^40, a dim of 2^63, a dims product past the raw bytes: no crash, no allocation
    key_varint = b"\x72\x07" + b"\x08\x80\x80\x80\x80\x80\x20"  # field 14 {field 1 (varint) 2^40}
    odd = protoedit.rewrite(model.read_bytes() + key_varint, {}, {"x": "y"})  # kept as it is, not read as bytes
    assert protoedit.read_metadata(odd)["x"] == "y" and key_varint in odd
    huge_dim = protoedit.encode(1, 0, 1 << 63) + protoedit.encode(2, 0, 1) + protoedit.encode(9, 2, b"\0" * 4)
    wrap = b"".join(protoedit.encode(1, 0, 1 << 32) for _ in range(2)) + protoedit.encode(2, 0, 1) + protoedit.encode(9, 2, b"")
    for t in (huge_dim, wrap):
        with pytest.raises(protoedit.ProtoError):
            protoedit.decode_tensor(t)
    with pytest.raises(protoedit.ProtoError, match="64 bits"):
        list(protoedit.fields(b"\x08" + b"\xff" * 9 + b"\x7f"))
    # labels stored as floats: refused in one line, not a traceback
    bad = tmp_path / "bad" / "model.onnx"
    bad.parent.mkdir()
    bad.write_bytes(protoedit.rewrite(model.read_bytes(), {"edgeclf_unknown/bank_labels": np.zeros(15, np.float32)}, {}))
    with pytest.raises(EdgeclfError, match="not stored as edgeclf stores them"):
        add_class(bad, "yellow", [yellow(0)], tmp_path / "o")
    # a bank that would fall below the k the score reads
    deep = tmp_path / "deep" / "model.onnx"
    deep.parent.mkdir()
    deep.write_bytes(protoedit.rewrite(model.read_bytes(), {"edgeclf_unknown/k": np.array([11], np.int64)}, {}))
    with pytest.raises(EdgeclfError, match="fewer than the 11"):
        remove_class(deep, "red", tmp_path / "p")
    # one photo of a new class counts k times in the bank, so it is its own nearest neighbours
    add_class(model, "yellow", [yellow(0)], tmp_path / "one")
    one = read_parts(tmp_path / "one" / "model.onnx")
    assert list(one.labels[-2:]) == [3, 3] and len(one.bank) == 17


def test_reach_lets_a_few_photos_cover_their_class():
    from edgeclf.model.classes import reach

    rng = np.random.default_rng(0)
    centre = rng.random(64)
    shots = centre + rng.normal(0, 0.3, (6, 64))
    unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)  # noqa: E731
    loo = [1 - max(unit(shots[i]) @ unit(shots[j]) for j in range(6) if j != i) for i in range(6)]
    assert reach(shots, np.zeros((0, 64)), np.zeros(0, np.int64), 0.01) == pytest.approx(max(loo) - 0.01)
    assert reach(shots, np.zeros((0, 64)), np.zeros(0, np.int64), 1.0) == 0.0  # never below the trained classes'
    assert reach(shots, np.zeros((0, 64)), np.zeros(0, np.int64), None) == 0.0
    # one photo: the typical distance between two photos of a trained class stands in
    bank = np.concatenate([centre + rng.normal(0, 0.3, (50, 64)), -centre + rng.normal(0, 0.3, (50, 64))])
    labels = np.repeat([0, 1], 50)
    one = reach(shots[:1], bank, labels, 0.0)
    assert 0 < one < 1


def test_eval_plot_never_replaces_an_input(tmp_path):
    from onnx_fixtures import make_colour_model

    m = make_colour_model(tmp_path / "m.onnx", unknown=0.5)
    data = tmp_path / "data"
    for c in ("red", "green", "blue"):
        (data / c).mkdir(parents=True)
        cv2.imwrite(str(data / c / "a.png"), solid(c))
    before = m.read_bytes()
    r = run_cli("eval", m, data, "--unknown", data / "red", "--plot", m)
    assert r.returncode != 0 and "--plot" in error_line(r) and m.read_bytes() == before


def test_a_folder_with_a_litert_model_drops_it_and_says_so(model, tmp_path, capsys):
    """The LiteRT model's head is compiled into its graph: add-class cannot change it, so the new
    folder has none, its export.json names none, and the user is told how to get one."""
    folder = model.parent
    (folder / "model.int8.tflite").write_bytes(b"TFL3 not changed by add-class")
    (folder / "export.json").write_text(json.dumps({
        "class_names": ["red", "green", "blue"], "tflite_int8": {"accuracy_int8": 1.0},
        "files": {"fp32": "model.onnx", "tflite_int8": "model.int8.tflite"},
        "sha256": {"fp32": hashlib.sha256(model.read_bytes()).hexdigest(), "tflite_int8": "0" * 64},
        "sizes_bytes": {"tflite_int8": 29}}))
    add_class(folder, "yellow", [yellow(i) for i in range(5)], tmp_path / "big")
    assert "model.int8.tflite is left out" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "big").iterdir()) == ["export.json", "model.onnx"]
    record = json.loads((tmp_path / "big" / "export.json").read_text())
    assert "tflite_int8" not in record and "tflite_int8" not in record["files"] and "tflite_int8" not in record["sha256"]
    assert record["class_names"] == ["red", "green", "blue", "yellow"]
