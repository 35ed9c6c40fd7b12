"""Hostile and careless input to the device side (issue 13): bad models, decompression bombs, full
and read-only disks, outputs aimed at inputs, absurd options, forged file names, DNS rebinding.

Every test here failed before the fix it guards. Models are built with the ``onnx`` helper, bombs
are generated, and a full disk is a real 2 MB tmpfs where this machine lets the test mount one
(root); where it does not, those tests skip and the fault-injecting ones beside them still run.
"""

from __future__ import annotations

import csv
import errno
import http.client
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import error_line, run_cli
from onnx_fixtures import COLOURS, edgeclf_metadata, make_colour_model, solid

from edgeclf import sysinfo
from edgeclf.errors import EdgeclfError
from edgeclf.serve.server import LiveServer
from edgeclf.sinks.csvfile import CsvOutput
from edgeclf.sinks.video import VideoOutput

try:  # what the fixes added (imported softly so that this suite runs, and fails, against the old code)
    from edgeclf.errors import OutputError
    from edgeclf.outfiles import written_by_edgeclf
except ImportError:
    OutputError = EdgeclfError
    written_by_edgeclf = None


# ------------------------------------------------------------------------------------------ helpers
def colour_graph(path: Path, metadata: dict[str, str], size: tuple = (32, 32), **graph: object) -> Path:
    """The colour model with any metadata (also nonsense); ``size`` ("H", "W") leaves it dynamic."""
    dynamic = size == ("H", "W")
    return make_colour_model(path, (32, 32) if dynamic else size, metadata=metadata, dynamic_hw=dynamic, **graph)


def meta(**changes: object) -> dict[str, str]:
    """The colour model's metadata with keys replaced (None removes one)."""
    m = edgeclf_metadata(COLOURS, (32, 32))
    for k, v in changes.items():
        if v is None:
            m.pop(k, None)
        else:
            m[k] = v if isinstance(v, str) else json.dumps(v)
    return m


def png_bomb(width: int, height: int) -> bytes:
    """A valid PNG of ``width`` x ``height`` black pixels, about 1 MB for 20000x20000."""
    comp = zlib.compressobj(9)
    rows = (b"\0" + bytes(width * 3)) * 200
    idat = b"".join(comp.compress(rows) for _ in range(height // 200)) + comp.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def write_video(path: Path, frames: int = 30, size: tuple[int, int] = (320, 240), noisy: bool = False) -> Path:
    fourcc = cv2.VideoWriter_fourcc(*("mp4v" if path.suffix == ".mp4" else "MJPG"))
    w = cv2.VideoWriter(str(path), fourcc, 10, size)
    rng = np.random.default_rng(0)
    for i in range(frames):
        img = solid(COLOURS[i % 3], size[1], size[0])
        if noisy:  # incompressible: each annotated frame costs tens of KB
            img = np.clip(img.astype(np.int16) + rng.integers(-60, 60, img.shape), 0, 255).astype(np.uint8)
        w.write(img)
    w.release()
    return path


def env() -> dict[str, str]:
    return {**os.environ}


_MEASURED = """
import atexit, os, runpy, sys
from edgeclf.sysinfo import peak_rss_mb
atexit.register(lambda: open(os.environ["EDGECLF_PEAK_FILE"], "w").write(str(peak_rss_mb())))
sys.argv = ["edgeclf", *sys.argv[1:]]
runpy.run_module("edgeclf.cli", run_name="__main__")
"""


def peak_mib(*args: object, timeout: float = 300) -> tuple[int, str, str, float]:
    """Run ``edgeclf ARGS``; (returncode, stdout, stderr, that process's own peak memory in MiB).
    The process reports its VmHWM as it exits: the kernel's rusage figure would include the size
    of the test runner it was forked from."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        peak_file = Path(tmp) / "peak"
        res = subprocess.run([sys.executable, "-c", _MEASURED, *map(str, args)], capture_output=True, text=True,
                             timeout=timeout, env={**env(), "EDGECLF_PEAK_FILE": str(peak_file)})
        return res.returncode, res.stdout, res.stderr, float(peak_file.read_text())


def can_mount() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("mount") is not None


@pytest.fixture
def small_disk(tmp_path):
    """A real 2 MB disk (tmpfs), to fill; skipped where this machine does not let the test mount."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if not can_mount() or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                                         capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root); the fault-injection tests cover the logic")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.fixture
def read_only_dir(tmp_path):
    """A read-only folder that even root cannot write to: a read-only tmpfs, else /proc."""
    mnt = tmp_path / "ro"
    mnt.mkdir()
    if can_mount() and subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mnt)],
                                      capture_output=True).returncode == 0:
        yield mnt
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
    else:
        os.chmod(mnt, 0o555)
        if os.access(mnt, os.W_OK):
            pytest.skip("no read-only folder available (root without mount)")
        yield mnt


def fill(disk: Path, leave: int) -> None:
    """Fill ``disk`` until ``leave`` bytes are free."""
    free = shutil.disk_usage(disk).free
    (disk / "filler").write_bytes(b"\0" * max(0, free - leave))


@pytest.fixture(scope="module")
def d(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hostile")
    model = make_colour_model(root / "colour.onnx")
    photos = root / "photos"
    photos.mkdir()
    for i, c in enumerate(COLOURS):
        cv2.imwrite(str(photos / f"{i}_{c}.jpg"), solid(c))
    return {"root": root, "model": model, "photos": photos, "video": write_video(root / "clip.avi"),
            "mp4": write_video(root / "clip.mp4")}


# ------------------------------------------------------------------ 1. --save onto a full disk
@pytest.mark.parametrize("ext", [".avi", ".mp4"])
def test_save_onto_a_full_disk_fails_loudly_and_keeps_nothing(d, small_disk, tmp_path, ext):
    clip = write_video(tmp_path / f"noisy{ext}", frames=20, noisy=True)
    out = small_disk / f"out{ext}"
    res = run_cli("predict", d["model"], clip, "--loop", "--max-frames", 3000, "--save", out)
    line = error_line(res)
    assert line.startswith(f"edgeclf: error: --save {out}: cannot write (the disk is full) after "), line
    assert list(small_disk.iterdir()) == [], "nothing half-written, under the final name or a temporary one"


def test_save_without_a_full_disk_holds_every_frame_and_edgeclfs_mark(d, tmp_path):
    out = tmp_path / "ok.mp4"
    res = run_cli("predict", d["model"], d["video"], "--save", out)
    assert res.returncode == 0, res.stderr
    cap = cv2.VideoCapture(str(out))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 30 and written_by_edgeclf(out)


def test_video_writer_failure_is_detected_by_fault_injection(d, tmp_path, monkeypatch):
    """Where no tmpfs can be mounted: the same check with the free space faked to run out."""
    import edgeclf.sinks.video as video_mod

    out = tmp_path / "v.avi"
    video = VideoOutput(out, 10, check_every=4)
    for _ in range(5):
        video.write(solid("red", 240, 320))
    monkeypatch.setattr(video_mod, "free_bytes", lambda path: 1000)
    with pytest.raises(OutputError, match="disk is full"):
        for _ in range(8):
            video.write(solid("red", 240, 320))
    video.close()
    assert list(tmp_path.iterdir()) == []


def test_a_short_video_file_is_not_kept(tmp_path, monkeypatch):
    """The final re-open: a file holding fewer frames than were written (what a full disk leaves
    when the free-space check misses it) is an error, not a result."""
    import edgeclf.sinks.video as video_mod

    out = tmp_path / "v.avi"
    video = VideoOutput(out, 10)
    for _ in range(5):
        video.write(solid("red", 240, 320))
    video.frames += 3  # as if three frames had vanished on the way to the disk
    with pytest.raises(OutputError, match="holds 5 of 8 frames"):
        video.close()
    assert list(tmp_path.iterdir()) == []
    assert video_mod  # (module imported for the monkeypatch-free variant)


# --------------------------------------------------------------------- 2. outputs never overwrite inputs
def test_outputs_never_overwrite_inputs(d, tmp_path):
    model_bytes = d["model"].read_bytes()
    photo = d["photos"] / "0_red.jpg"
    photo_bytes, video_bytes = photo.read_bytes(), d["mp4"].read_bytes()
    cases = [
        ("predict", d["model"], photo, "--csv", d["model"]),
        ("predict", d["model"], photo, "--csv", d["model"], "--force"),  # not even with --force
        ("predict", d["model"], d["mp4"], "--save", d["mp4"], "--force"),
        ("predict", d["model"], photo, "--csv", photo, "--force"),
        ("predict", d["model"], d["photos"], "--csv", photo, "--force"),  # a file of the source folder
        ("predict", d["model"], str(d["photos"] / "*.jpg"), "--csv", photo, "--force"),  # of a glob
        ("bench", d["model"], "--runs", 1, "--plot", d["model"].with_suffix(".png"), "--source", d["model"].with_suffix(".png")),
    ]
    d["model"].with_suffix(".png").write_bytes(b"not edgeclf's")
    for args in cases:
        line = error_line(run_cli(*args))
        assert "input" in line or "edgeclf did not write" in line, (args, line)
    assert d["model"].read_bytes() == model_bytes and photo.read_bytes() == photo_bytes
    assert d["mp4"].read_bytes() == video_bytes


def test_overwrite_rule_force_for_foreign_files_none_for_edgeclfs_own(d, tmp_path):
    notes = tmp_path / "notes.csv"
    notes.write_text("my own spreadsheet\n")
    line = error_line(run_cli("predict", d["model"], d["photos"], "--csv", notes))
    assert "file exists and edgeclf did not write it" in line and "--force" in line
    assert notes.read_text() == "my own spreadsheet\n"
    assert run_cli("predict", d["model"], d["photos"], "--csv", notes, "--force").returncode == 0
    assert notes.read_text().startswith("source,frame,label")
    # edgeclf's own outputs are replaced without --force: a second run of the same command works.
    video = tmp_path / "out.avi"
    for _ in range(2):
        assert run_cli("predict", d["model"], d["photos"], "--csv", notes, "--save", video).returncode == 0
    # ... but only by an output of the same kind: a CSV does not replace edgeclf's video.
    assert "edgeclf did not write it" in error_line(run_cli("predict", d["model"], d["photos"], "--csv", video))
    assert error_line(run_cli("predict", d["model"], d["photos"], "--csv", notes, "--save", notes)).endswith(f"name the same file {notes}")


# ---------------------------------------------------------------- 3. model metadata and graph, at load
BAD_MODELS = {
    "not_json": (meta(class_names="[red, green"), "class_names is not valid JSON"),
    "a_number": (meta(class_names="2"), "class_names is a JSON int, not a list"),
    "a_dict": (meta(class_names={"a": 1, "b": 2, "c": 3}), "class_names is a JSON dict, not a list"),
    "a_string": (meta(class_names='"abc"'), "class_names is a JSON str, not a list"),
    "nested": (meta(class_names=[["red"], ["green"], ["blue"]]), "class_names[0] is a JSON list, not a string"),
    "deep": (meta(class_names="[" * 100_000 + "]" * 100_000), "class_names is nested too deeply"),
    "duplicates": (meta(class_names=["cats", "dogs", "cats"]), "names 'cats' more than once"),
    "control_chars": (meta(class_names=["red", "gr\x1b[2Jeen", "blue"]), "class_names[1]"),
    "empty_name": (meta(class_names=["red", " ", "blue"]), "class_names[1]"),
    "height_negative": (meta(input_height="-5"), "metadata input_height '-5' is not a whole number"),
    "height_zero": (meta(input_height="0"), "metadata input_height '0' is not a whole number"),
    "height_word": (meta(input_height="big"), "metadata input_height 'big' is not a whole number"),
    "width_missing": (meta(input_width=None), "metadata has no input_width"),
    "size_not_graph": (meta(input_height="64", input_width="64"), "metadata input_height 64 differs from the graph's input size 32x32"),
}


@pytest.mark.parametrize("case", sorted(BAD_MODELS))
def test_bad_metadata_is_one_line_naming_file_and_field(case, tmp_path, d):
    metadata, expected = BAD_MODELS[case]
    model = colour_graph(tmp_path / f"{case}.onnx", metadata)
    line = error_line(run_cli("predict", model, d["photos"] / "0_red.jpg"))
    assert line.startswith(f"edgeclf: error: {model}: ") and expected in line, line


def test_absurd_sizes_and_graphs_fail_at_load(tmp_path, d):
    huge = colour_graph(tmp_path / "huge.onnx", meta(input_height="100000", input_width="100000"), size=("H", "W"))
    assert "not a whole number from 1 to 4096" in error_line(run_cli("predict", huge, d["photos"]))
    two = colour_graph(tmp_path / "two.onnx", meta(), two_inputs=True)
    assert "model has 2 inputs (image, extra)" in error_line(run_cli("predict", two, d["photos"]))
    fixed4 = colour_graph(tmp_path / "fixed4.onnx", meta(), batch=4)
    assert "fixes the batch at 4" in error_line(run_cli("predict", fixed4, d["photos"]))


def test_a_fixed_batch_of_one_works_where_it_can_and_says_so_where_not(tmp_path, d):
    one = colour_graph(tmp_path / "one.onnx", meta(), batch=1)
    assert "takes one image per call" in error_line(run_cli("predict", one, d["photos"], "--batch", 8))
    assert "takes one image per call" in error_line(run_cli("bench", one, "--batch", "1,4", "--runs", 2))
    res = run_cli("predict", one, d["photos"], "--json")  # batch 1 works
    assert res.returncode == 0 and [json.loads(x)["label"] for x in res.stdout.splitlines()] == list(COLOURS)
    data = tmp_path / "labelled"
    for c in COLOURS:
        (data / c).mkdir(parents=True)
        for i in range(3):
            cv2.imwrite(str(data / c / f"{i}.png"), solid(c))
    res = run_cli("eval", one, data, "--json")  # eval's batches of 32 run image by image
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["accuracy"] == 1.0


def test_a_model_that_returns_nan_is_an_error_not_bare_nan_json(tmp_path, d):
    path = make_colour_model(tmp_path / "nan.onnx", scale=float("nan"))  # every weight NaN
    line = error_line(run_cli("predict", path, d["photos"], "--json"))
    assert "not finite numbers" in line


# ----------------------------------------------------------------------------- 4. DNS rebinding
def _get(port: int, path: str, host: str | None) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.putrequest("GET", path, skip_host=True)
    if host is not None:
        conn.putheader("Host", host)
    conn.endheaders()
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body


def test_live_view_answers_only_to_its_own_host_names(d):
    from edgeclf.model.classifier import Prediction

    pred = Prediction("red", 0, 0.9, {"red": 0.9, "green": 0.05, "blue": 0.05})
    with LiveServer("127.0.0.1:0", allow_hosts=["pi.example.org"], log=lambda m: None) as view:
        view.publish(solid("red"), pred, "x", 0)
        p = view.port
        for path in ("/api/prediction", "/snapshot.jpg", "/", "/api/health", "/stream.mjpg", "/events"):
            status, headers, body = _get(p, path, "evil.example.com")
            assert status == 403 and b"red" not in body, path
            assert not any(k.startswith("access-control-") for k in headers)
        for host in (f"127.0.0.1:{p}", f"localhost:{p}", "LOCALHOST", f"[::1]:{p}", f"192.168.1.20:{p}", "pi.example.org", None):
            status, headers, body = _get(p, "/api/prediction", host)
            assert status == 200 and json.loads(body)["label"] == "red", host
            assert not any(k.startswith("access-control-") for k in headers)
        assert _get(p, "/api/prediction", "127.0.0.1.evil.example.com")[0] == 403
    with pytest.raises(EdgeclfError, match="--allow-host"):
        LiveServer("127.0.0.1:0", allow_hosts=["a b"])


def test_predict_serve_checks_the_host_and_takes_allow_host(d):
    from live_helpers import ServeProcess

    with ServeProcess(d["model"], d["video"], "--loop", "--allow-host", "pi.example.org") as sp:
        sp.wait_frames(3)
        assert _get(sp.port, "/api/prediction", "evil.example.com")[0] == 403
        assert _get(sp.port, "/api/prediction", "pi.example.org:8080")[0] == 200
        assert sp.stop(signal.SIGTERM) == 130
    assert any("403" in line and "evil" not in line for line in sp.lines)  # logged, without echoing the header


# ------------------------------------------------------------------------ 5. decompression bombs
@pytest.fixture(scope="module")
def bombs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bombs")
    data = png_bomb(20000, 20000)
    for c in ("red", "green"):
        (folder / c).mkdir()
        cv2.imwrite(str(folder / c / "ok.png"), solid(c))
        for i in range(2):
            (folder / c / f"bomb{i}.png").write_bytes(data)
    return folder


def test_png_bombs_are_refused_by_their_header_in_predict(d, bombs):
    rc, out, err, mib = peak_mib("predict", d["model"], bombs, "--batch", 4)
    assert rc == 0, err
    assert err.count("above edgeclf's limit of 40 megapixels") == 4
    assert "2 processed, 4 skipped" in err and len(out.splitlines()) == 2
    assert mib < 700, f"{mib:.0f} MiB: the bombs were decoded"


def test_bombs_in_formats_without_a_header_reader_meet_opencvs_limit(d, tmp_path):
    """A 16000x16000 PGM named .png (OpenCV decodes by content): edgeclf does not read its header,
    so OpenCV's own pixel limit, which edgeclf sets before OpenCV loads, refuses it."""
    folder = tmp_path / "pgm"
    folder.mkdir()
    with open(folder / "bomb.png", "wb") as f:  # sparse: the pixels are zeros that take no disk
        f.write(b"P5\n16000 16000\n255\n")
        f.truncate(16000 * 16000 + 20)
    rc, out, err, mib = peak_mib("predict", d["model"], folder)
    assert "more pixels than edgeclf's limit of 40 megapixels" in err, err
    assert rc == 2 and "nothing was classified" in err, err  # issue 26 item 11: the folder gave nothing
    assert mib < 700, f"{mib:.0f} MiB: the bomb was decoded"


def test_png_bombs_are_refused_in_eval(d, bombs):
    rc, out, err, mib = peak_mib("eval", d["model"], bombs, "--json")
    assert rc == 0, err
    report = json.loads(out)
    assert report["n_skipped"] == 4 and report["n_images"] == 2
    assert mib < 700, f"{mib:.0f} MiB: the bombs were decoded"


# ------------------------------------------------------------------------ 6, 7. threads and batch
def test_threads_are_bounded(d):
    most = 4 * sysinfo.cpu_cores()
    for args in (("predict", d["model"], d["video"], "--threads", 100000, "--max-frames", 2),
                 ("predict", d["model"], d["video"], "--threads", 0),
                 ("bench", d["model"], "--threads", "1,100000", "--runs", 2)):
        line = error_line(run_cli(*args, timeout=60))
        assert f"must be 1 to {most}" in line, line


def test_batch_is_bounded_by_memory(d, tmp_path):
    per_frame = 32 * 32 * 3  # the colour model's input
    batch = sysinfo.available_memory_bytes() // per_frame
    line = error_line(run_cli("predict", d["model"], d["video"], "--loop", "--batch", batch, timeout=60))
    assert line.startswith(f"edgeclf: error: --batch {batch}: needs about") and "use --batch" in line
    # With --save the decoded 320x240 frames wait in the read-ahead queue too: a batch that the
    # model itself could take (0.4 x the memory) but whose queue could not (2 x).
    queued = sysinfo.available_memory_bytes() // 2 // (2 * (320 * 240 * 3 + per_frame))
    line = error_line(run_cli("predict", d["model"], d["video"], "--loop", "--batch", queued, "--save", tmp_path / "o.avi", timeout=60))
    assert line.startswith(f"edgeclf: error: --batch {queued}: would hold about") and "use --batch" in line
    line = error_line(run_cli("bench", d["model"], "--batch", f"1,{batch}", "--runs", 2, timeout=60))
    assert line.startswith(f"edgeclf: error: --batch {batch}: needs about") and "use --batch" in line
    line = error_line(run_cli("eval", d["model"], d["root"], "--batch-size", batch, timeout=60))
    assert line.startswith(f"edgeclf: error: --batch-size {batch}: needs about"), line


# ----------------------------------------------------------------------------- 8. output paths
def test_output_paths_that_cannot_be_written_fail_before_the_work(d, tmp_path, read_only_dir):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    (tmp_path / "a_folder").mkdir()
    cases = {
        ("--csv", read_only_dir / "out.csv"): "cannot write to folder",
        ("--save", read_only_dir / "sub" / "out.avi"): "cannot write to folder",
        ("--csv", Path("/proc/edgeclf/out.csv")): "cannot write to folder",
        ("--csv", tmp_path / "a_folder"): "is a folder; give a file name",
        ("--csv", a_file / "out.csv"): f"{a_file} is a file, not a folder",
        ("--save", a_file / "deeper" / "out.avi"): f"{a_file} is a file, not a folder",
    }
    for (option, path), expected in cases.items():
        res = run_cli("predict", d["model"], d["photos"], option, path)
        line = error_line(res)
        assert line.startswith(f"edgeclf: error: {option} {path}: ") and expected in line, line
        assert res.stdout == "", "checked before any image was classified"
    res = run_cli("bench", d["model"], "--runs", 2, "--plot", read_only_dir / "p.png")
    assert "cannot write to folder" in error_line(res) and res.stdout == ""


def test_csv_onto_a_full_disk_is_one_line_and_the_results_are_not_lost(d, small_disk):
    fill(small_disk, 8 * 1024)
    out = small_disk / "out.csv"
    res = run_cli("predict", d["model"], d["video"], "--loop", "--max-frames", 2000, "--csv", out)
    line = error_line(res)
    assert line.startswith(f"edgeclf: error: --csv {out}: cannot write (the disk is full) after "), line
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]
    assert len(res.stdout.splitlines()) > 50, "what was classified was printed"


def test_csv_write_failure_by_fault_injection(tmp_path):
    out = tmp_path / "out.csv"
    writer = CsvOutput(out, COLOURS)
    real = writer._file

    class Full:
        def write(self, s: str) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        def flush(self) -> None:
            real.flush()

    writer._writer = csv.writer(Full())
    with pytest.raises(OutputError, match=r"--csv .*out.csv: cannot write \(the disk is full\) after 0 rows"):
        writer.write({"source": "a", "frame": None, "label": "red", "index": 0, "score": 1.0, "latency_ms": 1.0,
                      "probs": dict.fromkeys(COLOURS, 0.0)})
    assert list(tmp_path.iterdir()) == []


def test_bench_prints_its_results_even_when_the_plot_cannot_be_written(d, small_disk):
    plot = small_disk / "p.png"
    fill(small_disk, 0)
    res = run_cli("bench", d["model"], "--runs", 3, "--warmup", 1, "--json", "--plot", plot)
    line = error_line(res)
    assert line.startswith(f"edgeclf: error: --plot {plot}: "), line
    report = json.loads(res.stdout)
    assert report["results"][0]["throughput_fps"] > 0 and "plot" not in report
    assert not plot.exists()


# ------------------------------------------------------------- 10, 12. file names as hostile input
def test_file_names_cannot_break_lines_or_the_csv(d, tmp_path):
    folder = tmp_path / "names"
    folder.mkdir()
    latin1 = os.fsdecode(b"latin1_\xe9.jpg")
    forged = "evil\nedgeclf: error: fake line.jpg"
    for name, c in ((latin1, "red"), (forged, "green"), ("bell\x07\x1b[2J.jpg", "blue")):
        cv2.imencode(".jpg", solid(c))[1].tofile(str(folder / name))
    (folder / "broken\nedgeclf: error: forged.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    out = tmp_path / "out.csv"
    res = run_cli("predict", d["model"], folder, "--csv", out)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) == 3 and all("\x1b" not in x and "\x07" not in x for x in lines)
    assert any(x.endswith("/evil\\nedgeclf: error: fake line.jpg  green  1.000") for x in lines), lines
    assert not any(x.startswith("edgeclf: error") for x in res.stderr.splitlines())
    assert "warning: skipped " in res.stderr and "broken\\nedgeclf: error: forged.jpg" in res.stderr
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert {r["source"].rsplit("/", 1)[-1] for r in rows} == {"latin1_\\xe9.jpg", "evil\\nedgeclf: error: fake line.jpg", "bell\\x07\\x1b[2J.jpg"}
    res = run_cli("predict", d["model"], folder, "--json")
    assert res.returncode == 0 and len([json.loads(x) for x in res.stdout.splitlines()]) == 3


def test_csv_cells_from_names_cannot_run_as_spreadsheet_formulas(tmp_path):
    """Class names (from the model) and sources (file names) that start like a formula are written
    as text: a leading apostrophe, as OWASP advises; numbers stay numbers."""
    names = ['=HYPERLINK("http://x","y")', "+cmd", "@SUM(A1)"]
    model = make_colour_model(tmp_path / "m.onnx", metadata=meta(class_names=names))
    folder = tmp_path / "photos"
    folder.mkdir()
    cv2.imwrite(str(folder / "=1+1.jpg"), solid("red"))
    out = tmp_path / "out.csv"
    res = run_cli("predict", model, folder, "--csv", out)
    assert res.returncode == 0, res.stderr
    header, row = list(csv.reader(out.open(encoding="utf-8")))
    assert header[-3:] == ["prob_=HYPERLINK(\"http://x\",\"y\")", "prob_+cmd", "prob_@SUM(A1)"]  # start with prob_
    assert row[0].endswith("/=1+1.jpg") and row[2] == "'=HYPERLINK(\"http://x\",\"y\")"
    assert all(not cell.startswith(("=", "+", "@")) for cell in row) and float(row[4]) > 0.5
    rel = run_cli("predict", model, "=1+1.jpg", "--csv", out, "--force", cwd=folder)  # a relative source name
    assert rel.returncode == 0, rel.stderr
    assert list(csv.reader(out.open(encoding="utf-8")))[1][0] == "'=1+1.jpg"


def test_video_with_frames_above_the_pixel_limit_is_refused_before_decoding(d, tmp_path):
    """The file chooses the frame size: an 8000x6000 (48 MP) video is one line, not 144 MB a frame."""
    big = tmp_path / "big.avi"
    subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-f", "lavfi", "-i", "color=c=red:size=8000x6000",
                    "-frames:v", "1", "-c:v", "mjpeg", "-q:v", "31", str(big)], check=True, timeout=120)
    line = error_line(run_cli("predict", d["model"], big))
    assert line == f"edgeclf: error: {big}: 8000x6000 frames, above edgeclf's limit of 40 megapixels"
    assert error_line(run_cli("bench", d["model"], "--source", big, "--runs", 2)).endswith("above edgeclf's limit of 40 megapixels")


# ------------------------------------------------------------------ 11. the request log is escaped
def test_request_log_escapes_control_bytes(capfd):
    import socket

    with LiveServer("127.0.0.1:0") as view:
        s = socket.create_connection(("127.0.0.1", view.port), timeout=10)
        s.sendall(b"GET /\x1b[2J\x07\x00x HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        s.recv(4096)
        s.close()
        time.sleep(0.3)
    err = capfd.readouterr().err
    assert "\x1b" not in err and "\x07" not in err and "\x00" not in err
    assert "\\x1b[2J\\x07" in err


# ---------------------------------------------------------------------------------- 13. --timeout
@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0"])
def test_timeout_must_be_a_finite_positive_number(d, value):
    assert f"--timeout {float(value)}: must be a number of seconds above 0" in error_line(
        run_cli("predict", d["model"], d["video"], "--timeout", value))


# ------------------------------------------------------------- 17. class names in rich tables
def test_class_names_that_look_like_markup_show_as_named(tmp_path):
    names = ["[red]", "[bold]green", "blue"]
    model = colour_graph(tmp_path / "[bold]m.onnx", meta(class_names=names))
    data = tmp_path / "labelled"
    for name, c in zip(names, COLOURS):
        (data / name).mkdir(parents=True)
        cv2.imwrite(str(data / name / "a.png"), solid(c))
    res = run_cli("eval", model, data)
    assert res.returncode == 0, res.stderr
    for name in names:
        assert res.stdout.count(name) >= 2, res.stdout  # per-class table and confusion matrix
    res = run_cli("bench", model, "--runs", 2, "--warmup", 1)
    assert res.returncode == 0 and "[bold]m.onnx" in res.stdout


# --------------------------------------------------------- background start: SIGINT ignored by the shell
def test_ctrl_c_works_when_started_in_the_background(d, tmp_path):
    """A shell starts `cmd &` with SIGINT ignored, and children inherit that: edgeclf installs its
    own handler, so Ctrl-C (SIGINT) still stops it cleanly with its outputs kept."""
    out = tmp_path / "bg.csv"
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeclf.cli", "predict", d["model"], d["video"], "--loop", "--realtime", "--csv", out],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        for _ in range(5):
            assert proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "[interrupted]" in err and out.read_text().startswith("source,frame")


# ---------------------------------------------------------------------- found beyond the list
def test_pipes_devices_and_huge_files_in_a_source_folder_are_skipped_unread(d, tmp_path):
    folder = tmp_path / "with_fifo"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), solid("red"))
    os.mkfifo(folder / "b.jpg")  # reading it would wait for ever
    (folder / "c.jpg").symlink_to("/dev/zero")  # reading it would never end, filling memory
    with open(folder / "d.png", "wb") as f:  # a sparse 10 GB "image": read whole, it would take 10 GB
        f.truncate(10 << 30)
    res = run_cli("predict", d["model"], folder, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stderr.count("not a regular file") == 2 and "above edgeclf's limit of 256 MiB" in res.stderr
    assert "1 processed, 3 skipped" in res.stderr


def test_an_unwritable_video_type_fails_before_the_work(d, tmp_path):
    res = run_cli("predict", d["model"], d["video"], "--save", tmp_path / "out.txt")
    assert "OpenCV cannot write this video format" in error_line(res) and res.stdout == ""
    res = run_cli("predict", d["model"], d["video"], "--save", tmp_path / "out.jpg")
    assert "give a video file name" in error_line(res) and res.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_a_device_as_source_is_named_as_such(d):
    assert "not a file, folder, camera or stream" in error_line(run_cli("predict", d["model"], "/dev/zero"))


def test_an_output_name_too_long_for_the_file_system_is_one_line(d, tmp_path):
    line = error_line(run_cli("predict", d["model"], d["video"], "--csv", tmp_path / ("a" * 300 + ".csv")))
    assert "file name longer than the 255 bytes this file system allows" in line
    ok = tmp_path / ("b" * 250 + ".csv")  # fits, though its temporary name would not uncut
    assert run_cli("predict", d["model"], d["video"], "--csv", ok).returncode == 0 and ok.exists()
