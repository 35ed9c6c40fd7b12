"""LiteRT's full-integer int8 model for ``edgeclf export --format tflite`` (``model.int8.tflite``).

TensorFlow's TFLiteConverter quantizes the Keras model (int8 weights and activations), calibrated
on the same images as the int8 ONNX model, with a uint8 input that takes raw pixels like the ONNX
models' and a float32 output. The file is judged as the int8 ONNX model is (``int8.compare``, the
same --max-drop), against fp32 ONNX's probabilities on the same photos, by running it as the
runtime will (``edgeclf.model.litert.LiteRTSession``). Where the ONNX models get the unknown score
(``export/unknown.py``), the LiteRT model gets it too: a second output, the embedding, and the
same bank of training embeddings in its archive, its threshold carried over from fp32's by the
median paired difference of their scores on the validation photos, as the int8 ONNX model's is.
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeclf.errors import EdgeclfError, first_line
from edgeclf.model import litert, metadata as md, threads
from edgeclf.model.exported import TFLITE_INT8_NAME
from edgeclf.progress import Step
from edgeclf.quiet import captured_output
from edgeclf.train.keras_model import with_embedding

from .convert import release_memory
from .data import CheckImages
from .int8 import RULE, Judged, accuracy, compare, describe, judged_on, predict_or_empty
from .onnxrun import predict
from .unknown import Bank, embeddings, metadata as unknown_metadata, operating_point

FORMAT = "LiteRT full-integer int8, uint8 input, float output"
_FINAL_CHECK_IMAGES = 8  # the written file (metadata appended) must answer as the judged one did


@dataclass(frozen=True)
class UnknownScore:
    """What the LiteRT model's unknown score is made from: the ONNX models' bank, the share of
    validation photos to reject, and (fp32's scores on them, its threshold) to carry over."""

    bank: Bank
    reject: float
    reference: tuple[np.ndarray, float] | None


def make_tflite(keras_model, label: str, images: CheckImages, judged: Judged, fp32_size: int, max_drop: float,
                step: Step, metadata: Callable[[float], dict], unknown: UnknownScore | None = None) -> tuple[dict, bytes]:
    """Convert ``keras_model`` to full-integer int8, run it on the judged photos, judge it.

    Returns export.json's ``tflite_int8`` entry and the file to write (``metadata(accuracy)``
    appended, the accuracy on the validation split; with ``unknown``, the embedding output, the
    bank and the score's calibration too). ``fp32_size``: the fp32 ONNX model's size in bytes, for
    the size ratio. ``label`` names the model in error messages. Nothing is written outside a
    temporary folder, removed at the end."""
    release_memory()  # what the ONNX stages left, before TensorFlow's converter builds its graphs
    with tempfile.TemporaryDirectory(prefix="edgeclf-tflite-") as tmp:
        tmp = Path(tmp)
        step(f"converting to LiteRT int8 (TFLiteConverter, {len(images.calib.x)} calibration images)", 1)
        started = time.perf_counter()
        raw = convert_int8(keras_model if unknown is None else with_embedding(keras_model), images.calib.x, tmp, label)
        io, names = _io_details(raw, label, judged.fp32.shape[1])
        if names is None:  # two outputs of one width: which is which cannot be told, so no score
            print(f"warning: {label}: the LiteRT model gets no unknown score (its embedding is as wide as its "
                  f"{judged.fp32.shape[1]} classes, so the two outputs cannot be told apart)", file=sys.stderr)
            raw = convert_int8(keras_model, images.calib.x, tmp, label)
            io, names = _io_details(raw, label, judged.fp32.shape[1])
        seconds = time.perf_counter() - started
        meta = {litert.OUTPUTS_KEY: json.dumps(names)} if len(names) > 1 else {}
        (tmp / "raw.tflite").write_bytes(litert.with_metadata(raw, meta))
        session = litert.LiteRTSession(tmp / "raw.tflite", threads.default_threads())
        probs = _probabilities(session, images, judged, step)
        acc = accuracy(probs[: judged.n_val], images.val.y)
        figures, scores = (None, None) if md.EMBEDDING_NAME not in names else _calibrate(session, images, unknown, step)
        if figures is not None:
            meta.update(unknown_metadata(unknown.bank, figures["threshold"], unknown.reject, len(scores),
                                         figures["rejected_in_class"]))
        full = {**metadata(acc), **meta}
        plain = litert.with_metadata(raw, full)  # the size ratio leaves the bank out, as int8 ONNX's does
        payload = plain if figures is None else litert.with_metadata(raw, full, unknown.bank.vectors)
        (tmp / TFLITE_INT8_NAME).write_bytes(payload)
        _check_written(tmp / TFLITE_INT8_NAME, images.val.x[:_FINAL_CHECK_IMAGES], probs[:_FINAL_CHECK_IMAGES], label,
                       None if scores is None else scores[:_FINAL_CHECK_IMAGES])
    guard = compare(judged.fp32, probs, judged.labels, max_drop)
    measured = {"n_calib": len(images.calib.x), "n_training_calibrated": int(images.n_train_calibrated),
                "accuracy_fp32": accuracy(judged.fp32_val, images.val.y), "accuracy_int8": acc,
                "top1_agreement": float((probs[: judged.n_val].argmax(1) == judged.fp32_val.argmax(1)).mean()),
                "size_ratio": len(plain) / fp32_size, "conversion_seconds": round(seconds, 2), "unknown": figures, **io}
    return _result(guard, judged, measured, max_drop), payload


def _calibrate(session: litert.LiteRTSession, images: CheckImages, unknown: UnknownScore,
               step: Step) -> tuple[dict, np.ndarray]:
    """The LiteRT model's unknown score on the validation photos, scored against the bank as the
    runtime scores it, and its operating point (export.json's figures)."""
    e = embeddings(session, images.val.x, progress=step("unknown score: calibrating LiteRT int8", len(images.val.x)))
    scores = unknown.bank.scores(e)
    return operating_point(scores, unknown.reject, unknown.reference), scores


def convert_int8(keras_model, calib_x: np.ndarray, tmp: Path, label: str) -> bytes:
    """The .tflite flatbuffer: int8 weights and activations calibrated on ``calib_x`` (uint8 NHWC),
    uint8 input, float32 output. Keras 3 models the converter cannot take directly go through a
    SavedModel in ``tmp``. A one-line EdgeclfError when neither way converts."""
    import tensorflow as tf

    def convert(converter) -> bytes:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: _samples(calib_x)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]  # no float fallback: int8 or fail
        converter.inference_input_type = tf.uint8  # raw pixels in, like the ONNX models' uint8 input
        converter.inference_output_type = tf.float32  # probabilities as the runtime reads them
        return converter.convert()

    def from_saved_model():
        keras_model.export(str(tmp / "saved_model"), format="tf_saved_model")
        return tf.lite.TFLiteConverter.from_saved_model(str(tmp / "saved_model"))

    error: Exception | None = None
    with _quiet():
        for make in (lambda: tf.lite.TFLiteConverter.from_keras_model(keras_model), from_saved_model):
            try:
                return convert(make())
            except Exception as e:  # noqa: BLE001 - ConverterError, ValueError, RuntimeError...: the next way, then one line
                error = e
    raise EdgeclfError(f"{label}: TFLiteConverter cannot convert this model to full-integer int8 ({first_line(error, 200)})")


def _samples(calib_x: np.ndarray) -> Iterator[list[np.ndarray]]:
    """The calibration images one per sample, as float32 0-255 (what the Keras model takes: it
    rescales inside), the first with one pixel at 0 and one at 255. The converter sets the uint8
    input's scale from the range it sees: photos that never reach 0 or 255 (generated shapes top
    out at 253) would make it 0.992, and raw pixels would no longer be the input as they are. Two
    pixels of one image leave the other ranges as they were (``tests/test_export_tflite.py``)."""
    for i in range(len(calib_x)):
        sample = calib_x[i : i + 1].astype(np.float32)  # a copy: the int8 ONNX model calibrates on calib_x too
        if i == 0:
            sample.reshape(-1, 3)[:2] = ((0, 0, 0), (255, 255, 255))
        yield [sample]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Keras prints the SavedModel's signature on stdout (which belongs to ``--json``) and the
    converter logs from C++ on file descriptor 2, past Python's settings: both are collected and
    dropped (a failure says what went wrong in its exception), as is its warning about input statistics."""
    with captured_output(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _io_details(raw: bytes, label: str, n_classes: int) -> tuple[dict, list[str] | None]:
    """How the converted model takes its pixels (uint8, scale and zero point) and gives its
    probabilities (float32), and what each output is (the probabilities, and the embedding where
    it has two: told apart by their widths; None when both are as wide); a one-line error when the
    converter did otherwise."""
    try:
        with captured_output():  # LiteRT prints an INFO line per interpreter
            it = litert.interpreter_class()(model_content=raw)
    except EdgeclfError:
        raise
    except Exception as e:  # noqa: BLE001 - an op TensorFlow's converter wrote that this ai-edge-litert lacks
        raise EdgeclfError(f"{label}: {litert.version()} cannot load the model TensorFlow converted "
                           f"({first_line(e, 160)}); upgrade ai-edge-litert") from None
    inp, outs = it.get_input_details()[0], it.get_output_details()
    if np.dtype(inp["dtype"]) != np.uint8 or any(np.dtype(o["dtype"]) != np.float32 for o in outs):
        raise EdgeclfError(f"{label}: the converted LiteRT model takes {np.dtype(inp['dtype'])} and gives "
                           f"{', '.join(str(np.dtype(o['dtype'])) for o in outs)}; expected uint8 in, float32 out")
    widths = [int(o["shape"][-1]) for o in outs]
    if len(outs) == 1:
        names = [md.OUTPUT_NAME]
    elif len(outs) == 2 and widths.count(n_classes) == 1:
        names = [md.OUTPUT_NAME if w == n_classes else md.EMBEDDING_NAME for w in widths]
    elif len(outs) == 2 and widths.count(n_classes) == 2:
        return {}, None
    else:
        raise EdgeclfError(f"{label}: the converted LiteRT model has outputs {widths} wide; expected "
                           f"{n_classes} probabilities (and an embedding)")
    scale, zero = inp["quantization"]
    # scale 1 and zero point 0 (calibration photos spanning 0-255): raw pixels are the input as they
    # are; otherwise LiteRTSession requantizes them, and so must any other caller
    return {"input_quantization": {"scale": float(scale), "zero_point": int(zero)}}, names


def _probabilities(session: litert.LiteRTSession, images: CheckImages, judged: Judged, step: Step) -> np.ndarray:
    """The LiteRT model's probabilities on the judged photos, in ``judged``'s order."""
    val = predict(session, images.val.x, progress=step("validation: LiteRT int8", len(images.val.x)))
    if val.shape[1:] != judged.fp32.shape[1:]:
        raise EdgeclfError(f"the converted LiteRT model gives {val.shape[1]} probabilities, fp32 ONNX {judged.fp32.shape[1]}")
    train = predict_or_empty(session, judged.train, val.shape[1], step, "training photos: LiteRT int8")
    return np.concatenate([val, train])


def _check_written(path: Path, x: np.ndarray, judged_probs: np.ndarray, label: str, scores: np.ndarray | None) -> None:
    """The file to be written (flatbuffer, metadata, bank) loads and answers as the judged flatbuffer
    did, and gives the unknown scores it was calibrated on."""
    session = litert.LiteRTSession(path, threads.default_threads())
    probs = predict(session, x)
    same = np.allclose(probs, judged_probs, atol=1e-6)
    if scores is not None:
        names = [o.name for o in session.get_outputs()]
        same = same and md.UNKNOWN_NAME in names and np.allclose(
            session.run([md.UNKNOWN_NAME], {md.INPUT_NAME: x})[0], scores, atol=1e-5)
    if not same:
        raise EdgeclfError(f"{label}: the LiteRT model with its metadata answers otherwise than the model judged")


def _versions() -> dict:
    import tensorflow as tf

    return {"converter": f"tf.lite.TFLiteConverter (TensorFlow {tf.__version__})", "checked_with": litert.version()}


def _result(g: dict, judged: Judged, measured: dict, max_drop: float) -> dict:
    """export.json's ``tflite_int8`` entry, shaped as its ``int8`` one where that applies: the
    validation split's figures (n_eval photos) and the guard's on every judged photo."""
    n_val, n_train = judged.n_val, len(judged.train.x)
    where = judged_on(n_val, n_train, measured["n_training_calibrated"])
    verdict = "accepted" if g["accepted"] else "rejected: " + "; ".join(g["reasons"])
    return {
        "format": FORMAT,
        "n_calib": measured["n_calib"],
        "n_eval": n_val,
        "accuracy_fp32": measured["accuracy_fp32"],  # fp32 ONNX, on the validation split (n_eval photos)
        "accuracy_int8": measured["accuracy_int8"],
        "drop": measured["accuracy_fp32"] - measured["accuracy_int8"],
        "max_drop": max_drop,
        "accepted": g["accepted"],
        "top1_agreement": measured["top1_agreement"],
        "n_judged": g["n"],
        "judged_on": where,
        "guard": {**g, "n_validation": n_val, "n_training": n_train,
                  "n_training_calibrated": measured["n_training_calibrated"], "rule": RULE},
        "verdict": verdict,
        "summary": f"LiteRT int8 vs fp32 ONNX on {where}: {describe(g)}; {verdict}"
                   + ("" if measured["unknown"] else "; no unknown score"),
        "size_ratio": measured["size_ratio"],  # both without the unknown score's bank, as int8's
        "input_quantization": measured["input_quantization"],
        "unknown_score": measured["unknown"] is not None,
        "unknown": measured["unknown"],  # the score's figures, which export moves to export.json's "unknown"
        "conversion_seconds": measured["conversion_seconds"],
        **_versions(),
    }
