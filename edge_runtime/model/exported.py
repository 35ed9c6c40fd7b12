"""An export folder's files belong together: a model file beside an ``export.json`` must be the
file that export wrote, by the SHA-256 it recorded.

``edgeclf export`` swaps a whole folder in at the end, so edgeclf itself never leaves a mixed one;
this check catches the rest (a file copied over by hand, a sync tool that stopped half-way). It
costs one read of the model: 22 ms measured for 14 MB on a busy x86 workstation (SHA-NI); about
0.1 s expected on a Raspberry Pi 4 (100-200 MB/s, not measured), next to the hundreds of
milliseconds an onnxruntime session takes to start.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from edgeclf.errors import EdgeclfError

FP32_NAME, INT8_NAME, FP16_NAME, REPORT_NAME = "model.onnx", "model.int8.onnx", "model.fp16.onnx", "export.json"
TFLITE_INT8_NAME = "model.int8.tflite"  # LiteRT's int8 model (``export --format tflite``)
MODEL_NAMES = (FP32_NAME, INT8_NAME, FP16_NAME, TFLITE_INT8_NAME)
_MAX_REPORT_BYTES = 1 << 20  # export.json is a few kB; a bigger one is not edgeclf's


def check_export_member(model: Path) -> None:
    """Refuse, in one line naming the file, a model whose folder's export.json records another
    file under its name (or none, for edgeclf's own file names). Nothing to check without an
    export.json, or with one from an edgeclf that recorded no hashes."""
    record = model.parent / REPORT_NAME
    if not record.is_file():
        return
    recorded = _recorded_hashes(record)
    if recorded is None:
        return
    if model.name not in recorded:
        if model.name in MODEL_NAMES:
            raise EdgeclfError(f"{model}: not part of the export described by {record} (left by another export?); "
                               "export again")
        return
    with open(model, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    if digest != recorded[model.name]:
        raise EdgeclfError(f"{model}: not the file {record} records (SHA-256 differs: a mixed or damaged export "
                           "folder); export again")


def _recorded_hashes(record: Path) -> dict[str, str] | None:
    """{file name: SHA-256} as export.json records them; None when it records no hashes (an older export)."""
    try:
        if record.stat().st_size > _MAX_REPORT_BYTES:
            raise ValueError("too big")
        report = json.loads(record.read_text(encoding="utf-8"))
        hashes, files = report.get("sha256"), report.get("files", {})
        if hashes is None:
            return None
        return {files[k]: v for k, v in hashes.items()}
    except (OSError, ValueError, AttributeError, KeyError, TypeError, RecursionError) as e:
        raise EdgeclfError(f"{record}: unreadable export record ({type(e).__name__}); export again") from None
