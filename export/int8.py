"""Choosing the int8 model and judging it: each calibration method, 7-bit weights first and full
8-bit ones only when those fail the guard, judged against fp32 on the same photos (the validation
split and, up to 2,000 photos in all, the run's training photos) by a paired comparison whose
uncertainty is taken into account: one photo of 48 cannot decide either way (docs/export.md)."""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort

from edgeclf.metrics import Z95, wilson_interval
from edgeclf.model.session import open_session
from edgeclf.progress import Step

from . import parity, quantize
from .convert import release_memory, set_metadata
from .data import CheckImages, Images
from .onnxrun import latency_ms, predict

SLACK = 1e-12  # a bound equal to its limit passes, whatever the float rounding
# The guard's limits at the default --max-drop (0.01), and how they widen with a larger one:
# with s = max(--max-drop, 0.01), top-1 agreement floor 1 - CHURN_PER_DROP * s (97% at the
# default: int8 may trade a few answers with fp32, not reshuffle them) and mean probability
# change at most PROB_CHANGE_PER_DROP * s (5 points at the default).
DROP_SCALE_FLOOR = 0.01
CHURN_PER_DROP = 3
PROB_CHANGE_PER_DROP = 5
RULE = ("paired on the same photos: rejected when the 95% interval of the accuracy drop lies above --max-drop "
        "(Wilson score interval of the photos fp32 gets right and int8 wrong among those where exactly one is "
        "right, McNemar-style), when that of top-1 agreement lies below the floor, or when that of the mean "
        "largest probability change lies above its limit")


@dataclass
class Judged:
    """The photos every quantized model is judged on against fp32 (the validation split, then the
    run's training photos), with fp32's probabilities on them: computed once per export and shared
    by the int8 ONNX and the LiteRT model, so both are judged against the same figures."""

    labels: np.ndarray  # true classes, validation photos first
    fp32: np.ndarray  # fp32's probabilities [n, classes] on the same photos
    n_val: int
    train: Images  # the training photos among them (empty when run.json records none)

    @property
    def fp32_val(self) -> np.ndarray:
        return self.fp32[: self.n_val]


def judged_photos(fp32_sess: ort.InferenceSession, images: CheckImages, step: Step) -> Judged:
    """fp32's probabilities on the validation split and the judged training photos."""
    val = images.val
    train = images.train if images.train is not None else Images(val.x[:0], [], np.zeros(0, np.int64))
    fp32_val = predict(fp32_sess, val.x, progress=step("validation: fp32", len(val.x)))
    fp32_probs = np.concatenate([fp32_val, predict_or_empty(fp32_sess, train, fp32_val.shape[1], step, "training photos: fp32")])
    return Judged(np.concatenate([val.y, train.y]), fp32_probs, len(val.x), train)


def choose_int8(fp32_bytes: bytes, fp32_sess: ort.InferenceSession, images: CheckImages, judged: Judged,
                calib_method: str, max_drop: float, step: Step, metadata: Callable[[float], dict],
                finish: Callable[[object], None] = lambda proto: None) -> tuple[dict, bytes]:
    """Quantize with each candidate calibration method, keep the best against fp32 on the judged
    photos (passing the guard first, then accuracy, then agreement, then the smaller probability
    change), judge it.

    Returns export.json's ``int8`` entry and the chosen model (``metadata(accuracy)`` in it, the
    accuracy on the validation split). ``finish(proto)`` changes each candidate in place before it
    is judged (the float head)."""
    release_memory()  # what Keras and the parity check left, before calibration's big arrays
    val, train = images.val, judged.train
    acc_fp32 = accuracy(judged.fp32_val, val.y)
    methods = list(quantize.METHODS) if calib_method == "auto" else [calib_method]
    with tempfile.TemporaryDirectory(prefix="edgeclf-quant-") as tmp:
        tmp = Path(tmp)
        (tmp / "fp32.onnx").write_bytes(fp32_bytes)
        step("preparing the graph for quantization", 1)
        quantize.prepare(tmp / "fp32.onnx", tmp / "prepared.onnx")
        # 7-bit weights first (the same results on every CPU family); full 8-bit ones only when
        # those fail the guard (exact on x86 with VNNI and ARM only: see quantize.FULL_RANGE_CPUS).
        candidates = _candidates(tmp, images, judged, methods, True, max_drop, step, finish)
        best = _best(candidates)
        if not candidates[best]["guard"]["accepted"]:
            candidates.update(_candidates(tmp, images, judged, methods, False, max_drop, step, finish))
            best = _best(candidates)
        chosen = candidates[best]
        proto = onnx.load(str(chosen["path"]))
    set_metadata(proto, metadata(chosen["accuracy"]))
    quantize.mark_target(proto, chosen["reduce_range"])
    int8_bytes = proto.SerializeToString()

    step("latency: fp32 vs int8, interleaved", 1)
    lat = latency_ms({"fp32": fp32_sess, "int8": open_session(int8_bytes)}, val.x[0])
    measured = {"n_calib": int(len(images.calib.x)), "n_eval": int(len(val.x)), "accuracy_fp32": acc_fp32,
                "n_training": int(len(train.x)), "n_training_calibrated": int(images.n_train_calibrated),
                "size_ratio": len(int8_bytes) / len(fp32_bytes), "latency_ms": lat}
    return _result(best, candidates, measured, max_drop), int8_bytes


def predict_or_empty(sess, images: Images, n_classes: int, step: Step, what: str) -> np.ndarray:
    """``predict`` on ``images`` (an onnxruntime or LiteRT session); [0, n_classes] when there are none."""
    if len(images.x) == 0:
        return np.zeros((0, n_classes), np.float32)
    return predict(sess, images.x, progress=step(what, len(images.x)))


def _candidates(tmp: Path, images: CheckImages, judged: Judged, methods: list[str], reduce_range: bool,
                max_drop: float, step: Step, finish: Callable[[object], None]) -> dict[str, dict]:
    """One int8 model per calibration method, at 7-bit (``reduce_range``) or 8-bit weights, with
    its figures on the validation split and the guard's on every judged photo."""
    val, calib, train = images.val, images.calib, judged.train
    found = {}
    for m in methods:
        key = m if reduce_range else f"{m}, 8-bit weights"
        path = tmp / f"int8-{m}-{int(reduce_range)}.onnx"
        quantize.quantize(tmp / "prepared.onnx", path, calib.x, m, reduce_range,
                          progress=step(f"calibrating ({key})", quantize.calibration_passes(m) * len(calib.x)))
        proto = onnx.load(str(path))
        finish(proto)
        onnx.save(proto, str(path))
        del proto
        sess = open_session(path)
        probs = predict(sess, val.x, progress=step(f"validation: int8 ({key})", len(val.x)))
        all_probs = np.concatenate([probs, predict_or_empty(sess, train, probs.shape[1], step, f"training photos: int8 ({key})")])
        del sess
        release_memory()  # the calibrator's and the candidate's sessions, before the next candidate
        fp32_val = judged.fp32_val
        found[key] = {
            "accuracy": accuracy(probs, val.y),
            "top1_agreement": float((probs.argmax(1) == fp32_val.argmax(1)).mean()),
            "mean_abs_diff": parity.compare(fp32_val, probs)["mean_abs_diff"],
            "reduce_range": reduce_range,
            "guard": compare(judged.fp32, all_probs, judged.labels, max_drop),
            "path": path,
        }
    return found


def _best(candidates: dict[str, dict]) -> str:
    """Passing the guard first, then accuracy on the judged photos, agreement with fp32, the
    smaller probability change."""
    def key(k: str) -> tuple:
        g = candidates[k]["guard"]
        return g["accepted"], g["accuracy_int8"], g["top1_agreement"], -g["mean_prob_change"]

    return max(candidates, key=key)


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    return float((probs.argmax(1) == labels).mean())


# ------------------------------------------------------------------------------------------ the guard
def limits(max_drop: float) -> dict:
    """The guard's three limits for ``--max-drop``: the drop itself, the top-1 agreement floor and
    the largest mean probability change (both scaled by max(--max-drop, 0.01))."""
    s = max(max_drop, DROP_SCALE_FLOOR)
    return {"max_drop": max_drop, "agreement_floor": 1 - CHURN_PER_DROP * s,
            "max_mean_prob_change": PROB_CHANGE_PER_DROP * s}


def drop_interval(n: int, fp32_only: int, int8_only: int, z: float = Z95) -> tuple[float, float]:
    """95% interval of the paired accuracy drop (b - c) / n, b = photos only fp32 gets right, c =
    photos only int8 gets right: of the m = b + c photos where they differ in being right, b is
    binomial (McNemar's view); its Wilson interval (lo, hi) for b / m gives the drop's,
    m / n * (2 lo - 1) to m / n * (2 hi - 1). No such photo: (0, 0)."""
    m = fp32_only + int8_only
    if m == 0:
        return 0.0, 0.0
    lo, hi = wilson_interval(fp32_only, m, z)
    return m / n * (2 * lo - 1), m / n * (2 * hi - 1)


def judge(n: int, fp32_only: int, int8_only: int, max_drop: float, *, n_disagree: int | None = None,
          prob_change: tuple[float, float] = (0.0, 0.0), z: float = Z95) -> dict:
    """The int8 guard's verdict from counts on ``n`` photos judged with both models.

    ``fp32_only`` (b): photos fp32 gets right and int8 wrong; ``int8_only`` (c): the reverse;
    ``n_disagree``: photos whose top-1 class differs (default b + c; with more than two classes
    also photos both get wrong differently); ``prob_change``: mean and standard deviation over the
    photos of each photo's largest absolute class-probability change.

    Rejected when the drop's 95% interval lies above ``max_drop`` (its lower end above it), when the
    agreement's lies below the floor (its upper end below it) or when the mean probability change's
    lies above its limit: a figure must be credibly out of bounds, not one photo away from it."""
    if n < 1:
        raise ValueError("judge: no photo to judge on")
    b, c = int(fp32_only), int(int8_only)
    disagree = b + c if n_disagree is None else int(n_disagree)
    lim = limits(max_drop)
    drop_ci = drop_interval(n, b, c, z)
    agree_ci = wilson_interval(n - disagree, n, z)
    mean, sd = prob_change
    half = z * sd / math.sqrt(n)
    prob_ci = (max(0.0, mean - half), min(1.0, mean + half))
    reasons = []
    if drop_ci[0] > max_drop + SLACK:
        reasons.append(f"drop credibly above --max-drop {max_drop}")
    if agree_ci[1] < lim["agreement_floor"] - SLACK:
        reasons.append(f"top-1 agreement credibly below its {lim['agreement_floor']:.1%} floor")
    if prob_ci[0] > lim["max_mean_prob_change"] + SLACK:
        reasons.append(f"mean probability change credibly above {100 * lim['max_mean_prob_change']:.1f} points")
    return {
        "n": n,
        "fp32_right_int8_wrong": b,
        "int8_right_fp32_wrong": c,
        "drop": (b - c) / n,
        "drop_ci95": list(drop_ci),
        "top1_agreement": (n - disagree) / n,
        "top1_agreement_ci95": list(agree_ci),
        "mean_prob_change": float(mean),
        "mean_prob_change_ci95": list(prob_ci),
        "limits": lim,
        "reasons": reasons,
        "accepted": not reasons,
    }


def compare(fp32_probs: np.ndarray, int8_probs: np.ndarray, labels: np.ndarray, max_drop: float) -> dict:
    """``judge`` on the photos both models classified (probabilities [N, C], true classes [N]),
    with both models' accuracy on them."""
    f, q = fp32_probs.argmax(1), int8_probs.argmax(1)
    f_right, q_right = f == labels, q == labels
    change = np.abs(fp32_probs.astype(np.float64) - int8_probs).max(1)
    sd = float(change.std(ddof=1)) if len(change) > 1 else 0.0
    verdict = judge(len(labels), int((f_right & ~q_right).sum()), int((q_right & ~f_right).sum()), max_drop,
                    n_disagree=int((f != q).sum()), prob_change=(float(change.mean()), sd))
    return {"accuracy_fp32": float(f_right.mean()), "accuracy_int8": float(q_right.mean()), **verdict}


def judged_on(n_val: int, n_train: int, n_calibrated: int) -> str:
    """``912 photos (48 validation + 864 training)``, saying how many were calibration photos."""
    parts = f"{n_val} validation" + (f" + {n_train} training" if n_train else "")
    if n_calibrated:
        parts += f", {n_calibrated} of them used for calibration"
    return f"{n_val + n_train} photos ({parts})"


def describe(g: dict) -> str:
    """The guard's figures in one line (export's table, its rejection message, export.json)."""
    lo, hi = g["drop_ci95"]
    alo, ahi = g["top1_agreement_ci95"]
    b, c = g["fp32_right_int8_wrong"], g["int8_right_fp32_wrong"]
    drop = (f"{b} photos lost and {c} gained: drop {100 * g['drop']:+.2f} points (95% CI {100 * lo:+.2f} to {100 * hi:+.2f}, "
            if b + c else "no photo lost or gained: drop 0 points (")
    return (f"agreement {g['top1_agreement']:.2%} (95% CI {100 * alo:.1f}-{100 * ahi:.1f}%, floor "
            f"{100 * g['limits']['agreement_floor']:.0f}%), {drop}--max-drop {g['limits']['max_drop']}), mean probability change "
            f"{100 * g['mean_prob_change']:.1f} points (limit {100 * g['limits']['max_mean_prob_change']:.0f})")


def _result(best: str, candidates: dict[str, dict], measured: dict, max_drop: float) -> dict:
    """export.json's ``int8`` entry: the validation split's figures (accuracy_fp32, accuracy_int8,
    drop, top1_agreement on n_eval photos, as before) and the guard's on every judged photo."""
    chosen, lat = candidates[best], measured["latency_ms"]
    g = chosen["guard"]
    where = judged_on(measured["n_eval"], measured["n_training"], measured["n_training_calibrated"])
    verdict = "accepted" if g["accepted"] else "rejected: " + "; ".join(g["reasons"])
    return {
        "n_calib": measured["n_calib"],
        "n_eval": measured["n_eval"],
        "method": best.split(",")[0],
        "methods": {m: {k: v for k, v in c.items() if k != "path"} for m, c in candidates.items()},
        "selected_by": "7-bit weights when one passes the guard, else the better of 7- and 8-bit; then passing "
                       "the guard, accuracy on the judged photos, top-1 agreement with fp32, the smaller "
                       "probability change",
        "accuracy_fp32": measured["accuracy_fp32"],  # on the validation split (n_eval photos)
        "accuracy_int8": chosen["accuracy"],
        "drop": measured["accuracy_fp32"] - chosen["accuracy"],
        "max_drop": max_drop,
        "accepted": g["accepted"],
        "top1_agreement": chosen["top1_agreement"],
        "n_judged": g["n"],
        "judged_on": where,
        "guard": {**g, "n_validation": measured["n_eval"], "n_training": measured["n_training"],
                  "n_training_calibrated": measured["n_training_calibrated"], "rule": RULE},
        "verdict": verdict,
        "summary": f"int8 vs fp32 on {where}: {describe(g)}; {verdict}",
        "size_ratio": measured["size_ratio"],
        "latency_ms": lat,
        "latency_ratio": lat["int8"] / lat["fp32"],
        "speedup": lat["fp32"] / lat["int8"],
        "reduce_range": chosen["reduce_range"],
        "made_for": quantize.int8_target(chosen["reduce_range"]),
        "format": "QDQ, per-channel int8 weights, uint8 activations, softmax in float",
    }
