"""The disk cache of decoded images: built once, reused (also for a subset), rebuilt on change,
read back row by row exactly as the runtime's preprocessing decodes; training streams from it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgeclf.data.synthetic import make_shapes_dataset
from edgeclf.image import list_images, read_image, resize_rgb
from edgeclf.train.imagecache import cached_images, load_files


@pytest.fixture()
def data(tmp_path) -> Path:
    return make_shapes_dataset(tmp_path / "data", per_class=6, size=40, seed=3)


def _entries(cache: Path) -> list[Path]:
    return sorted(cache.glob("*.npy"))


def test_rows_are_the_runtime_preprocessing_and_reused(tmp_path, data):
    paths = list_images(data)
    cache_dir = tmp_path / "cache"
    first = cached_images(paths, (24, 32), cache_dir)
    assert first.built and len(_entries(cache_dir)) == 1
    x = first.load()
    expect = np.stack([resize_rgb(read_image(p), (24, 32)) for p in paths])
    assert x.shape == (len(paths), 24, 32, 3) and np.array_equal(x, expect)
    # A plain .npy: memory-mappable by anyone.
    assert np.array_equal(np.load(first.npy, mmap_mode="r"), expect)
    # Same files and size: nothing decoded again; a subset in another order is served by the same entry.
    again = cached_images(paths, (24, 32), cache_dir)
    assert not again.built and again.npy == first.npy
    sub = [paths[5], paths[0], paths[9]]
    part = cached_images(sub, (24, 32), cache_dir)
    assert not part.built and np.array_equal(part.load(), expect[[5, 0, 9]])
    # Another size is another entry.
    assert cached_images(paths, (16, 16), cache_dir).built and len(_entries(cache_dir)) == 2


def test_changed_file_is_decoded_again(tmp_path, data):
    paths = list_images(data)
    cache_dir = tmp_path / "cache"
    cached_images(paths, (16, 16), cache_dir)
    img = np.full((40, 40, 3), 255, np.uint8)
    cv2.imwrite(str(paths[0]), img)
    os.utime(paths[0], ns=(1, 1))  # a different mtime even on coarse clocks
    fresh = cached_images(paths, (16, 16), cache_dir)
    assert fresh.built and np.all(fresh.load()[0] == 255)


def test_unreadable_files_are_reported_on_every_read(tmp_path, data):
    bad = data / "circle" / "broken.png"
    bad.write_bytes(b"not an image")
    paths = list_images(data)
    warned: list = []
    for built in (True, False):
        c = cached_images(paths, (16, 16), tmp_path / "cache", on_skip=lambda p, r: warned.append(p))
        assert c.built is built
        assert [Path(s["path"]).name for s in c.skipped] == ["broken.png"]
        assert len(c.ok) == len(paths) - 1 and paths.index(bad) not in c.ok
    assert warned == [bad, bad]


def test_no_readable_file_gives_an_empty_array(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"")
    (tmp_path / "b.png").write_bytes(b"not an image")
    c = cached_images([tmp_path / "a.jpg", tmp_path / "b.png"], (8, 8), tmp_path / "cache", on_skip=lambda p, r: None)
    assert c.ok == [] and len(c.skipped) == 2
    x = c.load()
    assert x.shape == (0, 8, 8, 3) and x.dtype == np.uint8


def test_load_files_uses_the_cache_and_writes_no_partial_file(tmp_path, data, monkeypatch):
    cache_dir = tmp_path / "cache"
    monkeypatch.setenv("EDGECLF_CACHE_DIR", str(cache_dir))
    paths = list_images(data)
    x, ok, _ = load_files(paths, (20, 20))
    assert len(_entries(cache_dir)) == 1 and ok == list(range(len(paths)))
    assert not [p for p in cache_dir.iterdir() if p.name.startswith(".")]  # temporaries renamed away
    monkeypatch.setenv("EDGECLF_CACHE_DIR", "none")
    y, _, _ = load_files(paths, (20, 20))
    assert np.array_equal(x, y)


def test_truncated_cache_is_a_clear_error(tmp_path, data):
    from edgeclf.errors import EdgeclfError

    c = cached_images(list_images(data), (16, 16), tmp_path / "cache")
    with open(c.npy, "r+b") as f:
        f.truncate(c.offset + c.row_bytes)
    with pytest.raises(EdgeclfError, match="truncated"):
        c.read(np.array([3]))


@pytest.mark.tf
def test_training_streams_batches_from_the_cache(tmp_path, data, monkeypatch):
    """The tf.data pipeline yields every training row once per epoch, reshuffled, from disk."""
    from edgeclf.image import scan_class_folders
    from edgeclf.train.data import load_cached_splits, split_dataset, stratified_split

    monkeypatch.setenv("EDGECLF_CACHE_DIR", str(tmp_path / "cache"))
    _, files = scan_class_folders(data)
    tr, va = stratified_split(files, 0.25, seed=1)
    skipped: list = []
    train_set, val_set = load_cached_splits(tr, va, (16, 16), skipped)
    assert len(train_set) + len(val_set) == 18 and not skipped
    ds = split_dataset(train_set, 5, shuffle_seed=0)
    from edgeclf.train.data import PIPELINE_RAM_BUDGET

    assert ds.map(lambda x, y: (x, y)).options().autotune.ram_budget == PIPELINE_RAM_BUDGET  # inherited downstream
    epochs = [[(x.numpy(), y.numpy()) for x, y in ds] for _ in range(2)]
    expect = {train_set.paths[i].name: resize_rgb(read_image(train_set.paths[i]), (16, 16)) for i in range(len(train_set))}
    for batches in epochs:
        xs = np.concatenate([b[0] for b in batches])
        assert xs.shape == (len(train_set), 16, 16, 3)
        got = sorted(x.tobytes() for x in xs)
        assert got == sorted(v.tobytes() for v in expect.values())
    assert not np.array_equal(np.concatenate([b[0] for b in epochs[0]]), np.concatenate([b[0] for b in epochs[1]]))


@pytest.mark.tf
def test_trains_on_two_logical_devices_under_mirrored_strategy(tmp_path, shapes_dir):
    """No GPU here: two logical CPU devices (set before TensorFlow starts, hence a subprocess)
    stand in for two GPUs; the run must train under MirroredStrategy with 2 replicas."""
    out = tmp_path / "run"
    script = textwrap.dedent(f"""
        import json, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from pathlib import Path
        from edgeclf.train.trainer import TrainConfig, train
        run = train(TrainConfig(Path({str(shapes_dir)!r}), Path({str(out)!r}), model="seed", img_size=32, epochs=2,
                                batch_size=16, quiet=True))
        print(json.dumps(run["distribution"]))
    """)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    dist = json.loads(res.stdout.strip().splitlines()[-1])
    assert dist["strategy"] == "MirroredStrategy" and dist["replicas"] == 2, dist
    assert len(dist["devices"]) == 2 and all("CPU" in d.upper() for d in dist["devices"])
    run = json.loads((out / "run.json").read_text())
    assert run["epochs_run"] == 2 and len(run["val_report"]["confusion"]) == 3
