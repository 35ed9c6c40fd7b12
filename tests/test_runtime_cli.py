"""`edgeclf predict` end to end in a subprocess: outputs, options, bad input, and no TensorFlow."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import error_line, run_cli
from onnx_fixtures import COLOURS, make_colour_model, make_vector_model, solid

HOLD = 8  # frames per colour in the test video
VIDEO_COLOURS = ["red", "green", "blue", "red"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cli")
    model = make_colour_model(d / "colour.onnx")
    photos = d / "photos"
    (photos / "more").mkdir(parents=True)
    for i, c in enumerate(COLOURS):
        cv2.imwrite(str(photos / f"{i}_{c}.jpg"), solid(c, 60 + 10 * i, 80))
    cv2.imwrite(str(photos / "more" / "3_green.png"), solid("green"))
    cv2.imwrite(str(photos / "more" / "4_grey16.png"), (solid("blue")[..., 0].astype(np.uint16) * 257))
    (photos / "5_empty.jpg").write_bytes(b"")
    (photos / "6_corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    (photos / "7_readme.txt").write_text("hello")
    video = d / "colours.mp4"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    for c in VIDEO_COLOURS:
        for _ in range(HOLD):
            w.write(solid(c))
    w.release()
    return {"dir": d, "model": model, "photos": photos, "video": video}


def _json_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def test_folder_default_output_with_bad_files_skipped(data):
    r = run_cli("predict", data["model"], data["photos"])
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert [Path(x.split()[0]).name for x in lines] == ["0_red.jpg", "1_green.jpg", "2_blue.jpg", "3_green.png", "4_grey16.png"]
    assert [x.split()[1] for x in lines[:4]] == ["red", "green", "blue", "green"]
    assert all(0 <= float(x.split()[2]) <= 1 for x in lines)
    warnings = [x for x in r.stderr.splitlines() if x.startswith("warning: skipped")]
    assert len(warnings) == 3
    assert any("5_empty.jpg" in w and "0 bytes" in w for w in warnings)
    assert any("6_corrupt.jpg" in w for w in warnings)
    assert any("7_readme.txt" in w for w in warnings)
    assert "5 processed, 3 skipped" in r.stderr and "frames/s" in r.stderr
    assert "Traceback" not in r.stderr


def test_strict_fails_when_files_are_skipped(data):
    r = run_cli("predict", data["model"], data["photos"], "--strict")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == "edgeclf: error: 3 file(s) skipped (--strict)"
    assert len(r.stdout.splitlines()) == 5  # everything readable was still classified


def test_json_and_csv(data, tmp_path):
    out_csv = tmp_path / "results.csv"
    r = run_cli("predict", data["model"], data["photos"], "--json", "--csv", out_csv, "--top", "2")
    assert r.returncode == 0, r.stderr
    recs = _json_lines(r.stdout)  # stdout is JSON only; warnings and summary are on stderr
    assert len(recs) == 5
    for rec in recs:
        assert {"source", "frame", "label", "index", "score", "probs", "latency_ms", "top"} <= set(rec)
        assert rec["frame"] is None
        assert set(rec["probs"]) == set(COLOURS)
        assert rec["label"] == COLOURS[rec["index"]] and rec["score"] == max(rec["probs"].values())
        assert rec["latency_ms"] > 0
        assert [t["label"] for t in rec["top"]][0] == rec["label"] and len(rec["top"]) == 2
    with open(out_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["label"] for row in rows] == [rec["label"] for rec in recs]
    assert [row["source"] for row in rows] == [rec["source"] for rec in recs]
    assert float(rows[0]["prob_red"]) == pytest.approx(recs[0]["probs"]["red"], abs=1e-5)
    assert oct(out_csv.stat().st_mode & 0o777) != oct(0o600)  # a normal file, not a temp file's mode
    assert not list(tmp_path.glob(".results*"))  # no temporary left behind


def test_top_k_human_lines(data):
    r = run_cli("predict", data["model"], data["photos"] / "0_red.jpg", "--top", "3")
    assert r.returncode == 0
    line = r.stdout.strip()
    assert line.startswith(str(data["photos"] / "0_red.jpg"))
    assert [part.split()[0] for part in line.split("  ", 1)[1].split(", ")] == ["red", "green", "blue"] or \
        [part.split()[0] for part in line.split("  ", 1)[1].split(", ")][0] == "red"


def test_video_every_frame_in_order_batched_or_not(data):
    """One frame per call, the default (the frames waiting, up to 8) and 4 per call agree."""
    runs = [run_cli("predict", data["model"], data["video"], "--json", *extra) for extra in (["--batch", "1"], [], ["--batch", "4"])]
    assert all(r.returncode == 0 for r in runs), "".join(r.stderr for r in runs)
    one, auto, four = (_json_lines(r.stdout) for r in runs)
    n = HOLD * len(VIDEO_COLOURS)
    assert [x["frame"] for x in one] == list(range(n)) == [x["frame"] for x in four] == [x["frame"] for x in auto]
    assert [x["label"] for x in one] == [c for c in VIDEO_COLOURS for _ in range(HOLD)]
    for a, b, c in zip(one, four, auto):
        assert a["label"] == b["label"] == c["label"]
        assert a["probs"] == pytest.approx(b["probs"], abs=1e-5) and a["probs"] == pytest.approx(c["probs"], abs=1e-5)
    assert all(f"{n} processed, 0 skipped" in r.stderr for r in runs)


def test_every_and_max_frames(data):
    r = run_cli("predict", data["model"], data["video"], "--json", "--every", "5", "--max-frames", "3")
    assert [x["frame"] for x in _json_lines(r.stdout)] == [0, 5, 10]
    r = run_cli("predict", data["model"], data["photos"], "--every", "2", "--json")
    assert [Path(x["source"]).name for x in _json_lines(r.stdout)] == ["0_red.jpg", "2_blue.jpg", "3_green.png"]


def test_smooth_delays_label_changes(data):
    plain = _json_lines(run_cli("predict", data["model"], data["video"], "--json").stdout)
    smooth = _json_lines(run_cli("predict", data["model"], data["video"], "--json", "--smooth", "--smooth-alpha", "0.3").stdout)
    assert plain[HOLD]["label"] == "green" and smooth[HOLD]["label"] == "red"  # one frame is not enough to switch
    assert smooth[2 * HOLD - 1]["label"] == "green"  # a held colour wins
    assert smooth[HOLD]["probs"]["green"] < plain[HOLD]["probs"]["green"]
    r = run_cli("predict", data["model"], data["photos"] / "0_red.jpg", "--smooth")
    assert r.returncode == 0 and "--smooth applies to videos" in r.stderr
    r = run_cli("predict", data["model"], data["video"], "--smooth", "--smooth-alpha", "0")
    assert r.returncode == 2 and "--smooth-alpha" in r.stderr


def test_save_annotated_video(data, tmp_path):
    out = tmp_path / "annotated.mp4"
    r = run_cli("predict", data["model"], data["video"], "--save", out, "--max-frames", "12")
    assert r.returncode == 0, r.stderr
    cap = cv2.VideoCapture(str(out))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    assert len(frames) == 12
    assert frames[0].shape[1] >= 320  # small frames are enlarged so the label is legible
    src = cv2.resize(solid("red"), (frames[0].shape[1], frames[0].shape[0]), interpolation=cv2.INTER_NEAREST)
    top = np.abs(frames[0][:20, :120].astype(int) - src[:20, :120]).mean()
    assert top > 40  # the label box is drawn on the frame


def test_show_without_a_display_warns_and_goes_on(data):
    r = run_cli("predict", data["model"], data["photos"] / "0_red.jpg", "--show", env={"DISPLAY": "", "WAYLAND_DISPLAY": ""})
    assert r.returncode == 0
    assert "--show" in r.stderr and "not showing" in r.stderr
    assert "red" in r.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["{model}", "{dir}/missing.jpg"], "missing.jpg: no such file or folder"),
        (["{dir}/missing.onnx", "{photos}"], "missing.onnx: model file does not exist"),
        (["{photos}/0_red.jpg", "{photos}"], "not a loadable ONNX model"),
        (["{vector}", "{photos}"], "is not an NHWC RGB image tensor"),
        (["{model}", "97"], "97: cannot open camera"),
        (["{model}", "/dev/video97"], "/dev/video97: camera device does not exist"),
        (["{model}", "{photos}", "--provider", "gpu"], "unknown provider 'gpu'"),
        (["{model}", "{photos}", "--provider", "cuda", "--strict"], "provider 'cuda' is not available"),
        (["{model}", "{photos}", "--top", "0"], "--top must be at least 1"),
        (["{model}", "{photos}", "--batch", "0"], "--batch must be at least 1"),
        (["{model}", "{photos}", "--every", "0"], "--every must be at least 1"),
        (["{model}", "{dir}/*.nothing"], "no files match this pattern"),
    ],
)
def test_bad_input_is_one_line_exit_2(data, args, message):
    vector = data["dir"] / "vector.onnx"
    if not vector.exists():
        make_vector_model(vector)
    fmt = {"model": data["model"], "dir": data["dir"], "photos": data["photos"], "vector": vector}
    r = run_cli("predict", *[a.format(**fmt) for a in args])
    line = error_line(r)
    assert line.startswith("edgeclf: error: ") and message in line, line


def test_missing_provider_falls_back_with_one_warning(data):
    r = run_cli("predict", data["model"], data["photos"] / "0_red.jpg", "--provider", "cuda", "--threads", "1")
    assert r.returncode == 0
    assert [x for x in r.stderr.splitlines() if x.startswith("warning:")] == [
        "warning: provider 'cuda' is not available in this onnxruntime (available: cpu); falling back to cpu"
    ]
    assert "on cpu" in r.stderr  # the summary says what really ran


def test_pipe_closed_early_is_quiet(data):
    p1 = subprocess.Popen([sys.executable, "-m", "edgeclf.cli", "predict", str(data["model"]), str(data["video"])],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={"PATH": "/usr/bin:/bin"})
    first = p1.stdout.readline()
    p1.stdout.close()
    _, err = p1.communicate(timeout=60)
    assert b"red" in first
    assert b"Traceback" not in err


BLOCK_TF = textwrap.dedent(
    """
    import sys, importlib.abc
    FORBIDDEN = ("tensorflow", "keras", "tf2onnx", "onnx", "tf_keras", "jax", "torch")
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in FORBIDDEN:
                raise ImportError(f"edge runtime imported {name}")
    sys.meta_path.insert(0, Block())
    import atexit
    atexit.register(lambda: print("LOADED:", sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN), file=sys.stderr))
    sys.argv = ["edgeclf", *sys.argv[1:]]
    from edgeclf.cli import main
    main()
    """
)


def test_predict_runs_without_tensorflow_or_onnx(data, tmp_path):
    r = subprocess.run(
        [sys.executable, "-c", BLOCK_TF, "predict", str(data["model"]), str(data["video"]), "--json", "--batch", "2",
         "--csv", str(tmp_path / "o.csv"), "--save", str(tmp_path / "o.mp4"), "--smooth"],
        capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}, timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert len(_json_lines(r.stdout)) == HOLD * len(VIDEO_COLOURS)
    assert "LOADED: []" in r.stderr


def test_import_edgeclf_loads_no_tensorflow():
    code = (
        "import sys, edgeclf, edgeclf.cli, edgeclf.predict.loop, edgeclf.sources.open, "
        "edgeclf.model.classifier, edgeclf.sinks.open, edgeclf.model.providers;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf2onnx', 'onnx'));"
        "print(bad)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
