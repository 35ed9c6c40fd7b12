"""The one output interface of ``edgeclf predict`` (``edgeclf.sinks.base``): every sink is opened from
the options, written every result, closed with keep or discard; and ``run_predict`` keeps or
discards them as the command always did. Real colour model, real video, real files and a real
live-view server on 127.0.0.1; only the ``--show`` window is a stand-in (no display exists here).
"""

from __future__ import annotations

import csv
import os
import signal
from pathlib import Path

import cv2
import pytest
from live_helpers import get_json, port_is_free
from onnx_fixtures import make_colour_model, solid

from edgeclf.errors import EdgeclfError
from edgeclf.model.classifier import Classifier
from edgeclf.outfiles import written_by_edgeclf
from edgeclf.predict.loop import PredictOptions, Result, classify, run_predict
from edgeclf.sinks.base import Sink
from edgeclf.sinks.console import ConsoleSink
from edgeclf.sinks.csvfile import CsvSink
from edgeclf.sinks.live import LiveSink
from edgeclf.sinks.open import open_sinks
from edgeclf.sinks.video import VideoSink
from edgeclf.sinks.window import WindowSink
from edgeclf.sources.open import open_source

COLOURS_IN_VIDEO = ["red"] * 4 + ["green"] * 4 + ["blue"] * 4


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("sinks")
    video = d / "colours.avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for c in COLOURS_IN_VIDEO:
        w.write(solid(c))
    w.release()
    return {"model": make_colour_model(d / "colour.onnx"), "video": video}


@pytest.fixture(scope="module")
def results(inputs) -> list[Result]:
    """The video's results, as the predict loop gets them."""
    clf = Classifier(inputs["model"])
    with open_source(inputs["video"]) as src:
        return list(classify(clf, src))


def video_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def csv_labels(path: Path) -> list[str]:
    with open(path, newline="") as f:
        return [row["label"] for row in csv.DictReader(f)]


class StandInDisplay:
    """Where ``--show``'s ``outputs.Display`` would open a window (no display here): records the
    frames shown, and reports the window closed at the ``close_at``-th frame."""

    close_at = 3

    def __init__(self) -> None:
        self.available = True
        self.shown: list[tuple[int, int]] = []
        self.closed = False

    def show(self, image) -> bool:
        self.shown.append(image.shape[:2])
        return len(self.shown) < self.close_at

    def close(self) -> None:
        self.closed = True


# ------------------------------------------------------------------------------- the interface itself
def test_every_output_is_a_sink_opened_from_the_options_written_and_closed_alike(inputs, results, tmp_path, monkeypatch):
    import edgeclf.sinks.window as window_mod

    monkeypatch.setattr(window_mod, "Display", StandInDisplay)
    lines: list[str] = []
    opts = PredictOptions(inputs["model"], str(inputs["video"]), json_out=True, csv=tmp_path / "r.csv",
                          save=tmp_path / "r.avi", show=True, serve="127.0.0.1:0")
    clf = Classifier(inputs["model"])
    with open_source(inputs["video"]) as src:
        sinks = open_sinks(opts, clf, src, out=lines.append)
    assert [type(s) for s in sinks] == [LiveSink, ConsoleSink, CsvSink, VideoSink, WindowSink]
    assert all(isinstance(s, Sink) for s in sinks)
    live, window = sinks[0], sinks[-1]
    try:
        for res in results[:2]:
            for s in sinks:
                s.write(res)
        assert get_json(live.server.url + "api/prediction")["label"] == "red"
    finally:
        for s in sinks:
            s.close(keep=True)
    assert len(lines) == 2 and '"label": "red"' in lines[0]
    assert csv_labels(tmp_path / "r.csv") == ["red", "red"]
    assert video_frames(tmp_path / "r.avi") == 2 and written_by_edgeclf(tmp_path / "r.avi", "video")
    assert window.display.shown == [(240, 320)] * 2 and window.display.closed  # annotated: 320 px wide
    assert live.server.closed and port_is_free(live.server.port)
    for s in sinks:  # a second close does nothing (and raises nothing)
        s.close(keep=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.avi", "r.csv"]


@pytest.mark.parametrize("keep", [True, False])
def test_close_keeps_the_complete_files_or_leaves_nothing(inputs, results, tmp_path, keep):
    opts = PredictOptions(inputs["model"], str(inputs["video"]), csv=tmp_path / "r.csv", save=tmp_path / "r.mp4", quiet=True)
    clf = Classifier(inputs["model"])
    with open_source(inputs["video"]) as src:
        sinks = open_sinks(opts, clf, src)
    assert [type(s) for s in sinks] == [CsvSink, VideoSink]
    for res in results:
        for s in sinks:
            s.write(res)
    assert all(p.name.startswith(".r.") for p in tmp_path.iterdir()), "only temporaries while writing"
    for s in sinks:
        s.close(keep=keep)
    if keep:
        assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv", "r.mp4"]
        assert csv_labels(tmp_path / "r.csv") == COLOURS_IN_VIDEO
        assert video_frames(tmp_path / "r.mp4") == len(COLOURS_IN_VIDEO)
    else:
        assert list(tmp_path.iterdir()) == []


def test_a_video_sink_without_frames_writes_nothing_and_says_so(tmp_path, capsys):
    from edgeclf.sinks.annotation import Annotator

    sink = VideoSink(tmp_path / "none.mp4", 10.0, Annotator(top=1))
    sink.close(keep=True)
    assert list(tmp_path.iterdir()) == []
    assert sink.warning == f"--save: no frames, {tmp_path / 'none.mp4'} not written"  # predict prints it after the run


def test_a_sink_that_fails_to_open_closes_those_already_open(inputs, tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("not a folder")  # the CSV's folder: fails after the live view started
    opts = PredictOptions(inputs["model"], str(inputs["video"]), csv=tmp_path / "a-file" / "r.csv", serve="127.0.0.1:0")
    clf = Classifier(inputs["model"])
    opened: list[LiveSink] = []
    real_start = LiveSink.start

    def start(*args, **kwargs) -> LiveSink:  # the real one, remembered
        opened.append(real_start(*args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(LiveSink, "start", start)
    with open_source(inputs["video"]) as src, pytest.raises(OSError):
        open_sinks(opts, clf, src)
    assert len(opened) == 1 and opened[0].server.closed and port_is_free(opened[0].server.port)


# ---------------------------------------------------------------------- run_predict through the sinks
def test_an_error_in_the_loop_discards_every_file(inputs, tmp_path):
    def out(line: str) -> None:
        if out.n == 5:
            raise RuntimeError("a bug in an output")
        out.n += 1

    out.n = 0
    opts = PredictOptions(inputs["model"], str(inputs["video"]), csv=tmp_path / "r.csv", save=tmp_path / "r.avi")
    with pytest.raises(RuntimeError, match="a bug in an output"):
        run_predict(opts, out=out)
    assert list(tmp_path.iterdir()) == [], "no half-written file, under its name or a temporary one"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_in_the_loop_keeps_every_file_with_the_same_results(inputs, tmp_path, signum):
    """The signal arrives while the console line of the 5th result is printed: that result still
    reaches every sink (the signal waits until it has), then the run stops and keeps the files."""
    old = signal.signal(signal.SIGTERM, signal.default_int_handler)  # as `edgeclf` (cli.main) sets it
    try:
        _interrupt_at_the_5th_line(inputs, tmp_path, signum)
    finally:
        signal.signal(signal.SIGTERM, old)


def _interrupt_at_the_5th_line(inputs, tmp_path, signum) -> None:
    lines: list[str] = []

    def out(line: str) -> None:
        lines.append(line)
        if len(lines) == 5:
            os.kill(os.getpid(), signum)

    opts = PredictOptions(inputs["model"], str(inputs["video"]), json_out=True, csv=tmp_path / "r.csv",
                          save=tmp_path / "r.avi")
    summary = run_predict(opts, out=out)
    assert summary.interrupted and summary.processed == 5
    assert len(lines) == 5
    assert csv_labels(tmp_path / "r.csv") == COLOURS_IN_VIDEO[:5]
    assert video_frames(tmp_path / "r.avi") == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.avi", "r.csv"]


def test_closing_the_window_ends_the_run_and_keeps_the_outputs(inputs, tmp_path, monkeypatch):
    import edgeclf.sinks.window as window_mod

    monkeypatch.setattr(window_mod, "Display", StandInDisplay)
    opts = PredictOptions(inputs["model"], str(inputs["video"]), show=True, csv=tmp_path / "r.csv", quiet=True)
    summary = run_predict(opts)
    assert summary.processed == StandInDisplay.close_at and not summary.interrupted
    assert csv_labels(tmp_path / "r.csv") == COLOURS_IN_VIDEO[: StandInDisplay.close_at]


def test_options_are_checked_before_the_model_loads(inputs, tmp_path):
    missing_model = tmp_path / "no-such-model.onnx"  # never opened: the --top error comes first
    with pytest.raises(EdgeclfError, match=r"^--top must be at least 1 \(got 0\)$"):
        run_predict(PredictOptions(missing_model, str(inputs["video"]), top=0))
    with pytest.raises(EdgeclfError, match="is an input of this command"):
        run_predict(PredictOptions(missing_model, str(inputs["video"]), csv=inputs["video"], force=True))
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_on_the_first_row_is_the_one_line_a_failed_run_prints(inputs, tmp_path, monkeypatch, capsys):
    """--csv fails on its first row (fault injected: the disk is full), so --save got no frame: the
    run ends with the CSV's error only, not a "no frames" warning before it."""
    import errno

    from edgeclf.errors import OutputError
    from edgeclf.sinks.csvfile import CsvOutput

    def no_space(row):
        raise OSError(errno.ENOSPC, "No space left on device")

    def full(self, rec):  # the row's write meets a full disk, through CsvOutput's own handling
        self._guard(no_space, [])

    monkeypatch.setattr(CsvOutput, "write", full)
    opts = PredictOptions(model=inputs["model"], source=str(inputs["video"]), csv=tmp_path / "r.csv",
                          save=tmp_path / "r.mp4", quiet=True)
    with pytest.raises(OutputError, match=r"--csv .*r\.csv: cannot write \(the disk is full\) after 0 rows"):
        run_predict(opts)
    assert capsys.readouterr().err == ""  # the caller prints the error: nothing else before it
    assert list(tmp_path.iterdir()) == []


def test_the_drawn_frame_rate_counts_results_not_the_gaps_inside_a_batch(results):
    """Batched results come in bursts: 8 at once every 80 ms is 100 frames/s, not the ~600 a mean
    of the gaps between them gave."""
    from edgeclf.sinks.annotation import Annotator

    now = [0.0]
    a = Annotator(top=1, clock=lambda: now[0])
    shown = []
    for burst in range(40):  # 3.2 s
        now[0] = 0.08 * (burst + 1)
        for k in range(8):
            now[0] += 1e-5  # the burst's own near-zero gaps
            a(results[(8 * burst + k) % len(results)])
            shown.append(a.fps)
    assert all(90 <= fps <= 110 for fps in shown[-200:]), (min(shown[-200:]), max(shown[-200:]))  # a window's edges
    # One result per second: 1 frame/s.
    b = Annotator(top=1, clock=lambda: now[0])
    for r in results[:4]:
        now[0] += 1.0
        b(r)
    assert b.fps == pytest.approx(1.0)
