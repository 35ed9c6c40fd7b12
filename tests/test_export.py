"""edgeclf export: real Keras models, real tf2onnx conversion, real onnxruntime sessions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import TRAIN_EXTRA, run_cli

pytestmark = pytest.mark.tf
pytest.importorskip("tensorflow", reason=TRAIN_EXTRA)
pytest.importorskip("tf2onnx", reason=TRAIN_EXTRA)

from edgeclf.train.tf_quiet import import_tensorflow_quietly  # noqa: E402

import_tensorflow_quietly()

import onnx  # noqa: E402

from edgeclf.errors import EdgeclfError  # noqa: E402
from edgeclf.export import data  # noqa: E402
from edgeclf.export.api import ExportCheckError, export_model  # noqa: E402
from edgeclf.image import RESIZE  # noqa: E402
from edgeclf.model import metadata as md  # noqa: E402
from edgeclf.model.classifier import Classifier  # noqa: E402


def leftovers(folder: Path) -> list[str]:
    """Temporary files an atomic write would leave if it were not atomic."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) if folder.exists() else []


def make_run(arch: str, size: int, data_dir: Path, out: Path, epochs: int = 1, steps: int | None = 2) -> Path:
    """A run folder by hand, per the run.json contract: ``arch`` fitted on every image of
    ``data_dir``. The "val" split lists every 4th image, which the model was also fitted on: the
    tests want a model that is right on its validation images so that an int8 accuracy drop shows."""
    import keras

    from edgeclf.data.labelled import load_labelled
    from edgeclf.image import COLOR_ORDER, RESIZE
    from edgeclf.train.models import ARCHITECTURES

    data = load_labelled(data_dir, (size, size))
    keras.utils.set_random_seed(0)
    # The pretrained default is exported with its real ImageNet weights (they install with the
    # train extra); mobilenet_v2's would need a download.
    model = ARCHITECTURES[arch].build(len(data.class_names), size, weights="imagenet" if arch == "efficientnet_lite0" else None)
    if epochs:
        model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy")
        model.fit(data.x.astype(np.float32), data.y, batch_size=32, steps_per_epoch=steps, epochs=epochs, verbose=0)
    out.mkdir(parents=True)
    model.save(out / "model.keras")
    val = [str(p) for p in data.paths[::4]]
    run = {
        "class_names": data.class_names, "input_size": [size, size], "color_order": COLOR_ORDER,
        "preprocessing": {"resize": RESIZE, "rescale": "inside the model"}, "architecture": arch,
        "data_dir": str(data_dir.resolve()), "val_dir": None, "val_split": 0.25,
        "splits": {"train": [str(p) for p in data.paths if str(p) not in val], "val": val},
        "best": {"epoch": epochs, "val_accuracy": 0.9, "val_loss": 0.3},
    }
    (out / "run.json").write_text(json.dumps(run))
    return out


@pytest.fixture(scope="module")
def seed_run(shapes_dir, tmp_path_factory) -> Path:
    """The small 'seed' CNN at 32x32, fitted until it is mostly right on the generated shapes."""
    return make_run("seed", 32, shapes_dir, tmp_path_factory.mktemp("seed") / "run", epochs=25, steps=None)


def test_cli_export_int8_fp16(seed_run, tmp_path):
    out = tmp_path / "export"
    r = run_cli("export", seed_run, "--out", out, "--int8", "--fp16", "--calib-size", 40, "--max-drop", 0.1, "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)  # stdout holds the JSON object only
    assert report == json.loads((out / "export.json").read_text())
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "model.fp16.onnx", "model.int8.onnx", "model.onnx"]
    assert report["fp16"]["top1_agreement"] == 1.0

    p = report["parity"]
    assert p["n"] >= 100 and p["images"] == "real"
    assert p["top1_agreement"] == 1.0 and p["max_abs_diff"] <= 1e-4

    q = report["int8"]
    assert q["n_calib"] == 40 and q["n_eval"] == len(json.loads((seed_run / "run.json").read_text())["splits"]["val"])
    assert q["method"] in q["methods"] and set(q["methods"]) == {"minmax", "entropy", "percentile"}
    assert q["accuracy_int8"] == max(m["accuracy"] for m in q["methods"].values())
    assert q["drop"] == pytest.approx(q["accuracy_fp32"] - q["accuracy_int8"])
    assert q["accepted"] and q["drop"] <= 0.1 and q["max_drop"] == 0.1
    assert 0 < q["size_ratio"] < 0.5  # int8 weights: about a quarter of the fp32 file
    assert q["latency_ratio"] == pytest.approx(q["latency_ms"]["int8"] / q["latency_ms"]["fp32"])
    sizes = {k: (out / v).stat().st_size for k, v in report["files"].items() if k != "report"}
    assert sizes == report["sizes_bytes"]


def test_stale_files_of_another_model_are_removed(seed_run, tmp_path):
    out = tmp_path / "export"
    export_model(seed_run, out, fp16=True, show_progress=False)
    (out / "model.int8.onnx").write_bytes(b"left over from another model")
    # An export is all or nothing: the new one replaces every model file of the old (--force), so
    # no file of another export is left to be mixed with it; a file of the user's stays.
    (out / "notes.txt").write_text("mine")
    export_model(seed_run, out, show_progress=False, force=True)
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "model.onnx", "notes.txt"]


def test_metadata_and_runtime(seed_run, tmp_path, shapes_dir):
    """The .onnx files carry everything the edge runtime needs; the runtime classifies with them."""
    out = tmp_path / "export"
    export_model(seed_run, out, int8=True, calib_size=30, calib_method="minmax", max_drop=1.0, show_progress=False)
    run = json.loads((seed_run / "run.json").read_text())
    import hashlib

    sha = hashlib.sha256((seed_run / "model.keras").read_bytes()).hexdigest()
    for name, precision in (("model.onnx", "fp32"), ("model.int8.onnx", "int8")):
        model = onnx.load(str(out / name))
        meta = {p.key: p.value for p in model.metadata_props}
        assert json.loads(meta[md.CLASS_NAMES]) == run["class_names"] == ["circle", "square", "triangle"]
        assert (meta[md.INPUT_HEIGHT], meta[md.INPUT_WIDTH]) == ("32", "32")
        assert meta[md.COLOR_ORDER] == "RGB"
        assert json.loads(meta[md.PREPROCESSING])["rescale"] == "inside the model"
        assert json.loads(meta[md.PREPROCESSING])["resize"] == run["preprocessing"]["resize"] == RESIZE
        assert meta[md.ARCHITECTURE] == "seed"
        assert meta[md.SOURCE_SHA256] == sha
        assert meta[md.PRECISION] == precision
        assert meta[md.EDGECLF_VERSION]
        assert 0 < float(meta[md.VAL_ACCURACY]) <= 1
        (inp,), outs = model.graph.input, {o.name: o for o in model.graph.output}
        assert inp.name == "image" and inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
        dims = [d.dim_value or d.dim_param for d in inp.type.tensor_type.shape.dim]
        assert isinstance(dims[0], str) and dims[1:] == [32, 32, 3]  # batch dynamic, NHWC
        assert sorted(outs) == sorted([md.OUTPUT_NAME, md.EMBEDDING_NAME, md.UNKNOWN_NAME])
        assert all(o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for o in outs.values())
        assert [d.dim_value for d in outs[md.EMBEDDING_NAME].type.tensor_type.shape.dim][1] == 128  # seed's Dense(128)

        clf = Classifier(out / name)
        assert clf.class_names == run["class_names"] and clf.size == (32, 32)
        from edgeclf.data.labelled import load_labelled

        data = load_labelled(shapes_dir, clf.size, clf.class_names)
        probs = clf.predict_arrays(data.x[:7])
        assert probs.shape == (7, 3) and np.allclose(probs.sum(1), 1, atol=1e-5)
    int8_meta = {p.key: p.value for p in onnx.load(str(out / "model.int8.onnx")).metadata_props}
    report = json.loads((out / "export.json").read_text())
    assert float(int8_meta[md.VAL_ACCURACY]) == pytest.approx(report["int8"]["accuracy_int8"], abs=1e-6)


def test_a_run_trained_with_the_older_resize_keeps_it(seed_run, tmp_path, monkeypatch):
    """A run whose run.json records INTER_AREA (trained before the halving resize): export reads
    its photos by that rule and writes it into the model, so the runtime feeds it those pixels."""
    import shutil

    import edgeclf.data.labelled as labelled
    from edgeclf.image import RESIZE, RESIZE_AREA

    run = tmp_path / "old-run"
    shutil.copytree(seed_run, run, ignore=shutil.ignore_patterns("export"))
    record = json.loads((run / "run.json").read_text())
    assert record["preprocessing"]["resize"] == RESIZE
    record["preprocessing"]["resize"] = RESIZE_AREA
    (run / "run.json").write_text(json.dumps(record))
    rules = []
    real = labelled.resize_rgb
    monkeypatch.setattr(labelled, "resize_rgb", lambda image, size, resize=RESIZE: rules.append(resize) or real(image, size, resize))
    export_model(run, tmp_path / "export", show_progress=False)
    assert rules and set(rules) == {RESIZE_AREA}  # the parity photos, read by the run's rule
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "export" / "model.onnx")).metadata_props}
    assert json.loads(meta[md.PREPROCESSING])["resize"] == RESIZE_AREA
    assert Classifier(tmp_path / "export" / "model.onnx").resize == RESIZE_AREA


def test_int8_graph_is_quantized(seed_run, tmp_path):
    """QDQ int8 with per-channel weights: the convolutions run as int8 kernels, softmax stays float."""
    out = tmp_path / "export"
    export_model(seed_run, out, int8=True, calib_size=20, calib_method="minmax", max_drop=1.0, show_progress=False)
    model = onnx.load(str(out / "model.int8.onnx"))
    ops = [n.op_type for n in model.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    weights = {i.name: i for i in model.graph.initializer}
    int8_weights = [w for w in weights.values() if w.data_type == onnx.TensorProto.INT8]
    assert len(int8_weights) >= 4  # 2 convolutions + 2 dense layers
    conv_scales = [n.input[1] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in weights
                   and weights[n.input[0]].data_type == onnx.TensorProto.INT8 and len(weights[n.input[0]].dims) == 4]
    assert conv_scales and all(len(weights[s].dims) == 1 and weights[s].dims[0] > 1 for s in conv_scales)  # per channel
    # the uint8 pixels are the quantized input itself (scale 1, zero point 0): no Cast/Quantize pass
    assert [n.op_type for n in model.graph.node if "image" in n.input] == ["DequantizeLinear"]
    softmax = next(n for n in model.graph.node if n.op_type == "Softmax")
    assert all(n.op_type != "QuantizeLinear" or softmax.output[0] not in n.input for n in model.graph.node)


def test_guard_trips_and_removes_stale_int8(seed_run, tmp_path):
    """A drop above --max-drop: exit 1 with the figures, no file named like a good int8 model."""
    out = tmp_path / "export"
    out.mkdir()
    (out / "model.int8.onnx").write_bytes(b"an int8 model from an earlier export")
    r = run_cli("export", seed_run, "--out", out, "--int8", "--calib-size", 20, "--calib-method", "minmax", "--max-drop", "-1",
                "--force")
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("edgeclf: error: int8 model rejected: accuracy ") and "--max-drop -1" in lines[-1]
    assert "Traceback" not in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "model.onnx"]
    report = json.loads((out / "export.json").read_text())
    assert report["int8"]["accepted"] is False and "int8" not in report["files"]
    # 7-bit weights failed the guard, so full 8-bit weights were tried too (made for VNNI x86 and ARM).
    assert set(report["int8"]["methods"]) == {"minmax", "minmax, 8-bit weights"}


def test_seven_bit_weights_when_they_pass_the_guard(seed_run, tmp_path):
    """7-bit weights (the same results on every CPU family) are kept whenever they pass the guard;
    8-bit weights are not even tried then, and the model says it was made for every family."""
    out = tmp_path / "export"
    report = export_model(seed_run, out, int8=True, calib_size=20, calib_method="minmax", max_drop=1.0, show_progress=False)
    q = report["int8"]
    assert set(q["methods"]) == {"minmax"} and q["reduce_range"] is True
    assert q["made_for"]["cpus"] == ["x86-vnni", "x86-avx2", "arm64-dotprod", "arm64-neon"]
    meta = {p.key: p.value for p in onnx.load(str(out / "model.int8.onnx")).metadata_props}
    assert json.loads(meta[md.INT8_CPUS]) == q["made_for"]["cpus"]


def test_guard_trips_on_destroyed_calibration(seed_run, tmp_path):
    """Calibrating on blank frames clips every real activation: the guard must catch it."""
    import cv2

    blank = tmp_path / "blank"
    blank.mkdir()
    for i in range(8):
        cv2.imwrite(str(blank / f"black_{i}.png"), np.zeros((32, 32, 3), np.uint8))
    out = tmp_path / "export"
    with pytest.raises(ExportCheckError, match="int8 model rejected") as e:
        export_model(seed_run, out, int8=True, calib=blank, calib_method="minmax", show_progress=False)
    assert e.value.exit_code == 1
    assert not (out / "model.int8.onnx").exists() and (out / "model.onnx").exists() and not leftovers(out)
    r = json.loads((out / "export.json").read_text())["int8"]
    assert r["drop"] > 0.01 and r["n_calib"] == 8 and r["calib_source"] == str(blank.resolve())


def test_parity_failure_writes_nothing(seed_run, tmp_path, monkeypatch):
    """An ONNX graph that drifts from Keras fails the export with the figures; no model.onnx."""
    from onnx import numpy_helper

    import edgeclf.export.api as api

    real = api.keras_to_onnx

    def drifting(*a, **k):
        proto = real(*a, **k)
        w = max(proto.graph.initializer, key=lambda t: np.prod(t.dims))
        w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w) * 1.01, w.name))
        return proto

    monkeypatch.setattr(api, "keras_to_onnx", drifting)
    out = tmp_path / "export"
    with pytest.raises(ExportCheckError, match=r"disagrees with Keras: top-1 agreement .* max \|dp\|"):
        export_model(seed_run, out, show_progress=False)
    assert not out.exists() or not list(out.iterdir())


def test_interrupted_write_leaves_no_onnx(seed_run, tmp_path, monkeypatch):
    """Killed half-way through writing: neither a half-written model.onnx nor a temp file stays."""
    real_write = Path.write_bytes

    def half_then_interrupt(self, data):
        real_write(self, data[: len(data) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_bytes", half_then_interrupt)
    out = tmp_path / "export"
    with pytest.raises(KeyboardInterrupt):
        export_model(seed_run, out, show_progress=False)
    assert not out.exists() or not list(out.iterdir())


def test_interrupted_quantization_leaves_no_int8(seed_run, tmp_path, monkeypatch):
    import edgeclf.export.quantize as quantize

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(quantize, "quantize", interrupt)
    out = tmp_path / "export"
    with pytest.raises(KeyboardInterrupt):
        export_model(seed_run, out, int8=True, calib_size=10, show_progress=False)
    assert not out.exists()  # all or nothing: an interrupted export leaves no folder behind


# ------------------------------------------------------------------------------ every architecture
# mobilenet_v2 is exported as initialised: compiling its training step alone takes about a minute.
@pytest.mark.parametrize("arch,size,int8,epochs", [("efficientnet_lite0", 32, True, 1), ("edgenet", 32, True, 1),
                                                        ("mobilenet_v2", 32, True, 0), ("seed", 32, False, 1)])
def test_every_architecture_exports(arch, size, int8, epochs, shapes_dir, tmp_path):
    run = make_run(arch, size, shapes_dir, tmp_path / "run", epochs=epochs)
    report = export_model(run, tmp_path / "out", int8=int8, calib_size=16, calib_method="minmax", max_drop=1.0, show_progress=False)
    assert report["architecture"] == arch and report["input_size"] == [size, size]
    assert report["parity"]["n"] >= 100 and report["parity"]["top1_agreement"] == 1.0
    assert report["parity"]["max_abs_diff"] <= 1e-4
    clf = Classifier(tmp_path / "out" / "model.onnx")
    assert clf.size == (size, size) and len(clf.class_names) == 3
    probs = clf.predict_arrays(data.generated_images(8, (size, size)))
    assert probs.std(axis=0).max() > 0  # the outputs depend on the image: the comparison meant something
    if int8:
        assert (tmp_path / "out" / "model.int8.onnx").is_file() and report["int8"]["n_eval"] == 30


def test_bare_keras_file_with_labelled_calib(shapes_dir, tmp_path):
    """A .keras file with no run.json: class names and the held-out judging set come from --calib."""
    run = make_run("seed", 32, shapes_dir, tmp_path / "run")
    bare = tmp_path / "elsewhere" / "clf.keras"
    bare.parent.mkdir()
    bare.write_bytes((run / "model.keras").read_bytes())
    report = export_model(bare, None, int8=True, calib=shapes_dir, calib_size=30, calib_method="minmax", max_drop=1.0, show_progress=False)
    assert report["class_names"] == ["circle", "square", "triangle"]
    assert report["int8"]["n_eval"] == 36 and report["int8"]["n_calib"] == 30  # 30% of 120 held out
    assert (bare.parent / "export" / "model.int8.onnx").is_file()


# -------------------------------------------------------------------------------------- bad input
def _bad_cases(tmp: Path, run: Path) -> dict:
    not_run = tmp / "not_a_run"
    not_run.mkdir()
    (not_run / "notes.txt").write_text("hello")
    corrupt = tmp / "corrupt_run"
    corrupt.mkdir()
    (corrupt / "model.keras").write_bytes(b"PK\x03\x04 this is not a keras zip")
    (corrupt / "run.json").write_text((run / "run.json").read_text())
    unreadable = tmp / "unreadable_calib"
    unreadable.mkdir()
    (unreadable / "a.jpg").write_bytes(b"")
    (unreadable / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    blocker = tmp / "a_file"
    blocker.write_text("x")
    return {
        "missing source": ([tmp / "nope"], "does not exist"),
        "folder without a model": ([not_run], "not a run folder"),
        "text file": ([not_run / "notes.txt"], "not a run folder or a .keras model"),
        "corrupt keras": ([corrupt], "not a loadable Keras model"),
        "calib without readable image": ([run, "--int8", "--calib", unreadable], "no readable calibration image"),
        "calib missing": ([run, "--int8", "--calib", tmp / "nothing"], "calibration folder does not exist"),
        "unwritable out": ([run, "--out", blocker / "sub"], "cannot create the output folder"),
        "opset": ([run, "--opset", "7"], "--opset 7"),
    }


@pytest.mark.parametrize("case", ["missing source", "folder without a model", "text file", "corrupt keras",
                                  "calib without readable image", "calib missing", "unwritable out", "opset"])
def test_bad_input_cli(case, seed_run, tmp_path):
    args, message = _bad_cases(tmp_path, seed_run)[case]
    out = tmp_path / "out"
    extra = [] if "--out" in args else ["--out", out]
    r = run_cli("export", *args, *extra)
    assert r.returncode == 2, r.stderr
    err = r.stderr.strip().splitlines()
    assert "Traceback" not in r.stderr
    assert err[-1].startswith("edgeclf: error: ") and message in err[-1]
    assert not out.exists()  # nothing written, not even the folder
    assert not (seed_run / "export").exists()


def test_unconvertible_layer(tmp_path):
    """A layer made of TensorFlow ops with no ONNX equivalent: one-line error naming the file and op."""
    import keras
    import tensorflow as tf

    @keras.saving.register_keras_serializable("edgeclf_test")
    class Lgamma(keras.layers.Layer):
        def call(self, x):
            return tf.math.lgamma(x + 1.0)

    inputs = keras.Input((16, 16, 3))
    x = Lgamma()(keras.layers.Rescaling(1 / 255)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(x)))
    path = tmp_path / "odd.keras"
    model.save(path)
    with pytest.raises(EdgeclfError, match=r"odd\.keras: layers use TensorFlow ops tf2onnx cannot convert to ONNX: Lgamma"):
        export_model(path, tmp_path / "out", show_progress=False)
    assert not (tmp_path / "out").exists()


def test_int8_guard_judges_validation_and_training_photos(seed_run, tmp_path):
    """The guard rests on the validation split and the run's training photos (the calibration
    photos among them only to fill, and said), and export.json, the table and a rejection say so."""
    out = tmp_path / "export"
    r = run_cli("export", seed_run, "--out", out, "--int8", "--calib-size", 20, "--calib-method", "minmax")
    assert r.returncode == 0, r.stderr
    q = json.loads((out / "export.json").read_text())["int8"]
    splits = json.loads((seed_run / "run.json").read_text())["splits"]
    n_val, n_train = len(splits["val"]), len(splits["train"])
    g = q["guard"]
    assert (g["n"], g["n_validation"], g["n_training"], g["n_training_calibrated"]) == (n_val + n_train, n_val, n_train, 20)
    assert q["n_judged"] == g["n"] and q["n_eval"] == n_val  # n_eval: the validation split, as before
    assert q["judged_on"] == f"{n_val + n_train} photos ({n_val} validation + {n_train} training, 20 of them used for calibration)"
    assert q["accepted"] is g["accepted"] is True and q["verdict"] == "accepted"
    assert g["drop_ci95"][0] <= g["drop"] <= g["drop_ci95"][1] and g["top1_agreement_ci95"][1] >= g["limits"]["agreement_floor"]
    assert q["methods"]["minmax"]["guard"]["n"] == g["n"]
    table = " ".join(r.stdout.split())  # piped: the table's cell may wrap
    assert f"int8 vs fp32 on {n_val + n_train} photos" in table and "accepted" in table

    r = run_cli("export", seed_run, "--out", out, "--int8", "--calib-size", 20, "--calib-method", "minmax", "--max-drop", "-1",
                "--force")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert f"on {n_val + n_train} photos ({n_val} validation + {n_train} training" in line, line
    assert "rejected as drop credibly above --max-drop -1.0" in line and "95% CI" in line, line


def test_unknown_score_is_calibrated_per_precision(seed_run, tmp_path):
    """fp32 and int8 both output the k-NN distance to the training photos' embeddings, equal to
    the numpy definition, with a threshold that rejects about the target share of validation photos."""
    from onnx import numpy_helper

    from edgeclf.export.unknown import Bank
    from edgeclf.image import read_image

    out = tmp_path / "export"
    report = export_model(seed_run, out, int8=True, calib_size=40, max_drop=0.1, unknown_reject=0.05, show_progress=False)
    u = report["unknown"]
    assert u["method"] == "knn-cosine" and u["target_reject"] == 0.05 and 1 <= u["k"] <= u["bank"]
    run = json.loads((seed_run / "run.json").read_text())
    assert u["bank"] == len(run["splits"]["train"])  # every training photo (fewer than MAX_BANK)
    val = [Path(p) for p in run["splits"]["val"]]
    for precision, name in (("fp32", "model.onnx"), ("int8", "model.int8.onnx")):
        proto = onnx.load(out / name)
        assert [o.name for o in proto.graph.output][-1] == md.UNKNOWN_NAME
        meta = json.loads({p.key: p.value for p in proto.metadata_props}[md.UNKNOWN])
        assert meta["threshold"] == u[precision]["threshold"] and meta["calibrated_on"] == len(val)
        assert u[precision]["rejected_in_class"] <= 0.05 + 1 / len(val)
        clf = Classifier(out / name, threads=1)
        x = np.stack([clf.preprocess(read_image(p)) for p in val])
        probs, scores = clf.classify_arrays(x)
        labels = [p.label for p in clf.predictions(probs, scores)]
        assert labels.count("unknown") == int((scores > meta["threshold"]).sum())
        assert 0 < labels.count("unknown") <= 0.05 * len(val) + 1
        # the graph computes the numpy definition from the bank it carries
        tensors = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
        bank, labels = tensors[md.UNKNOWN_PREFIX + "bank"], tensors[md.UNKNOWN_PREFIX + "bank_labels"]
        assert bank.dtype == np.float16 and labels.shape == (len(bank),) and set(labels) <= {0, 1, 2}
        emb = clf.session.run([md.EMBEDDING_NAME], {clf.input_name: x})[0]
        # (the graph multiplies in int8: within a few thousandths of the float cosine)
        assert np.allclose(Bank(bank.astype(np.float32), labels, meta["k"]).scores(emb), scores, atol=3e-3)
        # the head is the Keras layer's float weights, and gives the probabilities
        w, b = tensors[md.HEAD_PREFIX + "W"], tensors[md.HEAD_PREFIX + "b"]
        assert w.dtype == np.float32 and w.shape == (emb.shape[1], 3) and b.shape == (3,)
        z = emb @ w + b
        assert np.allclose(np.exp(z) / np.exp(z).sum(1, keepdims=True), probs, atol=1e-5)


def test_add_class_on_a_real_export(seed_run, shapes_dir, tmp_path):
    """add-class changes both models of a real export (the float head survives quantization) and
    leaves the old classes' answers alone where the new class is not nearer."""
    from edgeclf.data.labelled import load_labelled
    from edgeclf.model.classes import add_class, read_parts

    out = tmp_path / "export"
    export_model(seed_run, out, int8=True, calib_size=40, max_drop=0.1, show_progress=False)
    rng = np.random.default_rng(0)
    stripes = [np.kron((rng.random((8, 8, 1)) > 0.5) * 255, np.ones((8, 8, 3))).astype(np.uint8) for _ in range(16)]
    report = add_class(out, "noise", stripes[:10], tmp_path / "big")
    assert sorted(report["models"]) == ["model.int8.onnx", "model.onnx"]
    data = load_labelled(shapes_dir, (32, 32), ["circle", "square", "triangle"])
    for name in ("model.onnx", "model.int8.onnx"):
        parts = read_parts(tmp_path / "big" / name)
        assert parts.names[-1] == "noise" and parts.w.shape[1] == 4
        old, new = Classifier(out / name, threads=1), Classifier(tmp_path / "big" / name, threads=1, unknown=False)
        assert [new.predict(s).label for s in stripes[10:]].count("noise") >= 4  # unseen ones, mostly
        before = old.predict_arrays(data.x).argmax(1)
        after = new.predict_arrays(data.x).argmax(1)
        assert (after == before).mean() >= 0.95


def test_eval_unknown_judges_keras_with_its_exports_score(seed_run, shapes_dir, tmp_path):
    """Keras, fp32 and int8 judged alike: the Keras model with the bank and threshold of its export."""
    import shutil

    import cv2

    run = tmp_path / "run"
    shutil.copytree(seed_run, run)
    export_model(run, int8=True, calib_size=40, max_drop=0.1, show_progress=False)
    odd = tmp_path / "odd"
    odd.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        cv2.imwrite(str(odd / f"{i}.png"), rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    figures = {}
    for m in (run, run / "export" / "model.onnx", run / "export" / "model.int8.onnx"):
        r = run_cli("eval", m, shapes_dir, "--unknown", odd, "--json", "--plot", tmp_path / f"{m.name}.png")
        assert r.returncode == 0, r.stderr
        figures[m.name] = json.loads(r.stdout)["unknown"]
        assert (tmp_path / f"{m.name}.png").is_file()
    keras_u, fp32_u = figures["run"], figures["model.onnx"]
    assert keras_u["threshold"] == fp32_u["threshold"]
    n = keras_u["in_class_rejected"]["n"]
    assert abs(keras_u["in_class_rejected"]["count"] - fp32_u["in_class_rejected"]["count"]) <= max(2, n // 50)
    assert abs(keras_u["auroc"] - fp32_u["auroc"]) < 0.02
    bare = run_cli("eval", seed_run, shapes_dir, "--unknown", odd, "--plot", tmp_path / "x.png")
    assert bare.returncode != 0 and "export it first" in bare.stderr
