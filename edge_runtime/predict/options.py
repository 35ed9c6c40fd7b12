"""What ``edgeclf predict`` is asked to do (``PredictOptions``) and what it gives for each frame
(``Result``): shared by the loop (``predict.py``) and its outputs (``sinks.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from edgeclf.model.classifier import Prediction
from edgeclf.sources.open import Frame


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
    threads: int | None = None
    device_id: int = 0
    strict: bool = False  # also: fail when a file is skipped
    batch: int | None = None  # None: the frames already decoded, up to predict.AUTO_BATCH (CPU)
    smooth: bool = False
    smooth_alpha: float = 0.3
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
    force: bool = False  # let --csv/--save replace a file edgeclf did not write (never an input)
    quiet: bool = False  # no per-result lines on stdout (the summary stays on stderr)

    @property
    def needs_images(self) -> bool:
        """True when a sink draws or sends the frames (``--save``, ``--show``, ``--serve``), so the
        decoded images must be kept past classification."""
        return bool(self.save or self.show or self.serve is not None)
