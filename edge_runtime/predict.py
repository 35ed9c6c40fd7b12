"""``edgeclf predict MODEL SOURCE``: classify images, folders, videos, cameras and streams.

Stages overlap so throughput approaches the slowest one: for files, a reader thread decodes and
resizes the next frames while the main thread runs the model (in batches with ``--batch``); live
sources already decode in their capture thread, and the main thread always takes the newest frame.
"""

from __future__ import annotations

import os
import queue
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import cv2
import numpy as np

from . import sysinfo
from .classifier import Classifier, Prediction
from .errors import EdgeclfError, OutputError, safe_text, warn
from .outpaths import check_distinct, check_output
from .outputs import CsvOutput, Display, VideoOutput, annotate, human_line, json_line, print_line, record
from .providers import short_names
from .serve import LiveServer, parse_address
from .sources import Frame, ImageFiles, Source, check_timeout, open_source, quiet_opencv

#: Photos kept for display (``--save``, ``--show``, ``--serve``) are scaled down to this many pixels
#: on their longer side once classified, so a folder of 40-megapixel photos queued ahead of the
#: model stays small. (Classification always sees the full image.)
DISPLAY_MAX = 1920


@dataclass
class Result:
    frame: Frame
    prediction: Prediction
    latency_ms: float  # preprocessing + this frame's share of the inference call


class Smoother:
    """Exponential moving average of the probabilities, so a live label does not flicker:
    ``avg = alpha * newest + (1 - alpha) * avg``."""

    def __init__(self, alpha: float) -> None:
        if not 0 < alpha <= 1:
            raise EdgeclfError(f"--smooth-alpha must be in (0, 1] (got {alpha})")
        self.alpha = alpha
        self.avg: np.ndarray | None = None

    def __call__(self, probs: np.ndarray) -> np.ndarray:
        probs = np.asarray(probs, np.float64)
        self.avg = probs if self.avg is None else self.alpha * probs + (1 - self.alpha) * self.avg
        return self.avg


_END = object()


def _silence_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so the interpreter's final flush is quiet."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def _display_copy(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    if max(h, w) <= DISPLAY_MAX:
        return image
    scale = DISPLAY_MAX / max(h, w)
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def _read_ahead(source: Source, clf: Classifier, out: queue.Queue, stop: threading.Event, keep_images: bool = True) -> None:
    """Reader thread: decode and preprocess frames ahead of the model (OpenCV releases the GIL).
    Without ``keep_images`` the decoded image is dropped once preprocessed (only the model's input
    waits in the queue); photos are kept at display size at most."""

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
                frame.image = _display_copy(frame.image)
            if not put((frame, tensor, (time.perf_counter() - t0) * 1000)):
                return
        put(_END)
    except BaseException as e:  # handed to the main thread, which raises it
        put(e)


def classify(clf: Classifier, source: Source, batch: int = 1, smooth: Smoother | None = None,
             keep_images: bool = True) -> Iterator[Result]:
    """Results for every frame ``source`` gives, in order. File sources are read ahead in a thread
    and classified ``batch`` at a time; live sources one newest frame at a time. Without
    ``keep_images``, results of file sources carry no image (``frame.image`` is None)."""
    if batch < 1:
        raise EdgeclfError(f"--batch must be at least 1 (got {batch})")

    def results(items: list[tuple[Frame, np.ndarray, float]]) -> Iterator[Result]:
        t0 = time.perf_counter()
        probs = clf.predict_arrays(np.stack([t for _, t, _ in items]))
        share = (time.perf_counter() - t0) * 1000 / len(items)
        for (frame, _, prep_ms), p in zip(items, probs):
            if smooth is not None:
                p = smooth(p)
            yield Result(frame, Prediction.from_probs(p, clf.class_names), prep_ms + share)

    if source.live:
        for frame in source:
            t0 = time.perf_counter()
            tensor = clf.preprocess(frame.image)
            yield from results([(frame, tensor, (time.perf_counter() - t0) * 1000)])
        return

    q: queue.Queue = queue.Queue(maxsize=max(4, 2 * batch))
    stop = threading.Event()
    reader = threading.Thread(target=_read_ahead, args=(source, clf, q, stop, keep_images), name="reader", daemon=True)
    reader.start()
    try:
        done = False
        while not done:
            items = []
            while len(items) < batch:
                item = q.get()
                if item is _END:
                    done = True
                    break
                if isinstance(item, BaseException):
                    raise item
                items.append(item)
            if items:
                yield from results(items)
    finally:
        stop.set()
        reader.join(timeout=5)


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


def check_batch_memory(batch: int, clf: Classifier, src: Source, keep_images: bool) -> None:
    """A one-line error when ``batch`` frames (and the ``2 * batch`` read ahead of them) would need
    more than half of the memory available: bytes per frame are the model's input, plus the decoded
    frame where it is kept for display (a video's frame size; photos at display size)."""
    per_frame = clf.size[0] * clf.size[1] * 3 * np.dtype(clf.input_dtype).itemsize
    if keep_images:
        if src.kind == "video" and hasattr(src, "cap"):
            per_frame += int(src.cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0) * int(src.cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0) * 3
        elif isinstance(src, ImageFiles):
            per_frame += DISPLAY_MAX * DISPLAY_MAX * 3
    held = max(4, 2 * batch) + 2 * batch  # the read-ahead queue, the batch being gathered, its stacked copy
    budget = sysinfo.available_memory_bytes() // 2
    if held * per_frame > budget:
        most = max(1, budget // per_frame // 4)
        raise EdgeclfError(f"--batch {batch}: would hold about {held * per_frame / 2**30:.1f} GiB of frames, more than half "
                           f"of the {2 * budget / 2**30:.1f} GiB of memory available; use --batch {most} or less")


@dataclass
class Summary:
    processed: int = 0
    skipped: int = 0
    dropped: int = 0
    seconds: float = 0.0
    latency_ms: list[float] = field(default_factory=list)
    interrupted: bool = False
    providers: list[str] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        lat = np.asarray(self.latency_ms) if self.latency_ms else np.zeros(1)
        return {
            "processed": self.processed, "skipped": self.skipped, "dropped": self.dropped,
            "seconds": round(self.seconds, 3), "fps": round(self.fps, 2),
            "latency_ms_mean": round(float(lat.mean()), 3), "latency_ms_p90": round(float(np.percentile(lat, 90)), 3),
            "interrupted": self.interrupted, "providers": self.providers,
        }

    def line(self) -> str:
        text = f"{self.processed} processed, {self.skipped} skipped"
        if self.dropped:
            text += f", {self.dropped} older frames dropped to stay live"
        text += f" in {self.seconds:.2f} s ({self.fps:.1f} frames/s"
        if self.latency_ms:
            text += f", {np.mean(self.latency_ms):.1f} ms/frame"
        text += f") on {', '.join(short_names(self.providers))}"
        return text + (" [interrupted]" if self.interrupted else "")


def run_predict(
    model: Path,
    source: str,
    *,
    json_out: bool = False,
    csv: Path | None = None,
    top: int = 1,
    show: bool = False,
    save: Path | None = None,
    smooth: bool = False,
    smooth_alpha: float = 0.3,
    batch: int = 1,
    every: int = 1,
    max_frames: int | None = None,
    provider: str = "auto",
    threads: int | None = None,
    device_id: int = 0,
    strict: bool = False,
    timeout: float = 10.0,
    serve: str | None = None,
    loop: bool = False,
    realtime: bool | None = None,
    force: bool = False,
    allow_host: Sequence[str] = (),
    quiet: bool = False,
    out: Callable[[str], None] = print_line,
) -> Summary:
    """The ``edgeclf predict`` command. Prints one line per result (``--json``: one JSON object)
    and a summary on stderr; Ctrl-C stops cleanly with every output flushed (exit 130).

    ``serve``: also show the results live in a browser at ``[HOST:]PORT`` (see ``serve.py``); the
    page stays up after the source ends, until Ctrl-C. ``loop``/``realtime``: replay a video file
    / play it at its own frame rate (``realtime`` defaults to on with ``serve``). ``force``: let
    ``csv``/``save`` replace an existing file edgeclf did not write (never an input).
    ``allow_host``: more Host names the live view answers to (see ``serve.py``)."""
    if top < 1:
        raise EdgeclfError(f"--top must be at least 1 (got {top})")
    if batch < 1:
        raise EdgeclfError(f"--batch must be at least 1 (got {batch})")
    smoother = Smoother(smooth_alpha) if smooth else None  # validates alpha before the slow parts
    check_timeout(timeout)
    # Outputs are checked before the model loads: a typo must not cost a run.
    check_distinct(**{"--csv": csv, "--save": save})
    inputs = [model] + ([Path(source)] if Path(source).is_file() else [])
    for option, path in (("--csv", csv), ("--save", save)):
        if path is not None:
            check_output(path, option, inputs, force)
    if save is not None:
        quiet_opencv()  # FFmpeg would print its own lines about the probe
        VideoOutput.check_format(save)
    if serve is not None:
        parse_address(serve)  # a typo fails before the model loads
        quiet = quiet or not json_out  # the page shows the results; stdout only carries --json
    if realtime is None:
        realtime = serve is not None
    # No busy-waiting workers: they would take the core the reader/capture thread decodes on
    # (measured: int8, 2 threads, video pipeline 690 frames/s without spinning, 525 with).
    clf = Classifier(model, provider=provider, threads=threads, device_id=device_id, strict=strict, spin=False)
    clf.check_batch(batch)
    src = open_source(source, every=every, max_frames=max_frames, timeout=timeout, loop=loop, realtime=realtime)
    keep_images = bool(save or show or serve is not None)
    try:
        if isinstance(src, ImageFiles) and src.kind != "image":  # an output must not replace a file of the folder
            for option, path in (("--csv", csv), ("--save", save)):
                if path is not None and Path(path).exists():
                    check_output(path, option, src.paths, force)
        if not src.live:
            check_batch_memory(batch, clf, src, keep_images)
    except BaseException:
        src.close()
        raise
    if smoother is not None and src.kind in ("image", "folder", "glob"):
        warn("--smooth applies to videos, cameras and streams; ignored for images")
        smoother = None
    if loop and src.kind != "video":
        warn("--loop applies to video files; ignored")
    if src.live and batch > 1:
        batch = 1  # batching would make live frames wait for each other
    summary = Summary(providers=clf.providers)
    outputs: list[Any] = []
    display = None
    server: LiveServer | None = None
    t_start = time.perf_counter()
    t_end: float | None = None
    failed = True
    results = None
    output_error: OutputError | None = None
    try:
        if serve is not None:
            server = _start_server(serve, clf, src, top, allow_host)
        csv_out = CsvOutput(csv, clf.class_names) if csv else None
        if csv_out:
            outputs.append(csv_out)
        video_out = VideoOutput(save, src.fps or 10.0) if save else None
        if video_out:
            outputs.append(video_out)
        if show:
            display = Display()
            if not display.available:
                warn(f"--show: {display.reason}; not showing")
                display = None
        frame_numbers = src.kind not in ("image", "folder", "glob")
        fps_avg: float | None = None
        last_t = time.perf_counter()
        results = classify(clf, src, batch=batch, smooth=smoother, keep_images=keep_images)
        try:
            defer = _DeferCtrlC()
            for res in results:
                frame = res.frame.index if frame_numbers else None
                rec = record(res.frame.source, frame, res.prediction, res.latency_ms, top)
                img = None
                if video_out or display:
                    now = time.perf_counter()
                    inst = 1.0 / max(now - last_t, 1e-6)
                    fps_avg = inst if fps_avg is None else 0.9 * fps_avg + 0.1 * inst
                    last_t = now
                    img = annotate(res.frame.image, res.prediction, fps_avg, top)
                if server:
                    server.publish(res.frame.image, res.prediction, res.frame.source, frame, res.latency_ms)
                with defer:
                    summary.processed += 1
                    summary.latency_ms.append(res.latency_ms)
                    if not quiet:
                        out(json_line(rec) if json_out else human_line(res.frame.source, frame, res.prediction, top))
                    if csv_out:
                        csv_out.write(rec)
                    if video_out:
                        video_out.write(img)
                if display and not display.show(img):
                    break
            t_end = time.perf_counter()
            if server:
                server.mark_ended()
                print(f"edgeclf: {safe_text(source)}: no more frames; still serving {server.url} (Ctrl-C to stop)", file=sys.stderr)
                while True:
                    time.sleep(3600)
        except KeyboardInterrupt:
            summary.interrupted = True
        except OutputError as e:  # a full disk: stop, keep the outputs that did not fail, then report
            output_error = e
            summary.interrupted = True
        except BrokenPipeError:  # `edgeclf predict ... | head`: the reader has what it wanted
            _silence_stdout()
        failed = False
    except BaseException:
        failed = True
        raise
    finally:
        if results is not None:
            results.close()  # stops the reader thread before its capture is released
        src.close()
        if server:
            server.close()
        summary.seconds = (t_end or time.perf_counter()) - t_start
        summary.skipped = len(src.skipped)
        summary.dropped = src.dropped
        for o in outputs:
            try:
                o.close(keep=not failed)  # an error leaves no half-written file; Ctrl-C keeps what was done
            except OutputError as e:  # the disk filled up as the file was finished
                output_error = output_error or e
        if display:
            display.close()
    if output_error is not None:  # the one error line says how far it got
        raise output_error
    if save and video_out and video_out.frames == 0:
        warn(f"--save: no frames, {save} not written")
    print(f"edgeclf: {summary.line()}", file=sys.stderr)
    if strict and summary.skipped:
        raise EdgeclfError(f"{summary.skipped} file(s) skipped (--strict)")
    return summary


def _start_server(address: str, clf: Classifier, src: Source, top: int, allow_host: Sequence[str] = ()) -> LiveServer:
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
    return server
