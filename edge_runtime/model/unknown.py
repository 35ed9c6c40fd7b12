"""When a frame is none of the model's classes: the rule the runtime applies to each prediction.

A model exported by edgeclf outputs, beside the probabilities, an ``unknown_score`` (how far the
frame's embedding lies from the training photos'; see export/unknown.py) and its metadata
carries the threshold export calibrated on held-back in-class photos. A frame is ``unknown``
when its score is above the threshold (``--unknown-threshold`` overrides it), or when its top
class's probability is below that class's ``--threshold CLASS=P``. ``--no-unknown`` turns both off.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from edgeclf.errors import EdgeclfError, first_line, safe_text
from edgeclf.model import metadata as md

#: The label a frame gets when it is none of the classes.
UNKNOWN_LABEL = "unknown"
_MAX_TEXT = 4096  # bytes of the metadata entry: a few numbers


@dataclass(frozen=True)
class Calibration:
    """What export recorded about the operating point (metadata ``unknown``)."""

    threshold: float
    method: str = "knn-cosine"
    k: int = 0
    target_reject: float | None = None
    calibrated_on: int = 0
    rejected_in_class: float | None = None


def parse_calibration(text: str, path: object = "<model>") -> Calibration:
    """The ``unknown`` metadata entry, checked; a one-line EdgeclfError naming the file otherwise."""
    where = f"{path}: metadata {md.UNKNOWN}"
    if len(text) > _MAX_TEXT:
        raise EdgeclfError(f"{where} is {len(text)} characters long (at most {_MAX_TEXT})")
    try:
        d = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise EdgeclfError(f"{where} is not valid JSON ({first_line(e, 80)})") from None
    if not isinstance(d, dict):
        raise EdgeclfError(f"{where} is a JSON {type(d).__name__}, not an object")
    thr = d.get("threshold")
    if isinstance(thr, bool) or not isinstance(thr, (int, float)) or not math.isfinite(thr):
        raise EdgeclfError(f"{where}: threshold {safe_text(str(thr))[:40]!r} is not a finite number")

    def number(key: str, kind=float):
        v = d.get(key)
        return kind(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None

    return Calibration(float(thr), safe_text(str(d.get("method", "")))[:40], number("k", int) or 0,
                       number("target_reject"), number("calibrated_on", int) or 0, number("rejected_in_class"))


def parse_class_thresholds(items: Sequence[str]) -> dict[str, float]:
    """``--threshold CLASS=P`` options as {class: P}; a one-line error for a malformed one (whether
    the model has the class is checked when it loads)."""
    out: dict[str, float] = {}
    for item in items:
        name, sep, value = item.rpartition("=")
        if not sep or not name:
            raise EdgeclfError(f"--threshold {item!r}: expected CLASS=P, e.g. cats=0.8")
        try:
            p = float(value)
        except ValueError:
            raise EdgeclfError(f"--threshold {item!r}: {value!r} is not a number") from None
        if not 0 <= p <= 1:
            raise EdgeclfError(f"--threshold {item!r}: P must be from 0 to 1")
        out[name] = p
    return out


@dataclass(frozen=True)
class UnknownRule:
    """Decides ``unknown`` for one frame from its probabilities and its score.

    ``threshold``: the score above which a frame is unknown (None: the score is not used);
    ``class_thresholds``: {class: the probability its top class needs}."""

    threshold: float | None = None
    class_thresholds: Mapping[str, float] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.threshold is not None or bool(self.class_thresholds)

    def is_unknown(self, label: str, prob: float, score: float | None) -> bool:
        if self.threshold is not None and score is not None and score > self.threshold:
            return True
        need = self.class_thresholds.get(label)
        return need is not None and prob < need


def rule_for(calibration: Calibration | None, *, enabled: bool = True, threshold: float | None = None,
             class_thresholds: Mapping[str, float] | None = None, path: object = "<model>") -> UnknownRule:
    """The rule ``predict`` applies: the model's calibrated threshold unless ``threshold`` overrides
    it, plus the per-class probabilities; nothing with ``enabled`` False. A threshold given for a
    model without an unknown score is a one-line error (it would silently do nothing)."""
    if not enabled:
        return UnknownRule()
    if threshold is not None and calibration is None:
        raise EdgeclfError(f"--unknown-threshold: {path} has no unknown score (export it with this edgeclf to get one)")
    if threshold is not None and not math.isfinite(threshold):
        raise EdgeclfError("--unknown-threshold must be a finite number")
    thr = threshold if threshold is not None else (calibration.threshold if calibration else None)
    return UnknownRule(thr, dict(class_thresholds or {}))


def unit_rows(v: np.ndarray) -> np.ndarray:
    """Each row of ``v`` scaled to length 1 (a zero row stays zero), as the score's graph does."""
    return v / np.sqrt((v * v).sum(1, keepdims=True) + 1e-12)


def knn_distance(embeddings: np.ndarray, bank: np.ndarray, k: int, bias: np.ndarray | None = None) -> np.ndarray:
    """The unknown score in numpy: 1 - the k-th largest cosine similarity (plus each bank row's
    ``bias``) of each embedding to the rows of ``bank``. The model computes it with an int8 bank:
    a few thousandths apart."""
    return nearest_distance(unit_rows(np.asarray(embeddings, np.float32)), unit_rows(np.asarray(bank, np.float32)), k, bias)


def nearest_distance(unit_embeddings: np.ndarray, unit_bank: np.ndarray, k: int, bias: np.ndarray | None = None) -> np.ndarray:
    """``knn_distance`` of rows already scaled to length 1 (a LiteRT model's bank is, once, at load)."""
    # einsum, not @: a matmul goes to OpenBLAS, whose threads then spin beside the interpreter's on a
    # small CPU (measured, Lite0 LiteRT at 2 threads on 2 cores: the score cost 1.1 ms a frame with
    # @ and its p99 went 1.7 -> 6.7 ms; 0.16-0.19 ms with einsum, p99 unchanged)
    sims = np.einsum("ij,kj->ik", unit_embeddings, unit_bank)
    if bias is not None:
        sims = sims + bias
    return (1 - np.partition(sims, -k, axis=1)[:, -k]).astype(np.float32)


def quantize_bank(bank: np.ndarray) -> tuple[np.ndarray, np.float32]:
    """The unknown score's bank as the model multiplies with it: rows normalised, transposed
    [D, M], int8 with one symmetric scale (returned with it). Export and add-class both use it."""
    unit = unit_rows(np.asarray(bank, np.float32))
    scale = np.float32(max(float(np.abs(unit).max()), 1e-12) / 127)
    return np.round(unit / scale).astype(np.int8).T.copy(), scale
