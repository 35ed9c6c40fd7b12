"""The keys edgeclf writes into an ONNX model's metadata_props, so the runtime needs no other file,
and ``model_metadata``, the one place that fills them in (the exporter and the test models)."""

from __future__ import annotations

import json
import unicodedata

CLASS_NAMES = "class_names"  # JSON list, index order
INPUT_HEIGHT = "input_height"
INPUT_WIDTH = "input_width"
COLOR_ORDER = "color_order"  # "RGB"
PREPROCESSING = "preprocessing"  # JSON object: resize rule, where rescaling happens
ARCHITECTURE = "architecture"
VAL_ACCURACY = "val_accuracy"
SOURCE_SHA256 = "source_sha256"  # hash of the Keras model file it came from
EDGECLF_VERSION = "edgeclf_version"
PRECISION = "precision"  # "fp32", "int8" or "fp16"
WEIGHTS = "weights"  # JSON object: the pretrained backbone and its weights file's SHA-256 (absent: from scratch)
INT8_CPUS = "int8_cpus"  # JSON list of sysinfo.CPU_FAMILIES the int8 model was made and checked for
OUTPUT = "output"  # what the output rows are: PROBABILITIES (absent: the same) or LOGITS (edgeclf softmaxes them)
PROBABILITIES = "probabilities"
LOGITS = "logits"
# JSON object: how far from the training photos a frame may be before it is "unknown"
# (edgeclf.model.unknown); present when the model also outputs UNKNOWN_NAME.
UNKNOWN = "unknown"

#: The longest class name (characters) a model may carry, and so a training folder may have.
MAX_CLASS_NAME = 200

# Unicode categories a class name must not hold: controls (Cc), format characters (Cf: the
# right-to-left overrides and marks, zero-width spaces and joiners, the BOM), which hide or reorder
# what a terminal, a report or a plot shows ("cat" and "cat\u200b" look the same), line and paragraph
# separators (Zl, Zp), and lone surrogates (Cs: bytes of a folder name that are not UTF-8).
_REFUSED_CATEGORIES = {"Cc": "control characters", "Cf": "invisible or right-to-left formatting characters",
                       "Zl": "line separators", "Zp": "paragraph separators", "Cs": "bytes that are not UTF-8"}


def class_name_problem(name: str) -> str | None:
    """What is wrong with ``name`` as a class name, or None when nothing is: the one rule that
    ``edgeclf train`` applies to folder names and the runtime to a model's metadata."""
    if not name.strip():
        return "is empty or blank"
    if len(name) > MAX_CLASS_NAME:
        return f"is longer than {MAX_CLASS_NAME} characters"
    for ch in name:
        what = _REFUSED_CATEGORIES.get(unicodedata.category(ch))
        if what is not None:
            return f"holds {what} (U+{ord(ch):04X} {unicodedata.name(ch, 'unnamed')})"
    return None


INPUT_NAME = "image"  # uint8 NHWC, batch dynamic, RGB 0-255
OUTPUT_NAME = "probs"  # float32 [N, classes], softmax (unless OUTPUT says logits)
EMBEDDING_NAME = "embedding"  # float32 [N, D]: the features the head classifies
UNKNOWN_NAME = "unknown_score"  # float32 [N]: distance from the training photos (higher: less like them)
# Initializers the device rewrites to add or remove a class (edgeclf.model.classes): the head
# HEAD_PREFIX + "W" [D, C] and "b" [C]; the unknown score's reference UNKNOWN_PREFIX + "bank"
# [M, D] (float16 embeddings of training photos), "bank_labels" [M] (int64 class indices) and
# "bank_q" [D, M] (the rows normalised, int8) with "bank_scale", and "bank_bias" [M] (float32,
# added to each row's similarity: 0 for trained photos, more for add-class's few photos).
HEAD_PREFIX = "edgeclf_head/"
UNKNOWN_PREFIX = "edgeclf_unknown/"


def model_metadata(
    class_names: list[str],
    size: tuple[int, int],
    architecture: str,
    precision: str,
    val_accuracy: float | None = None,
    source_sha256: str = "",
    weights: dict | None = None,
    resize: str | None = None,
) -> dict[str, str]:
    """The metadata the edge runtime reads, for a model of ``size`` (height, width) trained with
    ``resize`` (``edgeclf.image.RESIZES``; default: this version's)."""
    from edgeclf import (
        __version__,  # here: this module is otherwise only names
        image as preprocess,
    )

    return {
        **({WEIGHTS: json.dumps(weights)} if weights else {}),
        CLASS_NAMES: json.dumps(list(class_names)),
        INPUT_HEIGHT: str(size[0]),
        INPUT_WIDTH: str(size[1]),
        COLOR_ORDER: preprocess.COLOR_ORDER,
        PREPROCESSING: json.dumps({"resize": resize or preprocess.RESIZE, "rescale": "inside the model", "input": "uint8 RGB 0-255 NHWC"}),
        ARCHITECTURE: architecture,
        VAL_ACCURACY: "" if val_accuracy is None else f"{val_accuracy:.6f}",
        SOURCE_SHA256: source_sha256,
        EDGECLF_VERSION: __version__,
        PRECISION: precision,
    }
