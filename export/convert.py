"""Keras -> ONNX with tf2onnx, on a path that works with Keras 3 and TensorFlow >= 2.16.

``tf2onnx.convert.from_keras`` fails on Keras 3 (onnx/tensorflow-onnx#2329, #2348, #2448), so the
model is wrapped in a ``tf.function`` with an explicit input signature and converted with
``from_function``. The wrapper takes uint8 pixels and casts them inside the graph: a frame
crosses into the runtime as 1 byte a channel instead of 4.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging

import onnx

from edgeclf.errors import EdgeclfError, first_line
from edgeclf.model import metadata as md
from edgeclf.train.keras_model import input_size_of, with_embedding

DEFAULT_OPSET = 17


def keras_to_onnx(model, opset: int = DEFAULT_OPSET, label: str | None = None) -> onnx.ModelProto:
    """Convert a Keras classifier (float RGB 0-255 in, softmax out) to ONNX with a uint8 ``image``
    input [N, H, W, 3] (batch dynamic), a float32 ``probs`` output and, when the model ends in a
    ``probs`` layer (every edgeclf model), the float32 ``embedding`` that layer classifies;
    checked by the ONNX checker.

    ``label`` names the model in error messages (its file)."""
    import tensorflow as tf
    import tf2onnx

    label = label or model.name
    # tf2onnx logs unsupported ops itself; they are reported below in one line instead.
    logging.getLogger("tf2onnx").setLevel(logging.CRITICAL)
    h, w = input_size_of(model, label)
    spec = (tf.TensorSpec((None, h, w, 3), tf.uint8, name=md.INPUT_NAME),)

    net = with_embedding(model)

    @tf.function(input_signature=spec)
    def classify(image):
        outputs = net(tf.cast(image, tf.float32), training=False)
        if net is model:
            return {md.OUTPUT_NAME: tf.cast(outputs, tf.float32)}
        return {md.OUTPUT_NAME: tf.cast(outputs[0], tf.float32), md.EMBEDDING_NAME: tf.cast(outputs[1], tf.float32)}

    try:
        proto, _ = tf2onnx.convert.from_function(classify, input_signature=spec, opset=opset)
    except Exception as e:  # tf2onnx raises plain Exceptions/ValueErrors for unsupported ops
        raise EdgeclfError(f"{label}: tf2onnx cannot convert this model ({first_line(e, 200)})") from None
    # tf2onnx leaves TensorFlow ops it cannot convert in the graph rather than failing.
    unknown = sorted({n.op_type for n in proto.graph.node if not onnx.defs.has(n.op_type, n.domain)})
    if unknown:
        raise EdgeclfError(f"{label}: layers use TensorFlow ops tf2onnx cannot convert to ONNX: {', '.join(unknown)}")
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as e:
        raise EdgeclfError(f"{label}: the converted ONNX graph fails the ONNX checker ({first_line(e, 200)})") from None
    release_memory()  # the traced graph and its copies: 0.7 GB for EfficientNet-Lite0
    return proto


def release_memory() -> None:
    """Free unreachable objects and hand glibc's free pages back to the system: its per-thread
    arenas otherwise keep them, and the next stage's arrays land beside them rather than in them
    (with the int8 stage's calls, the export's peak went from 2.26 to 1.74 GB: benchmarks/results/export_memory.md)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def set_metadata(proto: onnx.ModelProto, props: dict[str, str]) -> None:
    """Replace the model's metadata_props with ``props`` (all values strings)."""
    del proto.metadata_props[:]
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, str(value)
