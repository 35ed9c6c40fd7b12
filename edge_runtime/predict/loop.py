"""``edgeclf predict MODEL SOURCE``: classify images, folders, videos, cameras and streams.

Stages overlap so throughput approaches the slowest one: for files, a reader thread decodes and
resizes the next frames while the main thread runs the model on the frames already waiting, up to
8 per call on the CPU (or exactly ``--batch``); live sources already decode in their capture
thread, and the main thread always takes the newest frame.
"""

from __future__ import annotations

import os
import queue
import signal
import sys
import threading
import time
from typing import Any, Callable, Iterator

import cv2
import numpy as np

from edgeclf import sysinfo
from edgeclf.errors import EdgeclfError, OutputError, warn
from edgeclf.image import DISPLAY_MAX, fit_within
from edgeclf.model import litert, openvino_engine
from edgeclf.model.classifier import Classifier, Prediction
from edgeclf.model.providers import GPU_PROVIDERS
from edgeclf.outfiles import check_output
from edgeclf.predict.options import PredictOptions, Result, Summary
from edgeclf.predict.smoothing import Smoother
from edgeclf.predict.startup import choose_model, load_classifier
from edgeclf.redact import redact_url
from edgeclf.sinks.base import Sink
from edgeclf.sinks.console import print_line
from edgeclf.sinks.live import LiveSink
from edgeclf.sinks.open import file_outputs, open_sinks
from edgeclf.sources.base import Frame, Source
from edgeclf.sources.files import ImageFiles
from edgeclf.sources.open import open_source

#: Source kinds that are photos, not a stream of frames.
PHOTO_KINDS = ("image", "folder", "glob")


_END = object()


def _silence_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so the interpreter's final flush is quiet."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def _read_ahead(source: Source, clf: Classifier, out: queue.Queue, stop: threading.Event, keep_images: bool = True) -> None:
    """Reader thread: decode and preprocess frames ahead of the model (OpenCV releases the GIL).
    Without ``keep_images`` the decoded image is dropped once preprocessed (only the model's input
    waits in the queue); photos are kept at display size at most (classification sees the full
    image), so a folder of 40-megapixel photos queued ahead of the model stays small."""

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    try:
        for frame in source:
            t0 = time.perf_counter()
            tensor = clf.preprocess(frame.image)
            if not keep_images:
                frame.image = None
            elif isinstance(source, ImageFiles):
                frame.image = fit_within(frame.image, DISPLAY_MAX)
            if not put((frame, tensor, (time.perf_counter() - t0) * 1000)):
                return
        put(_END)
    except BaseException as e:  # handed to the main thread, which raises it
        put(e)


#: Most frames per inference call on a file source by default. The model then runs on the frames
#: the reader has already decoded and never waits for more, so batches form only when the main
#: thread (inference, then the outputs) is the slower stage, which is when they pay: a call's fixed
#: costs (waking the worker threads, layers too small to split across them) are paid once per
#: batch, leaving the reader more of the cores
#: (int8 EfficientNet-Lite0, 640x480 video, 2 cores: 514 frames/s against 377 one frame per call;
#: benchmarks/results/pipeline.md).
AUTO_BATCH = 8
#: ... as long as the frames held for it stay under this and an eighth of the memory available
#: (frames kept for --save are 6 MB each at 1080p, 25 MB at 4K; a Pi Zero 2 has 512 MB in all).
AUTO_BATCH_BYTES = 256 * 2**20


def frames_held(batch: int) -> int:
    """Frames in memory at once for a batch size: the read-ahead queue, the batch being gathered
    and its stacked copy."""
    return max(4, 2 * batch) + 2 * batch


def auto_batch(clf: Classifier, src: Source, keep_images: bool) -> int:
    """The default ``--batch`` for a file source: up to ``AUTO_BATCH`` frames on the CPU, the
    frames held and the run's own memory (``Classifier.check_batch``'s estimate) each within the
    bound above; 1 on a GPU provider (TensorRT builds an engine for every new range of batch
    sizes: minutes each on a Jetson), on LiteRT and OpenVINO (a new batch size builds a new
    interpreter or compiled model: varying sizes would keep rebuilding) and for a graph fixed at one image."""
    if src.live or clf.max_batch == 1 or clf.providers[0] in (*GPU_PROVIDERS, litert.ENGINE, openvino_engine.ENGINE):
        return 1
    per_frame, per_run = _frame_bytes(clf, src, keep_images), clf.run_bytes_per_image()
    budget = min(AUTO_BATCH_BYTES, sysinfo.available_memory_bytes() // 8)
    return next((b for b in range(AUTO_BATCH, 1, -1)
                 if frames_held(b) * per_frame <= budget and b * per_run <= budget), 1)


def classify(clf: Classifier, source: Source, batch: int | None = None, smooth: Smoother | None = None,
             keep_images: bool = True) -> Iterator[Result]:
    """Results for every frame ``source`` gives, in order. File sources are read ahead in a thread;
    each inference call takes exactly ``batch`` frames (the last call fewer), or by default (None)
    the frames already waiting, up to ``auto_batch``. Live sources: one newest frame at a time.
    Without ``keep_images``, results of file sources carry no image (``frame.image`` is None)."""
    if batch is not None and batch < 1:  # for callers of the Python API (predict's options are validated already)
        raise EdgeclfError(f"--batch must be at least 1 (got {batch})")
    if source.live:
        yield from _classify_live(clf, source, smooth)
    else:
        yield from _classify_read_ahead(clf, source, batch, smooth, keep_images)


def _classify_live(clf: Classifier, source: Source, smooth: Smoother | None) -> Iterator[Result]:
    """One frame per call, as the capture thread gives them (it keeps only the newest)."""
    for frame in source:
        t0 = time.perf_counter()
        tensor = clf.preprocess(frame.image)
        yield from _classified(clf, [(frame, tensor, (time.perf_counter() - t0) * 1000)], smooth)


def _classify_read_ahead(clf: Classifier, source: Source, batch: int | None, smooth: Smoother | None,
                         keep_images: bool) -> Iterator[Result]:
    """A file source: a reader thread decodes ahead while the model runs on the frames waiting."""
    fill = batch is not None  # a given --batch is filled (steady shapes); the default takes what is there
    most = batch if fill else auto_batch(clf, source, keep_images)
    q: queue.Queue = queue.Queue(maxsize=max(4, 2 * most))
    stop = threading.Event()
    reader = threading.Thread(target=_read_ahead, args=(source, clf, q, stop, keep_images), name="reader", daemon=True)
    reader.start()
    try:
        with clf.paced_by_reader():
            for items in _batches(q, most, fill):
                yield from _classified(clf, items, smooth)
    finally:
        stop.set()
        reader.join(timeout=5)


def _batches(q: queue.Queue, most: int, fill: bool) -> Iterator[list[tuple[Frame, np.ndarray, float]]]:
    """The reader's frames in lists of at most ``most``: exactly ``most`` when ``fill`` (the last list
    fewer), else those already waiting (at least one). The reader's error, if it ends with one, is
    raised once the frames before it are out."""
    end: object = None  # _END, or the reader's error
    while end is None:
        items = []
        while len(items) < most:
            try:
                item = q.get(block=fill or not items)
            except queue.Empty:
                break
            if item is _END or isinstance(item, BaseException):
                end = item
                break
            items.append(item)
        if items:
            yield items
    if isinstance(end, BaseException):
        raise end


def _classified(clf: Classifier, items: list[tuple[Frame, np.ndarray, float]], smooth: Smoother | None) -> Iterator[Result]:
    """The results of one inference call on ``items`` (frame, model input, preprocessing ms): each
    frame's latency is its preprocessing plus its share of the call."""
    t0 = time.perf_counter()
    probs, scores = clf.classify_arrays(np.stack([t for _, t, _ in items]))
    share = (time.perf_counter() - t0) * 1000 / len(items)
    for i, ((frame, _, prep_ms), p) in enumerate(zip(items, probs)):
        s = None if scores is None else scores[i]
        if smooth is not None:
            p, s = smooth(p, s)
        yield Result(frame, Prediction.from_probs(p, clf.class_names, s, clf.unknown_rule), prep_ms + share, len(items))


class _DeferCtrlC:
    """Hold Ctrl-C (and SIGTERM) while one result is written to every output, so stdout, the CSV
    and the video agree on what was processed; the interrupt is raised right after. (Main thread
    only: Python delivers signals there.)"""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.active = threading.current_thread() is threading.main_thread()
        self.pending = False

    def _handler(self, signum, frame) -> None:
        self.pending = True

    def __enter__(self) -> "_DeferCtrlC":
        if self.active:
            self._old = [signal.signal(s, self._handler) for s in self.SIGNALS]
        return self

    def __exit__(self, *exc) -> None:
        if self.active:
            for s, old in zip(self.SIGNALS, self._old):
                signal.signal(s, old)
            if self.pending:
                self.pending = False
                raise KeyboardInterrupt


def _frame_bytes(clf: Classifier, src: Source, keep_images: bool) -> int:
    """Bytes one waiting frame holds: the model's input, plus the decoded frame where it is kept
    for display (a video's frame size; photos at display size)."""
    per_frame = clf.size[0] * clf.size[1] * 3 * np.dtype(clf.input_dtype).itemsize
    if keep_images:
        if src.kind == "video" and hasattr(src, "cap"):
            per_frame += int(src.cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0) * int(src.cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0) * 3
        elif isinstance(src, ImageFiles):
            per_frame += DISPLAY_MAX * DISPLAY_MAX * 3
    return per_frame


def check_batch_memory(batch: int, clf: Classifier, src: Source, keep_images: bool) -> None:
    """A one-line error when ``batch`` frames (and the ``2 * batch`` read ahead of them) would need
    more than half of the memory available."""
    per_frame = _frame_bytes(clf, src, keep_images)
    held = frames_held(batch)
    budget = sysinfo.available_memory_bytes() // 2
    if held * per_frame > budget:
        most = max(1, budget // per_frame // 4)
        raise EdgeclfError(f"--batch {batch}: would hold about {held * per_frame / 2**30:.1f} GiB of frames, more than half "
                           f"of the {2 * budget / 2**30:.1f} GiB of memory available; use --batch {most} or less")


def _open_checked_source(opts: PredictOptions, clf: Classifier) -> Source:
    """The source, opened, once no output would replace a file of it and its batches fit in memory."""
    realtime = opts.serve is not None if opts.realtime is None else opts.realtime
    src = open_source(opts.source, every=opts.every, max_frames=opts.max_frames, timeout=opts.timeout,
                      loop=opts.loop, realtime=realtime)
    try:
        if isinstance(src, ImageFiles) and src.kind != "image":  # an output must not replace a file of the folder
            for option, path in file_outputs(opts):
                if path.exists():
                    check_output(path, option, src.paths, opts.force)
        if not src.live and opts.batch is not None:
            check_batch_memory(opts.batch, clf, src, opts.needs_images)
    except BaseException:
        src.close()
        raise
    return src


def run_predict(opts: PredictOptions, out: Callable[[str], None] = print_line) -> Summary:
    """The ``edgeclf predict`` command: source -> classify -> every sink (see ``edgeclf.sinks``) ->
    summary on stderr. Ctrl-C or SIGTERM stops cleanly with every output flushed (the caller exits
    130 when ``summary.interrupted``); an error discards the files (no half-written file); a full
    disk stops the run, keeps the outputs that did not fail, then raises ``OutputError``.

    ``out``: where the console sink's lines go (stdout). With ``serve``, the page stays up after the
    source ends, until Ctrl-C."""
    asked = opts
    opts, for_gpu = choose_model(opts)  # a run folder or .keras file: its export, or the command that makes it
    opts.validate()  # before the model loads: a typo must not cost a run
    started = time.perf_counter()  # the start-up: the model loaded and warmed, the source and outputs opened
    clf, opts = load_classifier(opts, asked, for_gpu)
    src = _open_checked_source(opts, clf)
    _warn_ignored_options(opts, src)
    smoother = Smoother(opts.smooth_alpha) if opts.smooth and src.kind not in PHOTO_KINDS else None
    summary = Summary(providers=clf.providers)
    sinks, output_error = _classify_into_sinks(opts, clf, src, smoother, summary, out, started)
    if output_error is not None:  # the one error line says how far it got
        raise output_error
    for sink in sinks:
        if sink.warning:
            warn(sink.warning)
    print(f"edgeclf: {summary.line()}", file=sys.stderr)
    _check_something_done(opts, summary)
    if opts.strict and summary.skipped:
        raise EdgeclfError(f"{summary.skipped} file(s) skipped (--strict)")
    return summary


def _check_something_done(opts: PredictOptions, summary: Summary) -> None:
    """A run that classified nothing (an unreadable image, a folder of unreadable files, a video
    without a frame) fails, so that a script does not take it for a success; Ctrl-C and
    ``--max-frames 0`` are asked for."""
    if summary.processed == 0 and not summary.interrupted and opts.max_frames != 0:
        why = f"{summary.skipped} file(s) skipped, none readable" if summary.skipped else "it gave no image or frame"
        raise EdgeclfError(f"{redact_url(opts.source)}: nothing was classified ({why})")


def _warn_ignored_options(opts: PredictOptions, src: Source) -> None:
    """A warning for each option given that does not apply to this kind of source."""
    if opts.smooth and src.kind in PHOTO_KINDS:
        warn("--smooth applies to videos, cameras and streams; ignored for images")
    if opts.loop and src.kind != "video":
        warn("--loop applies to video files; ignored")


def _classify_into_sinks(opts: PredictOptions, clf: Classifier, src: Source, smoother: Smoother | None,
                         summary: Summary, out: Callable[[str], None], started: float) -> tuple[list[Sink], OutputError | None]:
    """Every result of ``src`` into every sink, until the source ends (then ``--serve`` stays up),
    a sink asks to stop, Ctrl-C or SIGTERM, or a full disk (that error is returned, not raised, so
    the outputs that did not fail are kept first). Closes the source and the sinks and fills in
    ``summary``: the start-up since ``started`` ends once the sinks are open, the run's time
    (what frames per second are counted over) begins there. An error raised discards the sinks' files."""
    sinks: list[Sink] = []
    results = None
    t_start: float | None = None
    t_end: float | None = None
    failed = True  # until the run ends in a way that keeps its outputs
    output_error: OutputError | None = None
    try:
        sinks = open_sinks(opts, clf, src, out)
        t_start = time.perf_counter()
        summary.startup_s = t_start - started
        batch = 1 if src.live else opts.batch  # batching would make live frames wait for each other; None: automatic
        results = classify(clf, src, batch=batch, smooth=smoother, keep_images=opts.needs_images)
        try:
            _write_results(results, sinks, summary)
            t_end = time.perf_counter()
            for sink in sinks:
                if isinstance(sink, LiveSink):
                    sink.serve_until_interrupted(src.spec)
        except KeyboardInterrupt:
            summary.interrupted = True
        except OutputError as e:  # a full disk: stop, keep the outputs that did not fail, then report
            output_error = e
            summary.interrupted = True
        except BrokenPipeError:  # `edgeclf predict ... | head`: the reader has what it wanted
            _silence_stdout()
        failed = False
    finally:
        if results is not None:
            results.close()  # stops the reader thread before its capture is released
        src.close()
        now = time.perf_counter()
        summary.seconds = (t_end or now) - (t_start or now)
        summary.skipped = len(src.skipped)
        summary.dropped = src.dropped
        output_error = output_error or _close_sinks(sinks, keep=not failed)
    return sinks, output_error


def _write_results(results: Iterator[Result], sinks: list[Sink], summary: Summary) -> None:
    """Each result to every sink, counted, until the results end or a sink asks to stop."""
    defer = _DeferCtrlC()
    for res in results:
        with defer:
            summary.processed += 1
            summary.latency_ms.append(res.latency_ms)
            for sink in sinks:
                sink.write(res)
        if any(sink.stop_requested for sink in sinks):
            break


def _close_sinks(sinks: list[Sink], keep: bool) -> OutputError | None:
    """Close every sink: an error leaves no half-written file (``keep`` False); Ctrl-C keeps what was
    done. Returns the first ``OutputError`` (the disk filled up as a file was finished)."""
    error: OutputError | None = None
    for sink in sinks:
        try:
            sink.close(keep=keep)
        except OutputError as e:
            error = error or e
    return error
