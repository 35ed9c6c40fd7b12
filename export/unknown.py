"""The unknown score: how far a photo's embedding lies from every training photo's, computed
inside the exported model, and the operating point export calibrates for it.

The score is the k-nearest-neighbour cosine distance (Sun et al., "Out-of-distribution detection
with deep nearest neighbors", ICML 2022): 1 minus the k-th largest cosine similarity between
the photo's L2-normalised embedding (the input of the model's ``probs`` layer) and a bank of the
training photos' embeddings. Chosen by measurement over max-softmax, energy and Mahalanobis
(benchmarks/results/ood_methods.md). The bank travels in the ONNX file twice: normalised and
int8 for the score (one [1, D] x [D, M] integer product a frame), and raw in float16 with its
class indices for ``add-class``; the device needs nothing but the model file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgeclf.model import metadata as md
from edgeclf.model.unknown import knn_distance, quantize_bank

#: Neighbour rank the score reads (measured: benchmarks/results/ood_methods.md).
DEFAULT_K = 5
#: Share of held-back in-class photos the operating point rejects.
DEFAULT_REJECT = 0.02
#: Training photos in the bank at most (a seeded stratified sample beyond): 1,000 x 1,280 float16
#: is 2.6 MB in the file and 1.3 M multiply-adds a frame, 0.3% of EfficientNet-Lite0's.
MAX_BANK = 1000


@dataclass
class Bank:
    """Training photos' embeddings [M, D] (float32 here; float16 in the file, as here after
    rounding) with their class indices [M], and the neighbour rank k the score reads."""

    vectors: np.ndarray
    labels: np.ndarray
    k: int

    @classmethod
    def of(cls, embeddings: np.ndarray, labels: np.ndarray, k: int = DEFAULT_K) -> "Bank":
        e = np.asarray(embeddings, np.float32).astype(np.float16).astype(np.float32)
        return cls(e, np.asarray(labels, np.int64), max(1, min(k, len(e))))

    def scores(self, embeddings: np.ndarray) -> np.ndarray:
        """The score, in numpy (as the graph computes it), for tests and benchmarks."""
        return knn_distance(embeddings, self.vectors, self.k)


def add_score(model: onnx.ModelProto, bank: Bank, embedding: str = md.EMBEDDING_NAME) -> None:
    """Append the score to ``model`` as the output ``unknown_score`` [N], from its output
    ``embedding`` [N, D]. Changes ``model`` in place.

    The frame's normalised embedding is quantized on the fly and multiplied with the int8 bank
    (``edgeclf.model.unknown.quantize_bank``): the product reads 1 byte per bank value instead of 4 (measured on
    EfficientNet-Lite0 int8, 640 photos: the float product alone took 106 us of a 3.7 ms frame).
    The raw float16 bank and its classes stay in the file for ``add-class``."""
    g = model.graph
    p = md.UNKNOWN_PREFIX
    bank_q, scale = quantize_bank(bank.vectors)
    g.initializer.extend([
        numpy_helper.from_array(bank.vectors.astype(np.float16), p + "bank"),
        numpy_helper.from_array(bank.labels, p + "bank_labels"),
        numpy_helper.from_array(bank_q, p + "bank_q"),
        numpy_helper.from_array(np.array(scale, np.float32), p + "bank_scale"),
        numpy_helper.from_array(np.zeros(len(bank.vectors), np.float32), p + "bank_bias"),
        numpy_helper.from_array(np.array([bank.k], np.int64), p + "k"),
        numpy_helper.from_array(np.array(bank.k - 1, np.int64), p + "kth"),
        numpy_helper.from_array(np.array(1.0, np.float32), p + "one"),
    ])

    def n(op: str, ins: list[str], outs: list[str], **kw) -> None:
        g.node.append(helper.make_node(op, [x if x == embedding else p + x for x in ins],
                                       [o if o == md.UNKNOWN_NAME else p + o for o in outs], name=p + outs[0], **kw))

    n("LpNormalization", [embedding], ["unit"], axis=1, p=2)
    n("DynamicQuantizeLinear", ["unit"], ["unit_q", "unit_scale", "unit_zero"])
    # In this order onnxruntime fuses the four into one DynamicQuantizeMatMul (six nodes in all, not ten)
    n("MatMulInteger", ["unit_q", "bank_q", "unit_zero"], ["sims_q"])
    n("Cast", ["sims_q"], ["sims_f"], to=TensorProto.FLOAT)
    n("Mul", ["unit_scale", "bank_scale"], ["sim_scale"])
    n("Mul", ["sims_f", "sim_scale"], ["sims_raw"])
    n("Add", ["sims_raw", "bank_bias"], ["sims"])  # 0 for trained photos; add-class's few photos reach further
    n("TopK", ["sims", "k"], ["top", "top_i"], axis=1, largest=1, sorted=1)
    n("Gather", ["top", "kth"], ["kth_sim"], axis=1)  # a scalar index: [N]
    n("Sub", ["one", "kth_sim"], [md.UNKNOWN_NAME])
    g.output.append(helper.make_tensor_value_info(md.UNKNOWN_NAME, TensorProto.FLOAT, [None]))


def threshold(scores: np.ndarray, reject: float = DEFAULT_REJECT) -> float:
    """The score above which a photo is unknown: the (1 - ``reject``) quantile of held-back
    in-class photos' scores (linear interpolation), so about ``reject`` of them are rejected."""
    return float(np.quantile(np.asarray(scores, np.float64), 1 - reject))


def metadata(bank: Bank, thr: float, reject: float, n_calibrated: int, rejected: float) -> dict[str, str]:
    """The ``unknown`` metadata entry the runtime reads (``edgeclf.model.unknown``)."""
    return {md.UNKNOWN: json.dumps({
        "method": "knn-cosine", "k": bank.k, "bank": int(len(bank.vectors)), "threshold": round(thr, 6),
        "target_reject": reject, "calibrated_on": int(n_calibrated), "rejected_in_class": round(rejected, 6),
    })}


def embeddings(session, x: np.ndarray, batch_size: int = 32, progress=None) -> np.ndarray:
    """The ``embedding`` output [N, D] of a session for uint8 RGB images [N, H, W, 3]."""
    from edgeclf.model.batching import in_batches

    return in_batches(lambda b: session.run([md.EMBEDDING_NAME], {md.INPUT_NAME: b})[0], x, batch_size, progress)


def has_embedding(model: onnx.ModelProto) -> bool:
    return any(o.name == md.EMBEDDING_NAME for o in model.graph.output)


def attach(payload: bytes, bank: Bank, held_back: np.ndarray, reject: float, progress=None,
           reference: tuple[np.ndarray, float] | None = None) -> tuple[bytes, dict, np.ndarray]:
    """``payload`` (an ONNX model with an ``embedding`` output) with the unknown score added and
    its operating point calibrated on ``held_back`` (in-class photos training never saw) written
    into its metadata. Returns the new model, the figures (for export.json) and the scores.

    ``reference``: (another model's scores on the same photos, its threshold), for the int8 model:
    its threshold is fp32's moved by the median paired difference of their scores. Quantiles set
    apart on a validation split of 160 photos differed by a photo's worth and made int8 reject
    4.0% of unseen in-class photos against fp32's 1.5% (benchmarks/results/unknown.md, before);
    the paired shift carries fp32's operating point over instead."""
    from edgeclf.model.session import open_session

    from .convert import set_metadata

    proto = onnx.load_from_string(payload)
    add_score(proto, bank)
    scored = proto.SerializeToString()
    session = open_session(scored)
    scores = np.concatenate([s for s in (
        session.run([md.UNKNOWN_NAME], {md.INPUT_NAME: held_back[i:i + 32]})[0] for i in range(0, len(held_back), 32))])
    if progress is not None:
        progress(len(held_back))
    figures = operating_point(scores, reject, reference)
    meta = {e.key: e.value for e in proto.metadata_props}
    meta.update(metadata(bank, figures["threshold"], reject, len(held_back), figures["rejected_in_class"]))
    set_metadata(proto, meta)
    return proto.SerializeToString(), figures, scores


def operating_point(scores: np.ndarray, reject: float, reference: tuple[np.ndarray, float] | None = None) -> dict:
    """The threshold for held-back photos' ``scores`` and export.json's figures: the quantile that
    rejects ``reject`` of them, or with a ``reference`` (fp32's scores on the same photos, its
    threshold) fp32's threshold moved by the median paired difference (see ``attach``)."""
    if reference is None:
        thr = threshold(scores, reject)
    else:
        ref_scores, ref_thr = reference
        thr = float(ref_thr + np.median(scores - ref_scores))
    rejected = float((scores > thr).mean())
    return {"threshold": round(thr, 6), "calibrated_on": int(len(scores)), "rejected_in_class": round(rejected, 6),
            "scores_p50": round(float(np.median(scores)), 6),
            "set_by": "quantile" if reference is None else "fp32's threshold + median paired score difference"}
