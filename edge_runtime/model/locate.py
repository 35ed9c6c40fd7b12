"""The ONNX model a user means by a folder or a Keras file: ``edgeclf predict runs/pets`` runs the
run's export (``runs/pets/export``, where ``edgeclf export`` writes by default), and a run or a
``.keras`` file not exported yet is refused with the command that exports it."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from edgeclf.errors import EdgeclfError

#: The files an export folder holds, in the order ``predict`` prefers them: the int8 model is the
#: one made for devices (its accuracy checked against fp32 at export).
EXPORTED = ("model.int8.onnx", "model.onnx")
EXPORT_FOLDER = "export"


def onnx_model(path: str | os.PathLike) -> tuple[Path, bool]:
    """``(model file, found)``: ``path`` itself unless it is a folder or a ``.keras`` file, else the
    export of that run (``found`` True); a one-line error naming the export command when there is
    none. Anything else is left to the model loader, which says what is wrong with it."""
    path = Path(path)
    is_keras = path.suffix.lower() == ".keras" and path.is_file()
    if not (path.is_dir() or is_keras):
        return path, False
    run = path.parent if is_keras else path
    for folder in (run, run / EXPORT_FOLDER):
        for name in EXPORTED:
            if (folder / name).is_file():
                return folder / name, True
    if is_keras or (path / "run.json").is_file() or (path / "model.keras").is_file():
        what = "a Keras model" if is_keras else "a training run folder"
        raise EdgeclfError(f"{path}: {what}, not exported yet; predict runs ONNX models: export it first with "
                           f"`edgeclf export {shlex.quote(str(path))} --int8`, then predict on "
                           f"{run / EXPORT_FOLDER / EXPORTED[0]}")
    raise EdgeclfError(f"{path}: a folder with no {' or '.join(EXPORTED)} in it or in {EXPORT_FOLDER}/ "
                       "(expected an .onnx model, a run folder or an export folder)")
