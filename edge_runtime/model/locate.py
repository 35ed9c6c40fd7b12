"""The ONNX model a user means by a folder or a Keras file: ``edgeclf predict runs/pets`` runs the
run's export (``runs/pets/export``, where ``edgeclf export`` writes by default), and a run or a
``.keras`` file not exported yet is refused with the command that exports it. Which of the
export's files depends on the device that runs it (``EXPORTED`` / ``GPU_EXPORTED``)."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from edgeclf.errors import EdgeclfError
from edgeclf.model import litert
from edgeclf.model.exported import FP16_NAME, FP32_NAME, INT8_NAME, TFLITE_INT8_NAME

#: The files an export folder holds, in the order ``predict`` prefers them on the CPU: the int8
#: model is the one made for devices (its accuracy checked against fp32 at export).
EXPORTED = (INT8_NAME, FP32_NAME)
#: ... and on a GPU (CUDA, TensorRT), where int8 is the slowest: ``bench --provider cuda`` on an
#: H200 (onnxruntime-gpu 1.31.1, Lite0 at 160 px), batch 32: fp16 16,751 frames/s, fp32 13,927,
#: int8 9,815; batch 1 p50: 1.50, 1.51 and 2.94 ms.
GPU_EXPORTED = (FP16_NAME, FP32_NAME, INT8_NAME)
EXPORT_FOLDER = "export"


def onnx_model(path: str | os.PathLike, gpu: bool = False) -> tuple[Path, bool]:
    """``(model file, found)``: ``path`` itself unless it is a folder or a ``.keras`` file, else the
    export of that run (``found`` True), its file chosen for a GPU when ``gpu``; a one-line error
    naming the export command when there is none. Anything else is left to the model loader,
    which says what is wrong with it."""
    path = Path(path)
    is_keras = path.suffix.lower() == ".keras" and path.is_file()
    if not (path.is_dir() or is_keras):
        return path, False
    run = path.parent if is_keras else path
    names = GPU_EXPORTED if gpu else EXPORTED
    for folder in (run, run / EXPORT_FOLDER):
        for name in names:
            if (folder / name).is_file():
                return folder / name, True
    if is_keras or (path / "run.json").is_file() or (path / "model.keras").is_file():
        what = "a Keras model" if is_keras else "a training run folder"
        raise EdgeclfError(f"{path}: {what}, not exported yet; predict runs ONNX models: export it first with "
                           f"`edgeclf export {shlex.quote(str(path))} --int8`, then predict on "
                           f"{run / EXPORT_FOLDER / EXPORTED[0]}")
    raise EdgeclfError(f"{path}: a folder with no {' or '.join(names)} in it or in {EXPORT_FOLDER}/ "
                       "(expected an .onnx model, a run folder or an export folder)")


def why_this_file(model: Path, gpu: bool) -> str:
    """Why ``onnx_model`` chose ``model`` from an export folder, for the line ``predict`` prints
    ("" on the CPU, where the int8 model is the default everyone expects)."""
    if not gpu:
        return ""
    if model.name == FP16_NAME:
        return "fp16 is the fastest format on a GPU; name a file to choose another"
    return f"this export has no {FP16_NAME}, the fastest format on a GPU (`edgeclf export --fp16` writes one)"


#: What ``--engine`` accepts: ``auto`` follows ``edgeclf bench FOLDER --engines``' record where it
#: applies on this machine (``engine_choice``), else runs onnxruntime.
ENGINE_CHOICES = ("auto", "onnxruntime", "litert", "openvino")


@dataclass(frozen=True)
class Located:
    """The model file a user means, and how to run it."""

    path: Path
    found: bool  # chosen from a folder (False: the file given, run as it is)
    why: str = ""  # why this file, for the line predict prints ("" when nothing needs saying)
    threads: int | None = None  # the thread count the engine record chose (None: the engine's default)
    engine: str = "onnxruntime"  # what runs it: onnxruntime, litert (a .tflite file) or openvino


def exported_model(path: str | os.PathLike, gpu: bool = False, engine: str = "auto", needs_unknown: bool = False) -> Located:
    """``onnx_model``, then the engine: ``litert`` runs the folder's ``model.int8.tflite``,
    ``openvino`` its ONNX model on OpenVINO; ``auto`` on the CPU the engine and threads ``edgeclf
    bench --engines`` recorded for this machine, but not a LiteRT model without the unknown score
    (exported before LiteRT had one) when the caller ``needs_unknown`` and the ONNX models have it
    (speed must not silently cost the answer "none of its classes"): then the record's fastest
    other engine, or onnxruntime. A file named is run as
    given: a .tflite file on LiteRT, an .onnx one on onnxruntime unless ``engine`` is openvino."""
    from edgeclf.model import engine_choice

    if engine not in ENGINE_CHOICES:
        raise EdgeclfError(f"--engine {engine}: expected {', '.join(ENGINE_CHOICES)}")
    model, found = onnx_model(path, gpu=gpu)
    if not found:
        return _named_file(model, engine)
    folder = model.parent
    if engine == "litert":
        tflite = folder / TFLITE_INT8_NAME
        if not tflite.is_file():
            raise EdgeclfError(f"{folder}: no {TFLITE_INT8_NAME} for --engine litert; export one with "
                               "`edgeclf export RUN --format tflite`")
        why = "--engine litert" + (": this LiteRT model has no unknown score, so no frame is answered 'unknown'"
                                   if needs_unknown and _litert_lacks_score(folder) else "")
        return Located(tflite, True, why, engine="litert")
    if engine == "openvino":
        return Located(model, True, "--engine openvino", engine="openvino")
    if engine == "auto" and not gpu:
        choice, why = engine_choice.applicable_choice(folder, no_litert=needs_unknown and _litert_lacks_score(folder))
        if choice is not None:
            return Located(folder / choice["file"], True, why, choice["threads"], choice["engine"])
        return Located(model, True, why)
    return Located(model, True, why_this_file(model, gpu))


def _named_file(model: Path, engine: str) -> Located:
    """A model file named on the command line, on the engine its kind and ``engine`` say."""
    is_tflite = model.suffix.lower() == ".tflite"
    if (engine == "litert" and not is_tflite) or (engine in ("onnxruntime", "openvino") and is_tflite):
        raise EdgeclfError(f"--engine {engine}: {model} is {'a LiteRT' if is_tflite else 'not a .tflite'} model; "
                           "name a model of that engine, or a run or export folder")
    return Located(model, False, engine="litert" if is_tflite else ("openvino" if engine == "openvino" else "onnxruntime"))


def _litert_lacks_score(folder: Path) -> bool:
    """Whether the export's ONNX models have the unknown score and its LiteRT model does not."""
    return _has_unknown_score(folder) and not litert.has_unknown_score(folder / TFLITE_INT8_NAME)


def _has_unknown_score(folder: Path) -> bool:
    """Whether the export's ONNX models carry the unknown score (export.json records its
    calibration); True when that cannot be read, as nothing then says the score can be dropped."""
    import json

    from edgeclf.model.exported import REPORT_NAME

    try:
        return "unknown" in json.loads((folder / REPORT_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError, RecursionError):
        return True
