"""Where ``edgeclf predict`` sends its results: the console (lines or ``--json``), ``--csv``,
``--save``, ``--show`` and ``--serve``. Every one of them is a ``Sink`` with one life cycle:

- opened from the command's options by ``open_sinks`` (as jetson-inference's ``videoOutput``
  picks its outputs from a URI), after ``check_sinks`` has checked them before the model loads;
- ``write(result)`` for every result, in order;
- ``close(keep=True)`` once the run ends or is interrupted: a file is finished and renamed into
  place whole (``OutputError`` if the disk filled up, and then nothing is left under its name);
  ``close(keep=False)`` after an error: a file's temporary is removed, never left half-written.

The file formats themselves (atomic CSV and video writers, the annotated frame, the JSON record)
are in ``outputs.py``; the web server is ``serve.py``'s ``LiveServer``.
"""

from __future__ import annotations

import collections
import sys
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from edgeclf.errors import safe_text, warn
from edgeclf.model.classifier import Classifier
from edgeclf.model.providers import short_names
from edgeclf.outfiles import check_distinct, check_output
from edgeclf.predict.options import PredictOptions, Result
from edgeclf.serve.server import LiveServer, parse_address
from edgeclf.sinks.outputs import CsvOutput, Display, VideoOutput, annotate, human_line, json_line, print_line, record
from edgeclf.sources.open import Source, quiet_opencv


class Sink(ABC):
    """One output of ``edgeclf predict``: ``write`` every result, then ``close`` it once."""

    #: True once the user asked through this output to end the run (closed the window).
    stop_requested = False
    #: What ``close`` found worth a warning line; printed after a run that did not fail, so an
    #: error stays the one line a failed run prints.
    warning: str | None = None

    @abstractmethod
    def write(self, result: Result) -> None:
        """Send one result (a full disk raises ``OutputError``, having discarded the file)."""

    def close(self, keep: bool = True) -> None:
        """Finish the output (``keep``) or throw away what it wrote; a second call does nothing."""


def _frame_number(result: Result, numbered: bool) -> int | None:
    """The frame number results show: none for photos (their name says which one it is)."""
    return result.frame.index if numbered else None


class ConsoleSink(Sink):
    """One line per result on stdout: ``photo.jpg  cats  0.973``, or with ``--json`` one JSON object."""

    def __init__(self, json_out: bool, top: int, numbered: bool, out: Callable[[str], None] = print_line) -> None:
        self.json_out, self.top, self.numbered, self.out = json_out, top, numbered, out

    def write(self, result: Result) -> None:
        frame = _frame_number(result, self.numbered)
        if self.json_out:
            self.out(json_line(record(result.frame.source, frame, result.prediction, result.latency_ms, self.top)))
        else:
            self.out(human_line(result.frame.source, frame, result.prediction, self.top))


class CsvSink(Sink):
    """``--csv FILE``: one row per result (``outputs.CsvOutput``: atomic, flushed row by row)."""

    def __init__(self, path: Path, class_names: Sequence[str], numbered: bool) -> None:
        self.file = CsvOutput(path, class_names)
        self.numbered = numbered

    def write(self, result: Result) -> None:
        frame = _frame_number(result, self.numbered)
        self.file.write(record(result.frame.source, frame, result.prediction, result.latency_ms))

    def close(self, keep: bool = True) -> None:
        self.file.close(keep=keep)


class Annotator:
    """The annotated frame (label, score and frames per second drawn on it) that ``--save`` and
    ``--show`` share: drawn once per result however many sinks show it. The frame rate is results
    over the last ``WINDOW_S`` seconds: results come in bursts when frames are classified in
    batches, and a mean of the gaps between them would count each burst's near-zero gaps."""

    WINDOW_S = 1.0

    def __init__(self, top: int, clock: Callable[[], float] = time.perf_counter) -> None:
        self.top = top
        self.fps: float | None = None
        self._clock = clock
        self._times: collections.deque[float] = collections.deque([clock()])
        self._result: Result | None = None
        self._image: np.ndarray | None = None

    def __call__(self, result: Result) -> np.ndarray:
        if result is not self._result:
            t = self._times
            t.append(self._clock())
            while len(t) > 2 and t[-1] - t[1] >= self.WINDOW_S:
                t.popleft()
            self.fps = (len(t) - 1) / max(t[-1] - t[0], 1e-6)
            self._result = result
            self._image = annotate(result.frame.image, result.prediction, self.fps, self.top)
        return self._image


class VideoSink(Sink):
    """``--save OUT.mp4``: the annotated frames as a video (``outputs.VideoOutput``: atomic, checked
    for a full disk). A run that ends before its first frame writes nothing, and says so."""

    def __init__(self, path: Path, fps: float, annotator: Annotator) -> None:
        self.file = VideoOutput(path, fps)
        self.annotator = annotator
        self._closed = False

    def write(self, result: Result) -> None:
        self.file.write(self.annotator(result))

    def close(self, keep: bool = True) -> None:
        if self._closed:
            return
        self._closed = True
        self.file.close(keep=keep)
        if keep and self.file.frames == 0:
            self.warning = f"--save: no frames, {self.file.path} not written"


class WindowSink(Sink):
    """``--show``: the annotated frames in a window; closing it (or q, Esc) ends the run."""

    def __init__(self, display: Display, annotator: Annotator) -> None:
        self.display = display
        self.annotator = annotator

    def write(self, result: Result) -> None:
        if not self.display.show(self.annotator(result)):
            self.stop_requested = True

    def close(self, keep: bool = True) -> None:
        self.display.close()


class LiveSink(Sink):
    """``--serve [HOST:]PORT``: the newest result in a browser (``serve.LiveServer``); closing it
    ends every stream and releases the port."""

    def __init__(self, server: LiveServer, numbered: bool) -> None:
        self.server = server
        self.numbered = numbered

    @classmethod
    def start(cls, address: str, clf: Classifier, src: Source, top: int, allow_host: Sequence[str] = (),
              numbered: bool = True) -> LiveSink:
        """Bind ``address`` and start serving (with a warning when it is open to the network)."""
        info = {
            "model": clf.path.name, "precision": clf.metadata.get("precision", "fp32"),
            "providers": short_names(clf.providers), "classes": clf.class_names,
            "source": src.spec, "source_kind": src.kind, "bars": max(top, min(5, len(clf.class_names))),
        }
        server = LiveServer(address, info=info, top=top, source_state=lambda: src.state,
                            stream_fps=min(src.fps or 25.0, 30.0), allow_hosts=allow_host)
        if server.exposed:
            print(f"warning: --serve {address}: the live view is open to anyone who can reach this machine "
                  "on the network (no password); use 127.0.0.1 to keep it on this machine", file=sys.stderr)
        server.start()
        print(f"edgeclf: live view at {server.url} (Ctrl-C to stop)", file=sys.stderr, flush=True)
        return cls(server, numbered)

    def write(self, result: Result) -> None:
        self.server.publish(result.frame.image, result.prediction, result.frame.source,
                            _frame_number(result, self.numbered), result.latency_ms)

    def serve_until_interrupted(self, source: str) -> None:
        """The source has ended: keep its last result on show until Ctrl-C (or SIGTERM)."""
        self.server.mark_ended()
        print(f"edgeclf: {safe_text(source)}: no more frames; still serving {self.server.url} (Ctrl-C to stop)", file=sys.stderr)
        while True:
            time.sleep(3600)

    def close(self, keep: bool = True) -> None:
        self.server.close()


def file_outputs(options: PredictOptions) -> list[tuple[str, Path]]:
    """The files the options ask for, with their option: ``[("--csv", path), ("--save", path)]``."""
    return [(option, Path(path)) for option, path in (("--csv", options.csv), ("--save", options.save)) if path is not None]


def check_sinks(options: PredictOptions, inputs: Sequence[Path]) -> None:
    """Fail in one line before the model loads (a typo must not cost a run): the output files
    (never one of ``inputs``; see ``outpaths``), the video format, the ``--serve`` address."""
    check_distinct(**{"--csv": options.csv, "--save": options.save})
    for option, path in file_outputs(options):
        check_output(path, option, inputs, options.force)
    if options.save is not None:
        quiet_opencv()  # FFmpeg would print its own lines about the probe
        VideoOutput.check_format(options.save)
    if options.serve is not None:
        parse_address(options.serve)


def open_sinks(options: PredictOptions, clf: Classifier, src: Source, out: Callable[[str], None] = print_line) -> list[Sink]:
    """Every output the options ask for, opened, in the order they are written to: the live view,
    the console, the CSV, the video, the window. If one fails to open, those already open are
    discarded before the error is raised."""
    numbered = src.kind not in ("image", "folder", "glob")  # frames get their number; photos are named by their file
    annotator = Annotator(options.top)
    sinks: list[Sink] = []
    try:
        if options.serve is not None:
            sinks.append(LiveSink.start(options.serve, clf, src, options.top, options.allow_host, numbered))
        # With --serve the page shows the results; stdout then only carries --json.
        if not options.quiet and (options.serve is None or options.json_out):
            sinks.append(ConsoleSink(options.json_out, options.top, numbered, out))
        if options.csv is not None:
            sinks.append(CsvSink(options.csv, clf.class_names, numbered))
        if options.save is not None:
            sinks.append(VideoSink(options.save, src.fps or 10.0, annotator))
        if options.show:
            display = Display()
            if display.available:
                sinks.append(WindowSink(display, annotator))
            else:
                warn(f"--show: {display.reason}; not showing")
    except BaseException:
        for sink in sinks:
            sink.close(keep=False)
        raise
    return sinks
