"""``edgeclf eval MODEL DATA --unknown DIR``: how well a model tells its classes from photos of
none of them, at its operating point and over every threshold."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from edgeclf.errors import EdgeclfError
from edgeclf.metrics import accepted_at, auroc, wilson_interval
from edgeclf.model.batching import in_batches


def scores_of(clf, x: np.ndarray, batch_size: int, progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, unknown scores) of uint8 RGB images through ``clf`` (an edgeclf.Classifier)."""
    probs, scores = [], []

    def run(batch: np.ndarray) -> np.ndarray:
        p, s = clf.classify_arrays(batch)
        probs.append(p)
        scores.append(s)
        return p

    in_batches(run, x, batch_size, progress)
    return np.concatenate(probs), np.concatenate(scores)


def _share(count: int, n: int) -> dict:
    return {"share": count / n if n else 0.0, "count": int(count), "n": int(n), "ci95": list(wilson_interval(int(count), n))}


def unknown_report(clf, known: tuple[np.ndarray, np.ndarray], unknown_probs: np.ndarray, unknown_scores: np.ndarray,
                   labels: np.ndarray, source: Path) -> dict:
    """The open-set figures: ``known`` = (probabilities, scores) of the labelled in-class photos,
    ``labels`` their classes; the unknown photos' probabilities and scores."""
    (kp, ks), rule = known, clf.unknown_rule
    k_unknown = np.array([p.unknown for p in clf.predictions(kp, ks)], bool)
    u_unknown = np.array([p.unknown for p in clf.predictions(unknown_probs, unknown_scores)], bool)
    right = (kp.argmax(1) == labels) & ~k_unknown
    return {
        "unknown_dir": str(source),
        "threshold": rule.threshold,
        "threshold_source": "model" if clf.calibration and rule.threshold == clf.calibration.threshold else "--unknown-threshold",
        "calibration": vars(clf.calibration) if clf.calibration else None,
        "in_class_right_and_accepted": _share(int(right.sum()), len(labels)),
        "in_class_rejected": _share(int(k_unknown.sum()), len(labels)),
        "unknown_rejected": _share(int(u_unknown.sum()), len(u_unknown)),
        "auroc": auroc(ks, unknown_scores),
        "unknown_accepted_at_95": accepted_at(ks, unknown_scores, 0.95),
    }


def plot_scores(path: Path, report: dict, known_scores: np.ndarray, unknown_scores: np.ndarray, model: Path) -> None:
    """The two score distributions and the threshold, as a PNG."""
    from edgeclf.bench.charts import save_png, score_histograms

    u = report
    img = score_histograms(
        f"unknown score: {model.name}", {"in-class photos": known_scores, "photos of none of the classes": unknown_scores},
        u["threshold"], subtitle=f"AUROC {u['auroc']:.4f}; at the threshold: {u['unknown_rejected']['share']:.1%} of the unknowns "
                                 f"rejected, {u['in_class_rejected']['share']:.1%} of the in-class photos")
    save_png(path, img)


class ScoredKeras:
    """A Keras model judged like its export: its own probabilities and embeddings, scored against
    the bank and threshold of the run's ``export/model.onnx`` (in float; the exported model
    multiplies in int8, a few thousandths apart). The interface ``unknown_report`` reads."""

    def __init__(self, km, class_names: list[str], unknown_threshold: float | None = None) -> None:
        from edgeclf.model import metadata as md
        from edgeclf.model.classes import read_parts
        from edgeclf.model.unknown import parse_calibration, rule_for

        export = Path(km.path).parent / "export" / "model.onnx"
        if not export.is_file():
            raise EdgeclfError(f"{km.path}: --unknown judges a Keras model with its export's unknown score; "
                               f"export it first (no {export})")
        parts = read_parts(export)  # the bank, its bonuses and k, checked as add-class checks them
        if md.UNKNOWN not in parts.metadata:
            raise EdgeclfError(f"{export}: has no unknown score; export it again with this edgeclf")
        self.path, self.class_names, self.km, self.parts = Path(km.path), class_names, km, parts
        self.calibration = parse_calibration(parts.metadata[md.UNKNOWN], export)
        self.unknown_rule = rule_for(self.calibration, threshold=unknown_threshold, path=export)

    def classify_arrays(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from edgeclf.model.unknown import knn_distance

        probs, emb = self.km.embed(batch)
        return probs, knn_distance(emb, self.parts.bank, self.parts.k, self.parts.bias)

    def predictions(self, probs: np.ndarray, scores: np.ndarray):
        from edgeclf.model.prediction import Prediction

        return [Prediction.from_probs(p, self.class_names, s, self.unknown_rule) for p, s in zip(probs, scores)]
