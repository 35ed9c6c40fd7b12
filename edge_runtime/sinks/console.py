"""The console: one line per result on stdout, for people (``photo.jpg  cats  0.973``) or, with
``--json``, one JSON object (``record``, also the CSV's row and the live view's ``/api/prediction``)."""

from __future__ import annotations

import json
import sys
from typing import IO, TYPE_CHECKING, Any, Callable

from edgeclf.errors import safe_text
from edgeclf.model.classifier import Prediction
from edgeclf.sinks.base import Sink, frame_number

if TYPE_CHECKING:  # for the hints only (see base)
    from edgeclf.predict.options import Result


def record(source: str, frame: int | None, pred: Prediction, latency_ms: float, top: int = 1) -> dict[str, Any]:
    """The JSON object for one result (``--json``): fixed keys first, then every class's probability.
    ``source`` has control characters and undecodable bytes escaped (see ``errors.safe_text``), so
    it prints as one line and writes to any UTF-8 file."""
    rec: dict[str, Any] = {
        "source": safe_text(source),
        "frame": frame,
        "label": pred.label,
        "index": pred.index,
        "score": round(pred.score, 6),
        "probs": {c: round(p, 6) for c, p in pred.probs.items()},
        "latency_ms": round(latency_ms, 3),
    }
    rec["unknown"] = pred.unknown  # every record has both keys, whatever the model
    rec["unknown_score"] = None if pred.unknown_score is None else round(pred.unknown_score, 6)
    if top > 1:
        rec["top"] = [{"label": c, "score": round(p, 6)} for c, p in pred.top(top)]
    return rec


def human_line(source: str, frame: int | None, pred: Prediction, top: int = 1) -> str:
    """``photos/cat1.jpg  cats  0.973`` (``clip.mp4#12`` for frames; more classes with --top;
    ``fox.jpg  unknown  0.610 (dogs)``: none of the classes, the top one's probability and name)."""
    where = safe_text(source) if frame is None else f"{safe_text(source)}#{frame}"
    if top <= 1:
        return f"{where}  {pred.label}  {pred.score:.3f}" + (f" ({pred.best})" if pred.unknown else "")
    return f"{where}  " + ("unknown: " if pred.unknown else "") + ", ".join(f"{c} {p:.3f}" for c, p in pred.top(top))


def json_line(rec: dict[str, Any]) -> str:
    return json.dumps(rec, ensure_ascii=False)


def print_line(text: str, stream: IO[str] | None = None) -> None:
    stream = stream or sys.stdout
    stream.write(text + "\n")
    stream.flush()


class ConsoleSink(Sink):
    """One line per result on stdout: ``photo.jpg  cats  0.973``, or with ``--json`` one JSON object."""

    def __init__(self, json_out: bool, top: int, numbered: bool, out: Callable[[str], None] = print_line) -> None:
        self.json_out, self.top, self.numbered, self.out = json_out, top, numbered, out

    def write(self, result: Result) -> None:
        frame = frame_number(result, self.numbered)
        if self.json_out:
            self.out(json_line(record(result.frame.source, frame, result.prediction, result.latency_ms, self.top)))
        else:
            self.out(human_line(result.frame.source, frame, result.prediction, self.top))
