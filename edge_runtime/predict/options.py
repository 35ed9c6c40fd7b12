"""What ``edgeclf predict`` is asked to do (``PredictOptions``, with every rule its options follow),
what it gives for each frame (``Result``) and for the run (``Summary``): shared by the loop
(``predict.loop``) and its outputs (``edgeclf.sinks``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgeclf.errors import EdgeclfError
from edgeclf.model.classifier import Prediction
from edgeclf.model.providers import short_names
from edgeclf.model.threads import check_threads
from edgeclf.sinks.rate import RUN_LABEL, mean_rate
from edgeclf.sources.base import Frame
from edgeclf.sources.open import check_timeout


@dataclass
class Result:
    frame: Frame
    prediction: Prediction
    latency_ms: float  # preprocessing + this frame's share of the inference call
    batch: int = 1  # frames in the inference call that classified it


@dataclass
class PredictOptions:
    """What ``edgeclf predict`` is asked to do: one field per option of the command, same names
    (``edgeclf predict --help`` says what each does). Only ``model`` and ``source`` are required."""

    model: Path
    source: str
    # What runs the model.
    provider: str = "auto"
    engine: str = "auto"  # for a folder: locate.ENGINE_CHOICES
    threads: int | None = None
    device_id: int = 0
    strict: bool = False  # also: fail when a file is skipped
    batch: int | None = None  # None: the frames already decoded, up to predict.AUTO_BATCH (CPU)
    smooth: bool = False
    smooth_alpha: float = 0.3
    # When a frame is none of the classes (edgeclf.model.unknown).
    unknown: bool = True
    unknown_threshold: float | None = None
    class_thresholds: dict[str, float] = field(default_factory=dict)
    # What is read.
    every: int = 1
    max_frames: int | None = None
    timeout: float = 10.0
    loop: bool = False
    realtime: bool | None = None  # None: on with --serve
    # Where the results go (sinks.py).
    json_out: bool = False
    top: int = 1
    csv: Path | None = None
    save: Path | None = None
    show: bool = False
    serve: str | None = None
    allow_host: Sequence[str] = ()
    collect: Path | None = None  # keep the frames worth a look (sinks.collect)
    collect_margin: float = 0.2
    collect_interval: float = 1.0
    collect_max: int = 1000
    collect_max_mb: float = 500.0
    force: bool = False  # let --csv/--save replace a file edgeclf did not write (never an input)
    quiet: bool = False  # no per-result lines on stdout (the summary stays on stderr)

    @property
    def needs_images(self) -> bool:
        """True when a sink draws or sends the frames (``--save``, ``--show``, ``--serve``), so the
        decoded images must be kept past classification."""
        return bool(self.save or self.show or self.serve is not None or self.collect is not None)

    def validate(self) -> None:
        """Every rule for these options, in one place: the values, then the outputs (``check_sinks``:
        the files, the video format, the ``--serve`` address). Raises a one-line ``EdgeclfError``
        naming the first option that breaks one. ``run_predict`` calls it before the model loads (a
        typo must not cost a run); only what depends on the model or the source (a ``--batch`` the
        graph or the memory cannot take) waits until they are open. ``Classifier``, ``open_source``
        and ``classify`` check their own arguments again for callers of the Python API."""
        if self.top < 1:
            raise EdgeclfError(f"--top must be at least 1 (got {self.top})")
        if self.batch is not None and self.batch < 1:
            raise EdgeclfError(f"--batch must be at least 1 (got {self.batch})")
        if self.smooth and not 0 < self.smooth_alpha <= 1:  # unused without --smooth, so not checked then
            raise EdgeclfError(f"--smooth-alpha must be in (0, 1] (got {self.smooth_alpha})")
        check_timeout(self.timeout)
        if self.threads is not None:
            check_threads(self.threads)
        for name, p in self.class_thresholds.items():
            if not 0 <= p <= 1:
                raise EdgeclfError(f"--threshold {name}={p}: P must be from 0 to 1")
        if self.collect is not None:
            if not 0 <= self.collect_margin <= 1:
                raise EdgeclfError(f"--collect-margin must be from 0 to 1 (got {self.collect_margin})")
            if not self.collect_interval >= 0:
                raise EdgeclfError(f"--collect-interval must be 0 or more seconds (got {self.collect_interval})")
            if self.collect_max < 1 or not self.collect_max_mb >= 1:
                raise EdgeclfError("--collect-max must be at least 1 and --collect-max-mb at least 1")
        if self.every < 1:
            raise EdgeclfError(f"--every must be at least 1 (got {self.every})")
        if self.max_frames is not None and self.max_frames < 0:
            raise EdgeclfError(f"--max-frames must be 0 or more (got {self.max_frames})")
        from edgeclf.sinks.open import check_sinks  # imported here: edgeclf.sinks imports this module

        source = Path(self.source)
        check_sinks(self, inputs=[self.model] + ([source] if source.is_file() else []))


@dataclass
class Summary:
    """What ``run_predict`` did: frames processed, files skipped, live frames dropped, the start-up
    (the model loaded and warmed, the source and outputs opened) and the run after it, the providers
    that ran; ``line()`` is the summary printed on stderr."""

    processed: int = 0
    skipped: int = 0
    dropped: int = 0
    seconds: float = 0.0  # the run after the start-up: what frames per second are counted over
    latency_ms: list[float] = field(default_factory=list)
    interrupted: bool = False
    providers: list[str] = field(default_factory=list)
    startup_s: float = 0.0

    @property
    def fps(self) -> float:
        """Results per second after the start-up (``rate.mean_rate``; the live figures are over the
        last second): a GPU's seconds of start-up would otherwise hide its speed on a short run."""
        return mean_rate(self.processed, self.seconds)

    def as_dict(self) -> dict[str, Any]:
        lat = np.asarray(self.latency_ms) if self.latency_ms else np.zeros(1)
        return {
            "processed": self.processed, "skipped": self.skipped, "dropped": self.dropped,
            "startup_s": round(self.startup_s, 3), "seconds": round(self.seconds, 3), "fps": round(self.fps, 2),
            "fps_measures": RUN_LABEL,
            "latency_ms_mean": round(float(lat.mean()), 3), "latency_ms_p90": round(float(np.percentile(lat, 90)), 3),
            "interrupted": self.interrupted, "providers": self.providers,
        }

    def line(self) -> str:
        # start-up + run = the total shown, and processed / run = the frames/s shown: figures a
        # reader can check against each other. Latency is per frame, not 1 / rate (the pipeline overlaps).
        text = f"{self.processed} processed, {self.skipped} skipped"
        if self.dropped:
            text += f", {self.dropped} older frames dropped to stay live"
        text += (f" in {_secs(self.startup_s + self.seconds)} s (start-up {_secs(self.startup_s)} s, then "
                 f"{self.fps:.1f} frames/s over {_secs(self.seconds)} s")
        if self.latency_ms:
            text += f"; latency {np.mean(self.latency_ms):.1f} ms/frame"
        text += f") on {', '.join(short_names(self.providers))}"
        return text + (" [interrupted]" if self.interrupted else "")


def _secs(seconds: float) -> str:
    """Seconds to 2 decimals, or 3 significant digits below 1 s, so that a short run's frames/s can
    be checked against its shown time (12 frames in "0.01 s" would not make 1294.6 frames/s)."""
    return f"{seconds:.2f}" if seconds >= 1 else f"{seconds:.3g}"
