"""Choosing the int8 model and judging it: each calibration method, 7-bit weights first and full
8-bit ones only when those fail the accuracy guard, measured on the validation split against fp32."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import onnxruntime as ort

from edgeclf.model.session import open_session
from edgeclf.progress import Step

from . import parity, quantize
from .convert import release_memory, set_metadata
from .data import CheckImages
from .onnxrun import latency_ms, predict

SLACK = 1e-12  # a drop equal to --max-drop passes, whatever the float rounding


def choose_int8(fp32_bytes: bytes, fp32_sess: ort.InferenceSession, images: CheckImages, calib_method: str,
                max_drop: float, step: Step, metadata: Callable[[float], dict]) -> tuple[dict, bytes]:
    """Quantize with each candidate calibration method, keep the most accurate on the validation
    split (ties: higher agreement with fp32, then smaller probability error), judge it.

    Returns export.json's ``int8`` entry and the chosen model (``metadata(accuracy)`` in it)."""
    import onnx

    release_memory()  # what Keras and the parity check left, before calibration's big arrays
    val = images.val
    fp32_probs = predict(fp32_sess, val.x, progress=step("validation: fp32", len(val.x)))
    acc_fp32 = _accuracy(fp32_probs, val.y)
    methods = list(quantize.METHODS) if calib_method == "auto" else [calib_method]
    with tempfile.TemporaryDirectory(prefix="edgeclf-quant-") as tmp:
        tmp = Path(tmp)
        (tmp / "fp32.onnx").write_bytes(fp32_bytes)
        step("preparing the graph for quantization", 1)
        quantize.prepare(tmp / "fp32.onnx", tmp / "prepared.onnx")
        # 7-bit weights first (the same results on every CPU family); full 8-bit ones only when
        # those fail the guard (exact on x86 with VNNI and ARM only: see quantize.FULL_RANGE_CPUS).
        candidates = _candidates(tmp, images, fp32_probs, methods, True, step)
        best = _most_accurate(candidates)
        if not _passes(acc_fp32 - candidates[best]["accuracy"], max_drop):
            candidates.update(_candidates(tmp, images, fp32_probs, methods, False, step))
            best = _most_accurate(candidates)
        chosen = candidates[best]
        proto = onnx.load(str(chosen["path"]))
    set_metadata(proto, metadata(chosen["accuracy"]))
    quantize.mark_target(proto, chosen["reduce_range"])
    int8_bytes = proto.SerializeToString()

    step("latency: fp32 vs int8, interleaved", 1)
    lat = latency_ms({"fp32": fp32_sess, "int8": open_session(int8_bytes)}, val.x[0])
    measured = {"n_calib": int(len(images.calib.x)), "n_eval": int(len(val.x)), "accuracy_fp32": acc_fp32,
               "size_ratio": len(int8_bytes) / len(fp32_bytes), "latency_ms": lat}
    return _result(best, candidates, measured, max_drop), int8_bytes


def _candidates(tmp: Path, images: CheckImages, fp32_probs: np.ndarray, methods: list[str], reduce_range: bool,
                step: Step) -> dict[str, dict]:
    """One int8 model per calibration method, at 7-bit (``reduce_range``) or 8-bit weights, with
    its figures on the validation split."""
    val, calib = images.val, images.calib
    found = {}
    for m in methods:
        key = m if reduce_range else f"{m}, 8-bit weights"
        path = tmp / f"int8-{m}-{int(reduce_range)}.onnx"
        quantize.quantize(tmp / "prepared.onnx", path, calib.x, m, reduce_range,
                          progress=step(f"calibrating ({key})", quantize.calibration_passes(m) * len(calib.x)))
        probs = predict(open_session(path), val.x, progress=step(f"validation: int8 ({key})", len(val.x)))
        release_memory()  # the calibrator's and the candidate's sessions, before the next candidate
        found[key] = {
            "accuracy": _accuracy(probs, val.y),
            "top1_agreement": float((probs.argmax(1) == fp32_probs.argmax(1)).mean()),
            "mean_abs_diff": parity.compare(fp32_probs, probs)["mean_abs_diff"],
            "reduce_range": reduce_range,
            "path": path,
        }
    return found


def _most_accurate(candidates: dict[str, dict]) -> str:
    return max(candidates, key=lambda k: (candidates[k]["accuracy"], candidates[k]["top1_agreement"],
                                          -candidates[k]["mean_abs_diff"]))


def _accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    return float((probs.argmax(1) == labels).mean())


def _passes(drop: float, max_drop: float) -> bool:
    return drop <= max_drop + SLACK


def _result(best: str, candidates: dict[str, dict], measured: dict, max_drop: float) -> dict:
    """export.json's ``int8`` entry."""
    chosen, lat = candidates[best], measured["latency_ms"]
    drop = measured["accuracy_fp32"] - chosen["accuracy"]
    return {
        "n_calib": measured["n_calib"],
        "n_eval": measured["n_eval"],
        "method": best.split(",")[0],
        "methods": {m: {k: v for k, v in c.items() if k != "path"} for m, c in candidates.items()},
        "selected_by": "7-bit weights when they pass the guard, else the more accurate of 7- and 8-bit; "
                       "then accuracy on the validation split, then top-1 agreement with fp32",
        "accuracy_fp32": measured["accuracy_fp32"],
        "accuracy_int8": chosen["accuracy"],
        "drop": drop,
        "max_drop": max_drop,
        "accepted": _passes(drop, max_drop),
        "top1_agreement": chosen["top1_agreement"],
        "size_ratio": measured["size_ratio"],
        "latency_ms": lat,
        "latency_ratio": lat["int8"] / lat["fp32"],
        "speedup": lat["fp32"] / lat["int8"],
        "reduce_range": chosen["reduce_range"],
        "made_for": quantize.int8_target(chosen["reduce_range"]),
        "format": "QDQ, per-channel int8 weights, uint8 activations, softmax in float",
    }
