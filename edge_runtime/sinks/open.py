"""Opening ``edgeclf predict``'s outputs from its options: ``check_sinks`` before the model loads
(a typo must not cost a run), then ``open_sinks``; ``file_outputs`` names the files they write."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from edgeclf.model.classifier import Classifier
from edgeclf.outfiles import check_distinct, check_output
from edgeclf.predict.options import PredictOptions
from edgeclf.serve.address import parse_address
from edgeclf.sinks.annotation import Annotator
from edgeclf.sinks.base import Sink
from edgeclf.sinks.collect import CollectSink, check_collect
from edgeclf.sinks.console import ConsoleSink, print_line
from edgeclf.sinks.csvfile import CsvSink
from edgeclf.sinks.live import LiveSink
from edgeclf.sinks.video import VideoOutput, VideoSink
from edgeclf.sinks.window import WindowSink
from edgeclf.sources.base import Source
from edgeclf.sources.capture import quiet_opencv


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
    if options.collect is not None:
        check_collect(Path(options.collect), options.source)


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
        if options.show and (window := WindowSink.open(annotator)) is not None:
            sinks.append(window)
        if options.collect is not None:
            sinks.append(CollectSink(Path(options.collect), Path(options.model).name, numbered, options.collect_margin,
                                     options.collect_interval, options.collect_max, int(options.collect_max_mb * 2**20)))
    except BaseException:
        for sink in sinks:
            sink.close(keep=False)
        raise
    return sinks
