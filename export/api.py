"""``export_model``: a trained run -> verified ONNX files (fp32, optionally int8 and fp16), optionally a
verified LiteRT int8 file, + export.json, written all or nothing (``outfolder``), export.json
recording each model file's SHA-256."""

from __future__ import annotations

import hashlib
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort

from edgeclf import __version__
from edgeclf.errors import EdgeclfError, first_line
from edgeclf.image import scan_class_folders
from edgeclf.model import metadata as md
from edgeclf.model.batching import in_batches
from edgeclf.model.exported import FP16_NAME, FP32_NAME, INT8_NAME, REPORT_NAME, TFLITE_INT8_NAME
from edgeclf.model.session import open_session
from edgeclf.outfiles import remove_stale_temps, sha256_of, write_json
from edgeclf.progress import Step, steps
from edgeclf.train.keras_model import RunSource, input_size_of, load_keras_model, resolve_source
from edgeclf.train.run_record import check_class_names

from . import data, parity
from .convert import DEFAULT_OPSET, keras_to_onnx, release_memory, set_metadata
from .head import float_head, head_weights
from .data import CheckImages
from .int8 import Judged, choose_int8, describe, judged_photos
from .onnxrun import predict
from .options import DEFAULT_CALIB_SIZE, DEFAULT_MAX_DROP, DEFAULT_PARITY_SIZE, ExportOptions
from .outfolder import check_out_folder, staging, swap_in
from .unknown import DEFAULT_REJECT, Bank, attach, embeddings, has_embedding


class ExportCheckError(EdgeclfError):
    """A check failed (parity, or the int8 accuracy guard of int8 ONNX or LiteRT); the message carries the figures."""

    exit_code = 1


@dataclass
class _Model:
    """The Keras model being exported, with what each file exported from it records."""

    run: RunSource
    keras: object  # keras.Model
    class_names: list[str]
    size: tuple[int, int]  # height, width
    sha256: str  # of the .keras file

    def metadata(self, precision: str, accuracy: float | None) -> dict[str, str]:
        return md.model_metadata(self.class_names, self.size, self.run.architecture, precision, accuracy, self.sha256,
                                 self.run.weights, self.run.resize)


@dataclass
class _Fp32:
    """The fp32 ONNX model, checked against Keras on the parity images."""

    proto: onnx.ModelProto
    payload: bytes
    session: ort.InferenceSession
    keras_probs: np.ndarray  # Keras' probabilities on the parity images
    parity: dict  # parity.compare's figures
    quantize_from: bytes  # the model as tf2onnx wrote it (its head too), what int8 quantizes


def export_model(
    source: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    int8: bool = False,
    fp16: bool = False,
    tflite: bool = False,
    calib: str | os.PathLike | None = None,
    calib_size: int = DEFAULT_CALIB_SIZE,
    calib_method: str = "auto",
    opset: int = DEFAULT_OPSET,
    max_drop: float = DEFAULT_MAX_DROP,
    parity_size: int = DEFAULT_PARITY_SIZE,
    seed: int = 0,
    unknown_reject: float = DEFAULT_REJECT,
    force: bool = False,
    show_progress: bool = True,
) -> dict:
    """Export ``source`` (a run folder or a .keras file) to ``out_dir`` [default: its folder/export].

    Always writes ``model.onnx`` after checking parity with Keras; with ``int8`` also
    ``model.int8.onnx`` unless the guard finds it credibly worse than fp32 on the validation split
    and the run's training photos (``int8.judge``); with ``fp16`` ``model.fp16.onnx``; with ``tflite``
    ``model.int8.tflite`` (LiteRT, ``export/tflite.py``) under the same guard; then ``export.json``
    (returned as a dict). Every model also gives the unknown score (``export/unknown.py``), its
    threshold rejecting ``unknown_reject`` of the validation photos.
    The files are built beside ``out_dir`` and replace it whole at the end (an earlier export only with ``force``).
    Raises EdgeclfError for bad input (nothing written) and ExportCheckError when a check fails.
    """
    opts = ExportOptions(int8=int8, fp16=fp16, calib_dir=Path(calib) if calib is not None else None,
                         calib_size=calib_size, calib_method=calib_method, opset=opset, max_drop=max_drop,
                         parity_size=parity_size, seed=seed, unknown_reject=unknown_reject, tflite=tflite)
    src = resolve_source(source)
    out = Path(out_dir) if out_dir is not None else src.model_path.parent / "export"
    opts.check()
    calib_files = _prepare(out, opts, force)
    model = _load(src, opts.calib_dir)
    try:
        with staging(out) as new, steps(quiet=not show_progress, width=36) as step:
            report = _build(src, model, opts, calib_files, new, step)
            swap_in(new, out)
    except OSError as e:  # disk full, folder made read-only: the earlier export (if any) is untouched
        raise _write_error(out, e) from None
    rejected = _rejected(report, out)
    if rejected is not None:  # after the swap: export.json describes what was exported, and why not the rest
        raise rejected
    return report


def _build(src: RunSource, model: _Model, opts: ExportOptions, calib_files: list[Path] | None, new: Path,
           step: Step) -> dict:
    """Every file of the export, checked and written into ``new``, export.json last; returns its content."""
    images = data.read_check_images(src, model.class_names, model.size, opts, calib_files, step)
    fp32 = _convert_and_check(model, opts.opset, images.parity, step)
    report = _report(model, opts.opset, fp32.parity, images.real)
    bank = _unknown_bank(src, fp32, images, opts, step)
    payload, reference = _with_unknown(fp32.payload, bank, images, opts, report, "fp32", step)
    _write(new / FP32_NAME, payload, report, "fp32")
    if opts.fp16:
        _add_fp16(model, fp32, images.parity, new, report, step)
    if opts.quantizes:
        release_memory()  # what Keras and the parity check left, before the judged photos' runs
        judged = judged_photos(fp32.session, images, step)  # once, for int8 ONNX and LiteRT alike
        if opts.int8:
            _add_int8(model, fp32, images, judged, opts, new, report, step, bank, reference)
        if opts.tflite:
            _add_tflite(model, fp32, images, judged, opts, new, report, step, bank, reference)
    _write_report(new, report)
    return report


# ----------------------------------------------------------------------------------------- steps
def _prepare(out: Path, opts: ExportOptions, force: bool) -> list[Path] | None:
    """Fail before any work on an unusable or occupied --out or on --calib; remove what a killed
    export left. Returns the --calib image files (None without --calib)."""
    _check_writable(out)
    removed = [p for name in (FP32_NAME, INT8_NAME, FP16_NAME, TFLITE_INT8_NAME, REPORT_NAME)
               for p in remove_stale_temps(out / name)]
    if removed:  # left by an export (of an earlier edgeclf, which wrote in place) killed mid-write
        print(f"warning: removed {len(removed)} temporary file(s) left in {out} by a killed export", file=sys.stderr)
    check_out_folder(out, force)
    calib_files = data.calibration_files(opts.calib_dir) if opts.calib_dir is not None else None
    if opts.calib_dir is not None and not opts.quantizes:
        print("warning: --calib is only used with --int8 or --format tflite", file=sys.stderr)
    return calib_files


def _load(src: RunSource, calib_dir: Path | None) -> _Model:
    """TensorFlow, the Keras model, its input size and class names."""
    from edgeclf.train.tf_quiet import import_tensorflow_quietly

    import_tensorflow_quietly()  # only now: the checks before answer bad input in a blink
    keras_model = load_keras_model(src.model_path)
    size = input_size_of(keras_model, src.model_path)
    return _Model(src, keras_model, _class_names(src, keras_model, calib_dir), size, sha256_of(src.model_path))


def _convert_and_check(model: _Model, opset: int, parity_x: np.ndarray, step: Step) -> _Fp32:
    """Convert to ONNX fp32; raise ExportCheckError unless it gives Keras' answers on ``parity_x``."""
    step("converting to ONNX (tf2onnx)", 1)
    proto = keras_to_onnx(model.keras, opset, label=str(model.run.model_path))
    set_metadata(proto, model.metadata("fp32", model.run.val_accuracy))
    quantize_from = proto.SerializeToString()
    _float_head(model, proto)
    payload = proto.SerializeToString()
    keras_probs = _keras_predict(model.keras, parity_x, step("parity: Keras", len(parity_x)))
    session = open_session(payload)
    onnx_probs = predict(session, parity_x, progress=step("parity: ONNX fp32", len(parity_x)))
    figures = parity.compare(keras_probs, onnx_probs)
    if not parity.parity_ok(figures):
        raise ExportCheckError(f"{model.run.model_path}: ONNX export disagrees with Keras: {parity.describe(figures)}")
    return _Fp32(proto, payload, session, keras_probs, figures, quantize_from)


def _float_head(model: _Model, proto: onnx.ModelProto) -> None:
    """The Keras head as plain float tensors (``head.float_head``), when the model has an embedding."""
    weights = head_weights(model.keras)
    if weights is not None and has_embedding(proto):
        float_head(proto, *weights)


def _report(model: _Model, opset: int, figures: dict, real_images: bool) -> dict:
    """export.json as it starts: the source, the fp32 parity figures; files are added as written."""
    return {
        "source": str(model.run.model_path.resolve()),
        "source_sha256": model.sha256,
        "architecture": model.run.architecture,
        "weights": model.run.weights,
        "class_names": model.class_names,
        "input_size": list(model.size),
        "opset": opset,
        "files": {},
        "sizes_bytes": {},
        "sha256": {},  # of each model file: the runtime refuses a file of this folder that differs
        "parity": {**figures, "tolerance": parity.PROB_TOLERANCE, "images": "real" if real_images else "generated"},
        # a refitted model trained on the validation photos too: their accuracies below are not held out
        **({"refit": {**model.run.record.refit, "held_out_accuracy": model.run.val_accuracy}} if model.run.refitted else {}),
    }


def _add_fp16(model: _Model, fp32: _Fp32, parity_x: np.ndarray, out: Path, report: dict, step: Step) -> None:
    """model.fp16.onnx, with its parity figures against Keras (reported, not a check)."""
    from .fp16 import to_fp16

    proto = to_fp16(fp32.proto)
    set_metadata(proto, model.metadata("fp16", model.run.val_accuracy))
    payload = proto.SerializeToString()
    probs = predict(open_session(payload), parity_x, progress=step("parity: ONNX fp16", len(parity_x)))
    report["fp16"] = parity.compare(fp32.keras_probs, probs)
    _write(out / FP16_NAME, payload, report, "fp16")


def _unknown_bank(src: RunSource, fp32: _Fp32, images: CheckImages, opts: ExportOptions, step: Step) -> Bank | None:
    """The training photos' embeddings the unknown score measures against; None without an
    embedding output, without --unknown-reject, or without validation photos to calibrate on."""
    if not opts.unknown_reject or not has_embedding(fp32.proto):
        return None
    if len(images.val.x) == 0:
        print(f"warning: {src.model_path}: no validation photos to calibrate the unknown score on; "
              "the model gets none", file=sys.stderr)
        return None
    photos = data.bank_photos(src, images, opts.seed, step)
    if len(photos.x) == 0:
        print(f"warning: {src.model_path}: no training photos recorded (run.json); the model gets no unknown score",
              file=sys.stderr)
        return None
    e = embeddings(fp32.session, photos.x, progress=step("unknown score: training embeddings", len(photos.x)))
    return Bank.of(e, photos.y)


def _with_unknown(payload: bytes, bank: Bank | None, images: CheckImages, opts: ExportOptions, report: dict,
                  precision: str, step: Step, reference: tuple | None = None) -> tuple[bytes, tuple | None]:
    """``payload`` with the unknown score calibrated on the validation photos (as it is without a
    bank), and (its scores there, its threshold) for a model calibrated against it."""
    if bank is None:
        return payload, None
    payload, figures, scores = attach(payload, bank, images.val.x, opts.unknown_reject, reference=reference,
                                      progress=step(f"unknown score: calibrating {precision}", len(images.val.x)))
    report.setdefault("unknown", {"method": "knn-cosine", "k": bank.k, "bank": len(bank.vectors),
                                  "target_reject": opts.unknown_reject})[precision] = figures
    return payload, (scores, figures["threshold"])


def _add_int8(model: _Model, fp32: _Fp32, images: CheckImages, judged: Judged, opts: ExportOptions, out: Path,
              report: dict, step: Step, bank: Bank | None = None, reference: tuple | None = None) -> None:
    """model.int8.onnx when it passes the accuracy guard; its figures in the report either way."""
    result, payload = choose_int8(fp32.quantize_from, fp32.session, images, judged, opts.calib_method, opts.max_drop,
                                  step, metadata=lambda accuracy: model.metadata("int8", accuracy),
                                  finish=lambda proto: _float_head(model, proto))
    result["calib_source"] = _calib_source(opts)
    report["int8"] = result
    if result["accepted"]:
        _write(out / INT8_NAME, _with_unknown(payload, bank, images, opts, report, "int8", step, reference)[0], report, "int8")


def _add_tflite(model: _Model, fp32: _Fp32, images: CheckImages, judged: Judged, opts: ExportOptions, out: Path,
                report: dict, step: Step, bank: Bank | None = None, reference: tuple | None = None) -> None:
    """model.int8.tflite (with the unknown score where there is a ``bank``) when it passes the
    accuracy guard; its figures in the report either way."""
    from .tflite import UnknownScore, make_tflite

    unknown = None if bank is None else UnknownScore(bank, opts.unknown_reject, reference)
    result, payload = make_tflite(model.keras, str(model.run.model_path), images, judged, len(fp32.quantize_from),
                                  opts.max_drop, step, metadata=lambda accuracy: model.metadata("int8", accuracy),
                                  unknown=unknown)
    result["calib_source"] = _calib_source(opts)
    figures = result.pop("unknown")
    report["tflite_int8"] = result
    if result["accepted"]:
        _write(out / TFLITE_INT8_NAME, payload, report, "tflite_int8")
        if figures is not None:  # beside fp32's and int8's
            report["unknown"]["tflite_int8"] = figures


def _calib_source(opts: ExportOptions) -> str:
    return str(opts.calib_dir.resolve()) if opts.calib_dir is not None else "training split (run.json)"


def _write_report(out: Path, report: dict) -> None:
    """export.json, last."""
    report["versions"] = _versions()
    report["files"]["report"] = REPORT_NAME
    write_json(out / REPORT_NAME, report)


def _rejected(report: dict, out: Path) -> ExportCheckError | None:
    """The guard's verdict on each rejected model in one line: on how many photos, the figures, why,
    then what was written and what was not; None when no model was rejected."""
    why, missing = [], []
    for key, what, name in (("int8", "int8 model", INT8_NAME), ("tflite_int8", "LiteRT int8 model", TFLITE_INT8_NAME)):
        r = report.get(key)
        if r is None or r["accepted"]:
            continue
        g = r["guard"]
        why.append(f"{what} rejected: accuracy {g['accuracy_int8']:.2%} vs fp32 {g['accuracy_fp32']:.2%} on "
                   f"{r['judged_on']}; {describe(g)}; rejected as {', '.join(g['reasons'])}")
        missing.append(name)
    if not why:
        return None
    return ExportCheckError(f"{'; '.join(why)}; {_and(report['files'].values())} written to {out}, no {_and(missing)}")


def _and(names) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    names = list(names)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


# ---------------------------------------------------------------------------------------- inputs
def _check_writable(out: Path) -> None:
    """Fail before any work when ``out`` cannot become a writable folder (nothing is created). The
    export is built beside ``out``, so the folder that holds it must be writable."""
    if out.exists() and not out.is_dir():
        raise EdgeclfError(f"{out}: --out exists and is not a folder")
    probe = out.parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise EdgeclfError(f"{out}: cannot create the output folder ({probe} is a file)")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise EdgeclfError(f"{out}: output folder is not writable ({probe}, where the export is built, is not)")


def _class_names(src: RunSource, model, calib_dir: Path | None) -> list[str]:
    """The run's class names; for a bare .keras file, a labelled --calib folder's, else class_0.."""
    n = int(model.output_shape[-1])
    names = src.class_names
    if names is None and calib_dir is not None and data.is_labelled(calib_dir):
        names = check_class_names(scan_class_folders(calib_dir)[0], calib_dir)
    if names is None:
        names = [f"class_{i}" for i in range(n)]
        print(f"warning: {src.model_path}: no run.json beside it; classes named {names[0]}..", file=sys.stderr)
    if len(names) != n:
        raise EdgeclfError(f"{src.model_path}: the model has {n} outputs but {len(names)} class names {names}")
    return list(names)


# Batches of 8: Keras' activations at 32 images took export's peak memory from 1.5 to 2.1 GB
# (EfficientNet-Lite0 160x160, benchmarks/results/export_memory.md), for no measurable speed.
def _keras_predict(model, x: np.ndarray, progress: Callable[[int], None] | None, batch_size: int = 8) -> np.ndarray:
    return in_batches(lambda b: np.asarray(model(b.astype(np.float32), training=False), np.float32), x, batch_size, progress)


# ---------------------------------------------------------------------------------------- output
def _write(path: Path, payload: bytes, report: dict, precision: str) -> None:
    try:
        path.write_bytes(payload)
    except OSError as e:  # a full disk's error names no file: name it for _write_error
        raise OSError(e.errno, e.strerror, str(path)) from None
    report["files"][precision] = path.name
    report["sizes_bytes"][precision] = len(payload)
    report["sha256"][precision] = hashlib.sha256(payload).hexdigest()


def _write_error(out: Path, e: OSError) -> EdgeclfError:
    """A failed write (disk full, folder made read-only) as one line: nothing in ``out`` changed."""
    where = out / Path(e.filename).name if e.filename else out
    return EdgeclfError(f"{where}: cannot write ({e.strerror or first_line(e)}); {out} is left as it was")


def _versions() -> dict:
    import tensorflow as tf
    import tf2onnx

    return {
        "edgeclf": __version__, "tensorflow": tf.__version__, "tf2onnx": tf2onnx.__version__,
        "onnx": onnx.__version__, "onnxruntime": ort.__version__, "python": platform.python_version(),
    }
