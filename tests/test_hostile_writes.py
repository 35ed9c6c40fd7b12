"""Issue 26, items 3, 4, 5 and 17: writes interrupted or made behind edgeclf's back.

An export is all or nothing and its files are checked against export.json when a model is opened;
a damaged or rewritten image-cache entry is rebuilt (or its rows decoded again), never used; an
image rewritten with the same size and modification time is decoded again; ``export`` into a
folder holding an earlier export needs ``--force``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import TRAIN_EXTRA, run_cli

from edgeclf.data.synthetic import make_shapes_dataset
from edgeclf.image import list_images, read_image, resize_rgb
from edgeclf.train.imagecache import cached_images


# ------------------------------------------------------------------------------ the image cache
@pytest.fixture()
def data(tmp_path) -> Path:
    return make_shapes_dataset(tmp_path / "data", per_class=6, size=40, seed=3)


def _decoded(paths: list[Path], size: tuple[int, int]) -> np.ndarray:
    return np.stack([resize_rgb(read_image(p), size) for p in paths])


def test_image_rewritten_with_same_size_and_mtime_is_decoded_again(tmp_path, data):
    """Item 5: the cache is keyed on the files' content, not on their size and modification time."""
    paths = list_images(data)
    target = paths[0].with_suffix(".bmp")  # an uncompressed format: the same size for any pixels
    cv2.imwrite(str(target), np.zeros((40, 40, 3), np.uint8))
    paths[0].unlink()
    paths = list_images(data)
    first = cached_images(paths, (16, 16), tmp_path / "cache")
    i = paths.index(target)
    assert np.all(first.load()[i] == 0)
    st = target.stat()
    cv2.imwrite(str(target), np.full((40, 40, 3), 200, np.uint8))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (target.stat().st_size, target.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    again = cached_images(paths, (16, 16), tmp_path / "cache")
    assert again.built and np.all(again.load()[i] == 200)


def test_truncated_cache_entry_is_rebuilt_when_opened(tmp_path, data, capfd):
    """Item 4: a .npy shorter than its header says is rebuilt (one warning), not read."""
    paths = list_images(data)
    c = cached_images(paths, (16, 16), tmp_path / "cache")
    with open(c.npy, "r+b") as f:
        f.truncate(c.offset + 3 * c.row_bytes)
    again = cached_images(paths, (16, 16), tmp_path / "cache")
    assert again.built and np.array_equal(again.load(), _decoded(paths, (16, 16)))
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(c.npy) in err[0] and "damaged" in err[0] and "rebuilding" in err[0]


def test_cache_rewritten_behind_our_back_is_not_used(tmp_path, data, capfd):
    """Item 5: rows rewritten in place (same length, same mtime) are caught by their CRCs: decoded
    again from the images, one warning, and the entry is rebuilt on the next open."""
    paths = list_images(data)
    c = cached_images(paths, (16, 16), tmp_path / "cache")
    st = c.npy.stat()
    with open(c.npy, "r+b") as f:
        f.seek(c.offset + 2 * c.row_bytes)
        f.write(b"\xff" * c.row_bytes)
    os.utime(c.npy, ns=(st.st_atime_ns, st.st_mtime_ns))
    again = cached_images(paths, (16, 16), tmp_path / "cache")
    assert not again.built  # the length is right: the damage shows when the row is read
    assert np.array_equal(again.load(), _decoded(paths, (16, 16)))
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(c.npy) in err[0] and "changed since it was written" in err[0]
    assert cached_images(paths, (16, 16), tmp_path / "cache").built


@pytest.mark.tf
def test_training_pipeline_survives_a_cache_truncated_mid_run(tmp_path, data, monkeypatch):
    """Item 4: the cache cut short while training reads it: the batches still hold the right
    images (decoded again), no TensorFlow error."""
    pytest.importorskip("tensorflow", reason="needs the train extra: pip install '.[train]'")
    from edgeclf.image import scan_class_folders
    from edgeclf.train.data import load_cached_splits, split_dataset, stratified_split

    monkeypatch.setenv("EDGECLF_CACHE_DIR", str(tmp_path / "cache"))
    _, files = scan_class_folders(data)
    tr, va = stratified_split(files, 0.25, seed=1)
    train_set, _ = load_cached_splits(tr, va, (16, 16), [])
    with open(train_set.cache.npy, "r+b") as f:
        f.truncate(train_set.cache.offset + 2 * train_set.cache.row_bytes)
    xs = np.concatenate([x.numpy() for x, _ in split_dataset(train_set, 4)])
    assert np.array_equal(xs, _decoded(train_set.paths, (16, 16)))


@pytest.mark.tf
@pytest.mark.slow
def test_train_on_a_truncated_cache(tmp_path, shapes_dir):
    """Item 4 through the CLI: a truncated cache entry gives one warning line and is rebuilt; the
    run finishes with its run.json, no TensorFlow traceback."""
    env = {"EDGECLF_CACHE_DIR": str(tmp_path / "cache")}
    args = ("train", shapes_dir, "--model", "seed", "--img-size", 32, "--epochs", 1, "--batch-size", 16)
    first = run_cli(*args, "--out", tmp_path / "a", env=env)
    assert first.returncode == 0, first.stderr[-2000:]
    (npy,) = (tmp_path / "cache").glob("*.npy")
    size = npy.stat().st_size
    with open(npy, "r+b") as f:
        f.truncate(size // 2)
    second = run_cli(*args, "--out", tmp_path / "b", env=env)
    assert second.returncode == 0 and "Traceback" not in second.stderr, second.stderr[-2000:]
    warnings = [line for line in second.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: {npy}: image cache entry is damaged (missing, truncated or not the file written); "
                        "rebuilding it"], second.stderr
    assert json.loads((tmp_path / "b" / "run.json").read_text())["epochs_run"] == 1 and npy.stat().st_size == size


# ------------------------------------------------------------------------------ export
@pytest.fixture(scope="module")
def seed_run(shapes_dir, tmp_path_factory) -> Path:
    pytest.importorskip("tf2onnx", reason=TRAIN_EXTRA)
    from test_export import make_run  # TensorFlow loads here, for the tests that export only

    return make_run("seed", 32, shapes_dir, tmp_path_factory.mktemp("seed") / "run", epochs=2)


def _export(run: Path, out: Path, **options) -> dict:
    """export_model, replacing an earlier export (``force``, where this edgeclf has it)."""
    import inspect

    from edgeclf.export.api import export_model

    if "force" in inspect.signature(export_model).parameters:
        options.setdefault("force", True)
    return export_model(run, out, show_progress=False, **options)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _beside(out: Path) -> list[str]:
    """What an export left next to its folder (its hidden staging folders)."""
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


@pytest.mark.tf
@pytest.mark.parametrize("stage", ["keras_to_onnx", "_add_fp16", "_write_report"])
def test_export_interrupted_at_any_stage_keeps_the_earlier_export(seed_run, tmp_path, monkeypatch, stage):
    """Item 3: Ctrl-C at any stage of a new export leaves the earlier export as it was."""
    import edgeclf.export.api as api

    out = tmp_path / "export"
    _export(seed_run, out, fp16=True, opset=13)
    before = _snapshot(out)

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, stage, interrupt)
    with pytest.raises(KeyboardInterrupt):
        _export(seed_run, out, fp16=True, opset=17)
    assert _snapshot(out) == before and _beside(out) == []


#: ``edgeclf ARGS`` that pauses once model.onnx is written (before fp16's conversion), so that a
#: signal lands mid-export every time.
PAUSED_EXPORT = """
import sys, time
import edgeclf.export.api as api
real = api._add_fp16
def paused(*a, **k):
    print("model.onnx written", file=sys.stderr, flush=True)
    time.sleep(120)
    return real(*a, **k)
api._add_fp16 = paused
from edgeclf.cli import main
sys.argv = ["edgeclf", *sys.argv[1:]]
main()
"""


@pytest.mark.tf
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_export_killed_mid_write_keeps_the_earlier_export(seed_run, tmp_path, sig):
    """Item 3 with a real signal, sent once the new model.onnx is on disk: the earlier export stays
    whole; after a SIGKILL the next export removes what the killed one left."""
    out = tmp_path / "export"
    _export(seed_run, out, opset=13)
    before = _snapshot(out)
    force = ["--force"] if "--force" in run_cli("export", "--help").stdout else []
    proc = subprocess.Popen([sys.executable, "-c", PAUSED_EXPORT, "export", str(seed_run), "--out", str(out), "--opset",
                             "17", "--fp16", *force], env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if "model.onnx written" in line:
            break
    proc.send_signal(sig)
    proc.wait(60)
    assert _snapshot(out) == before
    assert (_beside(out) == []) if sig == signal.SIGINT else len(_beside(out)) == 1
    again = run_cli("export", seed_run, "--out", out, "--opset", "17", *force)
    assert again.returncode == 0 and _beside(out) == [], again.stderr
    if sig == signal.SIGKILL:
        assert "left by a killed export" in again.stderr


@pytest.mark.tf
def test_runtime_refuses_a_mixed_export_folder(seed_run, tmp_path):
    """Item 3, the reader: a model file that is not the one export.json records is refused in one
    line naming it, by the Python API and by predict."""
    from edgeclf.errors import EdgeclfError
    from edgeclf.model.classifier import Classifier

    out, other = tmp_path / "export", tmp_path / "other"
    _export(seed_run, out, opset=17)
    _export(seed_run, other, opset=13, fp16=True)
    Classifier(out / "model.onnx")  # as exported: fine
    (out / "model.onnx").write_bytes((other / "model.onnx").read_bytes())  # a new model.onnx, the old export.json
    (out / "model.fp16.onnx").write_bytes((other / "model.fp16.onnx").read_bytes())  # not in this export.json
    for name in ("model.onnx", "model.fp16.onnx"):
        with pytest.raises(EdgeclfError, match=rf"{out / name}: not .*export"):
            Classifier(out / name)
    img = tmp_path / "x.png"
    cv2.imwrite(str(img), np.zeros((32, 32, 3), np.uint8))
    res = run_cli("predict", out / "model.onnx", img)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert lines[-1].startswith(f"edgeclf: error: {out / 'model.onnx'}: not the file"), res.stderr


@pytest.mark.tf
def test_export_into_an_earlier_export_needs_force(seed_run, tmp_path):
    """Item 17: as train's --out, export refuses a folder holding an earlier export without --force,
    in one line naming it, before any work; with --force it replaces it. Other files stay."""
    out = tmp_path / "export"
    first = run_cli("export", seed_run, "--out", out, "--opset", "13")
    assert first.returncode == 0, first.stderr
    (out / "notes.txt").write_text("mine")
    before = _snapshot(out)
    res = run_cli("export", seed_run, "--out", out, "--opset", "17")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1] == (f"edgeclf: error: {out}: already holds an export (model.onnx, "
                                                    "export.json); use --force to replace it or --out elsewhere")
    assert _snapshot(out) == before
    forced = run_cli("export", seed_run, "--out", out, "--opset", "17", "--force")
    assert forced.returncode == 0, forced.stderr
    assert json.loads((out / "export.json").read_text())["opset"] == 17 and (out / "notes.txt").read_text() == "mine"
