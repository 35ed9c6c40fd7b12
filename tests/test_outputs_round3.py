"""Issue 26, outputs: ``--save`` on a full disk (item 9), a video browsers play and the codec named
(19), one definition of frames per second (20), plots that fit (21). Real files, real onnxruntime
sessions, the ``edgeclf`` CLI in subprocesses, ffprobe to read what was written."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import TRAIN_EXTRA
from live_helpers import make_colour_video
from onnx_fixtures import make_colour_model


def edgeclf(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeclf.cli", "predict", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def ffprobe_codec(path: Path) -> str:
    if not shutil.which("ffprobe"):
        pytest.skip("needs ffprobe (apt-get install ffmpeg)")
    out = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                          "stream=codec_name,nb_read_frames", "-of", "json", str(path)], capture_output=True, text=True, check=True)
    stream = json.loads(out.stdout)["streams"][0]
    return f"{stream['codec_name']}:{stream['nb_read_frames']}"


@pytest.fixture
def full_disk(tmp_path):
    """A real, completely full file system: a 64 KiB tmpfs filled to the last byte (needs root)."""
    mnt = tmp_path / "full"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here (needs root): {r.stderr.strip()}")
    try:
        fd = os.open(mnt / "fill", os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:  # ENOSPC: full
            pass
        finally:
            os.close(fd)
        assert shutil.disk_usage(mnt).free == 0
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_save_on_a_full_disk_is_one_line_and_leaves_nothing(full_disk, tmp_path):
    model = make_colour_model(tmp_path / "colour.onnx")
    image = tmp_path / "red.png"
    cv2.imwrite(str(image), np.full((40, 40, 3), (0, 0, 200), np.uint8))
    r = edgeclf(model, image, "--save", full_disk / "video.mp4")
    assert r.returncode not in (0, 130) and "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "video.mp4" in lines[0] and "disk is full" in lines[0], r.stderr
    assert sorted(p.name for p in full_disk.iterdir()) == ["fill"]  # no probe, no temporary, no video


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    d = tmp_path_factory.mktemp("clip")
    return make_colour_model(d / "colour.onnx"), make_colour_video(d / "colours.mp4", frames=12, fps=10, hold=4)


def save_clip(clip, out: Path) -> tuple[subprocess.CompletedProcess, str, str]:
    """``edgeclf predict`` of the 12-frame clip with ``--save out``: the run, and the codec and
    frame count ffprobe reads in the file."""
    r = edgeclf(*clip, "--save", out)
    assert r.returncode == 0, r.stderr
    codec, frames = ffprobe_codec(out).split(":")
    return r, codec, frames


def test_save_webm_writes_a_codec_browsers_play_and_names_it(clip, tmp_path):
    out = tmp_path / "out.webm"
    r, codec, frames = save_clip(clip, out)
    assert codec in ("vp8", "vp9") and frames == "12"
    assert f"--save {out}: 12 frames in {codec.upper()}" in r.stderr
    save_clip(clip, out)  # edgeclf's own file: replaced without --force


def test_save_mp4_says_which_codec_it_wrote(clip, tmp_path):
    """H.264 where OpenCV's FFmpeg can encode it; else the MPEG-4 Part 2 fallback, said so."""
    r, codec, frames = save_clip(clip, tmp_path / "out.mp4")
    assert frames == "12"
    if codec == "h264":
        assert "12 frames in H.264 (avc1)" in r.stderr
    else:
        assert codec == "mpeg4"
        assert "12 frames in MPEG-4 Part 2 (mp4v), which browsers do not play" in r.stderr and ".webm" in r.stderr


def test_one_frame_rate_for_the_overlay_the_live_view_and_its_health(tmp_path):
    """The overlay (``Annotator``) and the live view (``LiveServer``: /api/health, the page, its
    overlay) count the same results the same way; a change of rate shows in both within a second."""
    from edgeclf import LiveServer
    from edgeclf.model.classifier import Prediction
    from edgeclf.predict.options import Result
    from edgeclf.sinks.annotation import Annotator
    from edgeclf.sources.base import Frame

    image = np.zeros((48, 64, 3), np.uint8)
    pred = Prediction("red", 0, 0.9, {"red": 0.9, "green": 0.05, "blue": 0.05})
    annotator = Annotator(top=1, clock=time.monotonic)
    with LiveServer("127.0.0.1:0") as server:
        for i, gap in enumerate([0.005] * 150 + [0.05] * 30):  # 200/s, then 20/s for 1.5 s
            annotator(Result(Frame(image, "clip", i, time.monotonic()), pred, 1.0))
            server.publish(image, pred, "clip", i, 1.0)
            time.sleep(gap)
        live, drawn = server.fps(), annotator.fps
        health = server.health()
    assert live == pytest.approx(drawn, rel=0.05), (live, drawn)
    assert 12 < live < 25, live  # the last second's rate, not the mean of the last 64 results
    assert health["fps_measures"] == "results/s over the last 1 s"


def test_summary_labels_its_frame_rate(clip):
    """The summary's figures agree with each other: start-up + run = the total, and frames/s =
    frames / the run (the start-up, model load and warm-up, reported apart)."""
    import re

    model, video = clip
    r = edgeclf(model, video)
    assert r.returncode == 0, r.stderr
    found = re.search(r"(\d+) processed, 0 skipped in ([\d.e-]+) s \(start-up ([\d.e-]+) s, then ([\d.]+) frames/s "
                      r"over ([\d.e-]+) s; latency [\d.]+ ms/frame\) on cpu", r.stderr)
    assert found, r.stderr
    n, total, startup, fps, run = (float(x) for x in found.groups())
    assert n == 12 and total == pytest.approx(startup + run, rel=0.02, abs=0.01)
    assert fps == pytest.approx(n / run, rel=0.01)


@pytest.fixture
def figures(monkeypatch):
    """The figures the plots draw, kept for inspection (``plt.close`` is where they are let go)."""
    matplotlib = pytest.importorskip("matplotlib", reason=TRAIN_EXTRA)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kept = []
    close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: kept.append(fig))
    yield kept
    for fig in kept:
        close(fig)


def test_curves_have_whole_epoch_ticks_and_mark_the_best_epoch(figures, tmp_path):
    from edgeclf.train.plots import plot_curves

    history = [{"epoch": e, "accuracy": 0.5 + e / 20, "loss": 1 - e / 20, "val_accuracy": v, "val_loss": 0.5}
               for e, v in zip(range(1, 5), (0.6, 0.7, 0.72, 0.69))]
    plot_curves(history, tmp_path / "curves.png", title="run")
    assert (tmp_path / "curves.png").stat().st_size > 0
    (fig,) = figures
    fig.canvas.draw()
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
        assert any(line.get_label().startswith("best epoch 3") for line in ax.get_lines())


def _overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


@pytest.mark.parametrize("n", [2, 40])
def test_confusion_matrix_title_and_labels_fit(figures, tmp_path, n):
    from edgeclf.train.plots import plot_confusion

    names = [f"class_number_{i:02d}_with_a_long_name" for i in range(n)]
    cm = np.random.default_rng(0).integers(0, 50, (n, n))
    title = "efficientnet_lite0 224x224: validation accuracy 99.8%"
    plot_confusion(cm, names, tmp_path / "confusion.png", title=title)
    (fig,) = figures
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    box = ax.title.get_window_extent(renderer)
    assert 0 <= box.x0 and box.x1 <= fig.bbox.width and box.y1 <= fig.bbox.height, (box, fig.bbox)
    for labels in (ax.get_xticklabels(), ax.get_yticklabels()):
        boxes = [t.get_window_extent(renderer) for t in labels if t.get_text()]
        assert len(boxes) == n
        assert not any(_overlap(a, b) for a, b in zip(boxes, boxes[1:])), "tick labels overlap"


TABLE = """
import sys
from rich.table import Table
from edgeclf.progress import console
t = Table("class", "precision", "recall", "support")
t.add_row("a class name long enough to push this table past eighty columns", "0.987", "0.991", "1234")
console(stderr=sys.argv[1] == "err").print(t)
"""


@pytest.mark.parametrize("stream", ["out", "err"])
def test_tables_are_not_cut_at_80_columns_when_piped(stream):
    """Item 21: rich draws 80 columns into a pipe; edgeclf's consoles use the full table width there."""
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    r = subprocess.run([sys.executable, "-c", TABLE, stream], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    text = r.stdout if stream == "out" else r.stderr
    row = next(line for line in text.splitlines() if "long enough" in line)
    assert "a class name long enough to push this table past eighty columns" in row and "1234" in row
    assert max(len(line) for line in text.splitlines()) > 80
