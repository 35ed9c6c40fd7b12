"""``export_model``: a trained run -> verified ONNX files (fp32, optionally int8 and fp16) + export.json."""

from __future__ import annotations

import contextlib
import math
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from edgeclf import __version__
from edgeclf.errors import EdgeclfError, first_line
from edgeclf.image import scan_class_folders
from edgeclf.model import metadata as md
from edgeclf.model.batching import in_batches
from edgeclf.model.session import open_session
from edgeclf.outfiles import atomic_path, remove_stale_temps, sha256_of, write_json
from edgeclf.progress import Bars
from edgeclf.train.keras_model import RunSource, input_size_of, load_keras_model, resolve_source
from edgeclf.train.run_record import check_class_names

from . import data, parity, quantize
from .convert import DEFAULT_OPSET, keras_to_onnx, set_metadata

FP32_NAME, INT8_NAME, FP16_NAME, REPORT_NAME = "model.onnx", "model.int8.onnx", "model.fp16.onnx", "export.json"
DEFAULT_CALIB_SIZE = 200
DEFAULT_MAX_DROP = 0.01
MIN_PARITY_IMAGES = 100  # the floor for the Keras/ONNX parity check
DEFAULT_PARITY_SIZE = 200
OPSETS = range(13, 19)  # what tf2onnx 1.17 writes
HOLDOUT_FRACTION = 0.3  # of a labelled --calib folder, when the run has no validation split


class ExportCheckError(EdgeclfError):
    """A check failed (parity, or the int8 accuracy guard); the message carries the figures."""

    exit_code = 1


def export_model(
    source: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    int8: bool = False,
    fp16: bool = False,
    calib: str | os.PathLike | None = None,
    calib_size: int = DEFAULT_CALIB_SIZE,
    calib_method: str = "auto",
    opset: int = DEFAULT_OPSET,
    max_drop: float = DEFAULT_MAX_DROP,
    parity_size: int = DEFAULT_PARITY_SIZE,
    seed: int = 0,
    show_progress: bool = True,
) -> dict:
    """Export ``source`` (a run folder or a .keras file) to ``out_dir`` [default: its folder/export].

    Always writes ``model.onnx`` after checking parity with Keras; with ``int8`` also
    ``model.int8.onnx`` when its accuracy drop on the validation split is at most ``max_drop``;
    with ``fp16`` ``model.fp16.onnx``; then ``export.json`` (returned as a dict).
    Raises EdgeclfError for bad input (nothing written) and ExportCheckError when a check fails.
    """
    src = resolve_source(source)
    out = Path(out_dir) if out_dir is not None else src.model_path.parent / "export"
    _check_options(opset, calib_size, calib_method, parity_size, max_drop)
    _check_writable(out)
    removed = [p for name in (FP32_NAME, INT8_NAME, FP16_NAME, REPORT_NAME) for p in remove_stale_temps(out / name)]
    if removed:  # left by an export killed mid-write (SIGKILL): no finally ran to remove them
        print(f"warning: removed {len(removed)} temporary file(s) left in {out} by a killed export", file=sys.stderr)
    calib_dir = Path(calib) if calib is not None else None
    calib_files = data.calibration_files(calib_dir) if calib_dir is not None else None
    if calib_dir is not None and not int8:
        print("warning: --calib is only used with --int8", file=sys.stderr)

    from edgeclf.train.tf_quiet import import_tensorflow_quietly

    import_tensorflow_quietly()  # only now: the checks above answer bad input in a blink
    model = load_keras_model(src.model_path)
    size = input_size_of(model, src.model_path)
    class_names = _class_names(src, model, calib_dir)
    sha = sha256_of(src.model_path)

    with _progress(show_progress) as step:
        # --- the images every check needs, read before anything is written
        val_paths, val_labels = _labelled_split(src, class_names)
        calib_set = None
        if int8:
            calib_paths, val_paths, val_labels = _calibration_and_eval_paths(
                src, calib_dir, calib_files, class_names, val_paths, val_labels, calib_size, seed
            )
            calib_set = data.load_images(calib_paths, size, progress=step("reading calibration images", len(calib_paths)))
            if len(calib_set.x) == 0:
                where = calib_dir if calib_dir is not None else "the run's training split"
                raise EdgeclfError(f"{where}: no readable calibration image")
        val = data.load_images(val_paths, size, val_labels, progress=step("reading validation images", len(val_paths)))
        if int8 and len(val.x) == 0:
            raise EdgeclfError(f"{src.model_path}: no readable validation image to judge the int8 model on")
        parity_x = _parity_images(src, val, calib_set, size, parity_size, seed, step)

        # --- fp32: convert, check parity with Keras, write
        proto = keras_to_onnx(model, opset, label=str(src.model_path))
        set_metadata(proto, md.model_metadata(class_names, size, src.architecture, "fp32", src.val_accuracy, sha, src.weights))
        fp32_bytes = proto.SerializeToString()
        keras_probs = _keras_predict(model, parity_x, step("parity: Keras", len(parity_x)))
        from .onnxrun import predict

        fp32_sess = open_session(fp32_bytes)
        onnx_probs = predict(fp32_sess, parity_x, progress=step("parity: ONNX fp32", len(parity_x)))
        figures = parity.compare(keras_probs, onnx_probs)
        if not parity.parity_ok(figures):
            raise ExportCheckError(f"{src.model_path}: ONNX export disagrees with Keras: {parity.describe(figures)}")
        report: dict = {
            "source": str(src.model_path.resolve()),
            "source_sha256": sha,
            "architecture": src.architecture,
            "weights": src.weights,
            "class_names": class_names,
            "input_size": list(size),
            "opset": opset,
            "files": {},
            "sizes_bytes": {},
            "parity": {**figures, "tolerance": parity.PROB_TOLERANCE, "images": "real" if _real(src, val, calib_set) else "generated"},
        }
        _write(out / FP32_NAME, fp32_bytes, report, "fp32")

        if fp16:
            from .fp16 import to_fp16

            proto16 = to_fp16(proto)
            set_metadata(proto16, md.model_metadata(class_names, size, src.architecture, "fp16", src.val_accuracy, sha, src.weights))
            fp16_bytes = proto16.SerializeToString()
            probs16 = predict(open_session(fp16_bytes), parity_x, progress=step("parity: ONNX fp16", len(parity_x)))
            report["fp16"] = {k: v for k, v in parity.compare(keras_probs, probs16).items()}
            _write(out / FP16_NAME, fp16_bytes, report, "fp16")

        if int8:
            assert calib_set is not None
            result, int8_bytes = _int8(
                fp32_bytes, fp32_sess, calib_set, val, calib_method, max_drop, step,
                metadata=lambda acc: md.model_metadata(class_names, size, src.architecture, "int8", acc, sha, src.weights),
            )
            result["calib_source"] = str(calib_dir.resolve()) if calib_dir is not None else "training split (run.json)"
            report["int8"] = result
            if result["accepted"]:
                _write(out / INT8_NAME, int8_bytes, report, "int8")
            else:
                # A stale int8 model from an earlier export must not pass for this one.
                (out / INT8_NAME).unlink(missing_ok=True)

    _remove_stale(out, report, sha)
    report["versions"] = _versions()
    report["files"]["report"] = REPORT_NAME
    try:
        write_json(out / REPORT_NAME, report)
    except OSError as e:
        raise _write_error(out / REPORT_NAME, e, report) from None
    if int8 and not report["int8"]["accepted"]:
        r = report["int8"]
        raise ExportCheckError(
            f"int8 model rejected: accuracy {r['accuracy_int8']:.4f} vs fp32 {r['accuracy_fp32']:.4f} on "
            f"{r['n_eval']} validation images (drop {r['drop']:.4f} > --max-drop {max_drop}); "
            f"{FP32_NAME} and {REPORT_NAME} written to {out}, no {INT8_NAME}"
        )
    return report


# ----------------------------------------------------------------------------------------- int8
def _int8(fp32_bytes, fp32_sess, calib_set, val, calib_method, max_drop, step, metadata) -> tuple[dict, bytes]:
    """Quantize with each candidate calibration method, keep the most accurate on the validation
    split (ties: higher agreement with fp32, then smaller probability error), judge it."""
    import onnx

    from .onnxrun import latency_ms, predict

    methods = list(quantize.METHODS) if calib_method == "auto" else [calib_method]
    fp32_probs = predict(fp32_sess, val.x, progress=step("validation: fp32", len(val.x)))
    acc_fp32 = float((fp32_probs.argmax(1) == val.y).mean())
    candidates: dict[str, dict] = {}

    def pick(keys):
        return max(keys, key=lambda k: (candidates[k]["accuracy"], candidates[k]["top1_agreement"], -candidates[k]["mean_abs_diff"]))

    with tempfile.TemporaryDirectory(prefix="edgeclf-quant-") as tmp:
        tmp = Path(tmp)
        (tmp / "fp32.onnx").write_bytes(fp32_bytes)
        quantize.prepare(tmp / "fp32.onnx", tmp / "prepared.onnx")
        # 7-bit weights first (the same results on every CPU family); full 8-bit ones only when
        # those fail the guard (exact on x86 with VNNI and ARM only: see quantize.FULL_RANGE_CPUS).
        for reduce_range in (True, False):
            for m in methods:
                key = m if reduce_range else f"{m}, 8-bit weights"
                path = tmp / f"int8-{m}-{int(reduce_range)}.onnx"
                quantize.quantize(tmp / "prepared.onnx", path, calib_set.x, m, reduce_range,
                                  progress=step(f"calibrating ({key})", len(calib_set.x)))
                probs = predict(open_session(path), val.x, progress=step(f"validation: int8 ({key})", len(val.x)))
                figures = parity.compare(fp32_probs, probs)
                candidates[key] = {
                    "accuracy": float((probs.argmax(1) == val.y).mean()),
                    "top1_agreement": float((probs.argmax(1) == fp32_probs.argmax(1)).mean()),
                    "mean_abs_diff": figures["mean_abs_diff"],
                    "reduce_range": reduce_range,
                    "path": path,
                }
            best = pick(candidates)
            if acc_fp32 - candidates[pick([k for k in candidates if candidates[k]["reduce_range"]])]["accuracy"] <= max_drop + 1e-12:
                best = pick([k for k in candidates if candidates[k]["reduce_range"]])
                break
        chosen = candidates[best]
        reduce_range = chosen["reduce_range"]
        proto = onnx.load(str(chosen["path"]))
        set_metadata(proto, metadata(chosen["accuracy"]))
        quantize.mark_target(proto, reduce_range)
        int8_bytes = proto.SerializeToString()

    int8_sess = open_session(int8_bytes)
    step("latency: fp32 vs int8, interleaved", 1)
    lat = latency_ms({"fp32": fp32_sess, "int8": int8_sess}, val.x[0])
    drop = acc_fp32 - chosen["accuracy"]
    result = {
        "n_calib": int(len(calib_set.x)),
        "n_eval": int(len(val.x)),
        "method": best.split(",")[0],
        "methods": {m: {k: v for k, v in c.items() if k != "path"} for m, c in candidates.items()},
        "selected_by": "7-bit weights when they pass the guard, else the more accurate of 7- and 8-bit; "
                       "then accuracy on the validation split, then top-1 agreement with fp32",
        "accuracy_fp32": acc_fp32,
        "accuracy_int8": chosen["accuracy"],
        "drop": drop,
        "max_drop": max_drop,
        "accepted": bool(drop <= max_drop + 1e-12),
        "top1_agreement": chosen["top1_agreement"],
        "size_ratio": len(int8_bytes) / len(fp32_bytes),
        "latency_ms": lat,
        "latency_ratio": lat["int8"] / lat["fp32"],
        "speedup": lat["fp32"] / lat["int8"],
        "reduce_range": reduce_range,
        "made_for": quantize.int8_target(reduce_range),
        "format": "QDQ, per-channel int8 weights, uint8 activations, softmax in float",
    }
    return result, int8_bytes


# ---------------------------------------------------------------------------------------- inputs
def _check_options(opset: int, calib_size: int, calib_method: str, parity_size: int, max_drop: float) -> None:
    if not math.isfinite(max_drop):  # NaN would reject every int8 model, inf accept any
        raise EdgeclfError(f"--max-drop {max_drop}: must be a finite accuracy drop (0.01 = 1 point)")
    if opset not in OPSETS:
        raise EdgeclfError(f"--opset {opset}: tf2onnx writes opsets {OPSETS.start} to {OPSETS.stop - 1}")
    if calib_size < 1:
        raise EdgeclfError(f"--calib-size {calib_size}: must be at least 1")
    if calib_method != "auto" and calib_method not in quantize.METHODS:
        raise EdgeclfError(f"--calib-method {calib_method}: expected auto, {', '.join(quantize.METHODS)}")
    if parity_size < 1:
        raise EdgeclfError(f"parity size {parity_size}: must be at least 1")


def _check_writable(out: Path) -> None:
    """Fail before any work when ``out`` cannot become a writable folder (nothing is created)."""
    if out.exists() and not out.is_dir():
        raise EdgeclfError(f"{out}: --out exists and is not a folder")
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise EdgeclfError(f"{out}: cannot create the output folder ({probe} is a file)")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise EdgeclfError(f"{out}: output folder is not writable")


def _class_names(src: RunSource, model, calib_dir: Path | None) -> list[str]:
    n = int(model.output_shape[-1])
    names = src.class_names
    if names is None and calib_dir is not None and _is_labelled(calib_dir):
        names = check_class_names(scan_class_folders(calib_dir)[0], calib_dir)
    if names is None:
        names = [f"class_{i}" for i in range(n)]
        print(f"warning: {src.model_path}: no run.json beside it; classes named {names[0]}..", file=sys.stderr)
    if len(names) != n:
        raise EdgeclfError(f"{src.model_path}: the model has {n} outputs but {len(names)} class names {names}")
    return list(names)


def _is_labelled(folder: Path) -> bool:
    try:
        scan_class_folders(folder)
        return True
    except EdgeclfError:
        return False


def _labelled_split(src: RunSource, class_names: list[str]) -> tuple[list[Path], list[int]]:
    paths, labels = [], []
    for p in src.split_paths("val"):
        label = src.label_of(p)
        if label is not None:
            paths.append(p)
            labels.append(label)
    return paths, labels


def _calibration_and_eval_paths(src, calib_dir, calib_files, class_names, val_paths, val_labels, calib_size, seed):
    """Calibration files (never judged on) and the labelled files the int8 model is judged on."""
    if calib_files is None:
        pool = src.split_paths("train")
        if not pool:
            raise EdgeclfError(f"{src.model_path}: no training images recorded in run.json; pass --calib DATA_DIR")
    else:
        pool = calib_files
    if not val_paths and calib_dir is not None and _is_labelled(calib_dir):
        # No validation split: hold out part of the labelled calibration folder to judge on.
        found, files = scan_class_folders(calib_dir)
        if all(c in class_names for c in found):
            held = {p for c in found for p in data.sample(files[c], max(1, int(len(files[c]) * HOLDOUT_FRACTION)), seed)}
            val_paths = sorted(held)
            val_labels = [class_names.index(p.relative_to(calib_dir).parts[0]) for p in val_paths]
            pool = [p for p in pool if p not in held]
    if not val_paths:
        raise EdgeclfError(
            f"{src.model_path}: --int8 needs labelled validation images (the run has no validation split); "
            "pass --calib with one sub-folder per class"
        )
    judged = {p.resolve() for p in val_paths}
    pool = [p for p in pool if p.resolve() not in judged]
    if not pool:
        raise EdgeclfError(f"{calib_dir or src.model_path}: no calibration image left outside the validation split")
    return data.sample(pool, calib_size, seed), val_paths, val_labels


def _parity_images(src, val, calib_set, size, parity_size, seed, step) -> np.ndarray:
    """Real images for the parity check: validation first, then calibration / training images."""
    xs = [val.x] + ([calib_set.x] if calib_set is not None else [])
    x = np.concatenate(xs)[:parity_size]
    want = min(parity_size, MIN_PARITY_IMAGES)
    if len(x) < want:
        used = set(val.paths) | set(calib_set.paths if calib_set is not None else [])
        extra = data.sample([p for p in src.split_paths("train") if p not in used], want - len(x), seed)
        if extra:
            more = data.load_images(extra, size, progress=step("reading parity images", len(extra)))
            x = np.concatenate([x, more.x])
    if len(x) == 0:
        x = data.generated_images(want, size, seed)
    return x


def _real(src, val, calib_set) -> bool:
    return len(val.x) > 0 or (calib_set is not None and len(calib_set.x) > 0) or bool(src.split_paths("train"))


def _keras_predict(model, x: np.ndarray, progress: Callable[[int], None] | None, batch_size: int = 32) -> np.ndarray:
    return in_batches(lambda b: np.asarray(model(b.astype(np.float32), training=False), np.float32), x, batch_size, progress)


# ---------------------------------------------------------------------------------------- output
def _write(path: Path, payload: bytes, report: dict, precision: str) -> None:
    try:
        with atomic_path(path) as tmp:
            tmp.write_bytes(payload)
    except OSError as e:
        raise _write_error(path, e, report) from None
    report["files"][precision] = path.name
    report["sizes_bytes"][precision] = len(payload)


def _write_error(path: Path, e: OSError, report: dict) -> EdgeclfError:
    """A failed write (disk full, folder made read-only) as one line that says what was written."""
    done = ", ".join(name for name in report["files"].values() if name != path.name)
    kept = f"{done} written before it" if done else "nothing written"
    return EdgeclfError(f"{path}: cannot write ({e.strerror or first_line(e)}); {kept}")


def _remove_stale(out: Path, report: dict, sha: str) -> None:
    """An int8/fp16 file left by an export of another model must not sit beside this one."""
    import onnx

    for name in (INT8_NAME, FP16_NAME):
        path = out / name
        if name in report["files"].values() or not path.is_file():
            continue
        try:
            props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        except Exception:
            props = {}
        if props.get(md.SOURCE_SHA256) != sha:
            path.unlink()
            print(f"warning: removed {path}: it was exported from another model", file=sys.stderr)


def _versions() -> dict:
    import onnx
    import onnxruntime
    import tensorflow as tf
    import tf2onnx

    return {
        "edgeclf": __version__, "tensorflow": tf.__version__, "tf2onnx": tf2onnx.__version__,
        "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__, "python": platform.python_version(),
    }


@contextlib.contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    """Progress bars on stderr that stay as a record of the checks; yields ``step(description,
    total)``, which adds a bar and returns its advance."""
    with Bars(quiet=not enabled, transient=False, width=36) as bars:

        def step(description: str, total: int) -> Callable[[int], None]:
            bar = bars.add(description, max(total, 1))
            if total <= 1:
                bar.update(completed=1)
            return bar

        yield step
