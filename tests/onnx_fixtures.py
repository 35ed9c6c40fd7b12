"""Tiny real ONNX models for the runtime tests, written without the ``onnx`` package (it comes
only with the train extra, and a device must be able to run these tests on the base install).

``make_colour_model`` is an exported-edgeclf-style model that classifies an image by its mean
colour: input ``image`` uint8 NHWC RGB, output ``probs`` softmax over red/green/blue. Simple
enough that the right answer is known for any test image, so tests check real predictions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.onnx_models import (COLOURS, FLOAT, UINT8, edgeclf_metadata, make_colour_model, make_conv_model, model, node, save,
                                     tensor, value_info)

__all__ = ["BGR", "COLOURS", "edgeclf_metadata", "make_colour_model", "make_conv_model", "make_vector_model", "solid"]

#: BGR images that the colour model labels red, green and blue.
BGR = {"red": (0, 0, 255), "green": (0, 255, 0), "blue": (255, 0, 0)}


def make_vector_model(path: Path) -> Path:
    """A valid ONNX model whose input is a float vector [N, 10], not an image."""
    data = model([node("Softmax", ["x"], ["probs"], axis=-1)], "vector", [value_info("x", FLOAT, ["N", 10])],
                 [value_info("probs", FLOAT, ["N", 10])])
    return save(data, path)


def solid(colour: str, h: int = 48, w: int = 64) -> np.ndarray:
    """A BGR image of one colour, with a little noise so it is not trivially uniform."""
    rng = np.random.default_rng(abs(hash(colour)) % 2**32)
    img = np.full((h, w, 3), BGR[colour], np.int16) + rng.integers(-20, 20, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def make_head_model(path: Path, size: tuple[int, int] = (32, 32), bank_per_class: int = 5,
                    metadata: dict | None = None) -> Path:
    """An export-shaped model with the layout ``add-class`` changes: ``embedding`` = the mean RGB
    colour / 255 [N, 3], a float head ``edgeclf_head/W`` (10 x identity) and ``/b``, and a bank
    of embeddings with their classes (noisy pure colours), under edgeclf's names."""
    from edgeclf.model import protoedit
    from edgeclf.model.unknown import quantize_bank

    rng = np.random.default_rng(0)
    bank = np.concatenate([np.clip(np.eye(3)[c] + rng.normal(0, 0.05, (bank_per_class, 3)), 0, 1) for c in range(3)])
    labels = np.repeat(np.arange(3), bank_per_class).astype(np.int64)
    nodes = [
        node("Cast", ["image"], ["xf"], to=FLOAT),
        node("ReduceMean", ["xf"], ["mean"], axes=[1, 2], keepdims=0),
        node("Mul", ["mean", "inv255"], ["embedding"]),
        node("MatMul", ["embedding", "edgeclf_head/W"], ["z"]),
        node("Add", ["z", "edgeclf_head/b"], ["logits"]),
        node("Softmax", ["logits"], ["probs"], axis=-1),
    ]
    inits = [tensor("inv255", np.array(1 / 255, np.float32)),
             protoedit.encode_tensor("edgeclf_head/W", np.eye(3, dtype=np.float32) * 10),
             protoedit.encode_tensor("edgeclf_head/b", np.zeros(3, np.float32)),
             protoedit.encode_tensor("edgeclf_unknown/bank", bank.astype(np.float16)),
             protoedit.encode_tensor("edgeclf_unknown/bank_labels", labels),
             protoedit.encode_tensor("edgeclf_unknown/k", np.array([2], np.int64))]
    bank_q, scale = quantize_bank(bank)
    inits += [protoedit.encode_tensor("edgeclf_unknown/bank_q", bank_q),
              protoedit.encode_tensor("edgeclf_unknown/bank_scale", np.array(scale, np.float32)),
              protoedit.encode_tensor("edgeclf_unknown/bank_bias", np.zeros(len(bank), np.float32))]
    data = model(nodes, "head", [value_info("image", UINT8, ["N", *size, 3])],
                 [value_info("probs", FLOAT, ["N", "classes"]), value_info("embedding", FLOAT, ["N", 3])], inits,
                 metadata=metadata or edgeclf_metadata(COLOURS, size))
    return save(data, path)
