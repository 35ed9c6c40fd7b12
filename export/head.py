"""The classification head as plain float initializers the device can rewrite.

tf2onnx writes the Keras head (Dense + softmax) as whatever nodes it fuses, and quantization turns
its weights into int8 tensors under generated names. ``float_head`` replaces it, in the fp32 model
and in each int8 candidate before it is judged, by ``MatMul(embedding, edgeclf_head/W) +
edgeclf_head/b -> Softmax`` with the Keras layer's own float weights: the same probabilities (the
parity check and the int8 guard judge the result), and a layout that ``edgeclf add-class`` and
``remove-class`` change by rewriting three tensors, without TensorFlow or the ``onnx`` package
(edgeclf.model.protoedit). The head costs D x C multiply-adds: 2,560 for Lite0 and two classes.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgeclf.model import metadata as md

PREFIX = md.HEAD_PREFIX


def float_head(model: onnx.ModelProto, weights: np.ndarray, bias: np.ndarray) -> None:
    """Make ``probs`` = softmax(embedding @ ``weights`` + ``bias``) in ``model`` (in place): the
    nodes that computed it before, and anything only they used, are removed."""
    g = model.graph
    for node in g.node:  # the old head's output becomes an internal name, so nothing else can read "probs"
        node.output[:] = [PREFIX + "old_probs" if o == md.OUTPUT_NAME else o for o in node.output]
    g.initializer.extend([numpy_helper.from_array(np.asarray(weights, np.float32), PREFIX + "W"),
                          numpy_helper.from_array(np.asarray(bias, np.float32), PREFIX + "b")])
    g.node.extend([
        helper.make_node("MatMul", [md.EMBEDDING_NAME, PREFIX + "W"], [PREFIX + "z"], name=PREFIX + "matmul"),
        helper.make_node("Add", [PREFIX + "z", PREFIX + "b"], [PREFIX + "logits"], name=PREFIX + "add"),
        helper.make_node("Softmax", [PREFIX + "logits"], [md.OUTPUT_NAME], name=PREFIX + "softmax", axis=-1),
    ])
    outputs = [o for o in g.output if o.name != md.OUTPUT_NAME]
    del g.output[:]
    g.output.extend([helper.make_tensor_value_info(md.OUTPUT_NAME, TensorProto.FLOAT, [None, "classes"]), *outputs])
    prune(model)


def prune(model: onnx.ModelProto) -> None:
    """Remove the nodes no graph output depends on, and the initializers nothing reads."""
    g = model.graph
    needed = {o.name for o in g.output}
    keep = []
    for node in reversed(g.node):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
    keep.reverse()
    del g.node[:]
    g.node.extend(keep)
    used = [t for t in g.initializer if t.name in needed or t.name.startswith(md.UNKNOWN_PREFIX)]
    del g.initializer[:]
    g.initializer.extend(used)


def head_weights(keras_model) -> tuple[np.ndarray, np.ndarray] | None:
    """(W [D, C], b [C]) of the Keras model's ``probs`` Dense layer, or None when it has none."""
    try:
        layer = keras_model.get_layer(md.OUTPUT_NAME)
    except ValueError:
        return None
    w = layer.get_weights()
    return (np.asarray(w[0]), np.asarray(w[1])) if len(w) == 2 else None
