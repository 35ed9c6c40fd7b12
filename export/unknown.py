"""The unknown score: how far a photo's embedding lies from every training photo's, computed
inside the exported model, and the operating point export calibrates for it.

The score is the k-nearest-neighbour cosine distance (Sun et al., "Out-of-distribution detection
with deep nearest neighbors", ICML 2022): 1 minus the k-th largest cosine similarity between
the photo's L2-normalised embedding (the input of the model's ``probs`` layer) and a bank of the
training photos' embeddings. Chosen by measurement over max-softmax, energy and Mahalanobis
(benchmarks/results/ood_methods.md). The bank travels in the ONNX file as a float16 initializer
with its class indices (cast and normalised once, when onnxruntime folds constants at session
start; ``add-class`` appends to it), so the device needs nothing but the model file, and the
score costs one [1, D] x [D, M] product a frame.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgeclf.model import metadata as md

#: Neighbour rank the score reads (measured: benchmarks/results/ood_methods.md).
DEFAULT_K = 5
EPS = 1e-12
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


def knn_distance(embeddings: np.ndarray, bank: np.ndarray, k: int) -> np.ndarray:
    """1 - the k-th largest cosine similarity of each embedding to the rows of ``bank``."""
    unit = lambda v: v / np.sqrt((v * v).sum(1, keepdims=True) + EPS)  # noqa: E731
    sims = unit(np.asarray(embeddings, np.float32)) @ unit(np.asarray(bank, np.float32)).T
    return 1 - np.sort(sims, axis=1)[:, -k]


def add_score(model: onnx.ModelProto, bank: Bank, embedding: str = md.EMBEDDING_NAME) -> None:
    """Append the score to ``model`` as the output ``unknown_score`` [N], from its output
    ``embedding`` [N, D]. Changes ``model`` in place. The bank is normalised inside the graph:
    onnxruntime folds that into a constant when the session starts, and ``add-class`` can append
    raw embeddings."""
    g = model.graph
    p = md.UNKNOWN_PREFIX
    g.initializer.extend([
        numpy_helper.from_array(bank.vectors.astype(np.float16), p + "bank"),
        numpy_helper.from_array(bank.labels, p + "bank_labels"),
        numpy_helper.from_array(np.array([1], np.int64), p + "axis"),
        numpy_helper.from_array(np.array(EPS, np.float32), p + "eps"),
        numpy_helper.from_array(np.array(1.0, np.float32), p + "one"),
        numpy_helper.from_array(np.array([bank.k], np.int64), p + "k"),
        numpy_helper.from_array(np.array([bank.k - 1], np.int64), p + "kth"),
        numpy_helper.from_array(np.array([-1], np.int64), p + "flat"),
    ])

    def n(op: str, ins: list[str], outs: list[str], **kw) -> None:
        g.node.append(helper.make_node(op, [x if x == embedding else p + x for x in ins],
                                       [o if o == md.UNKNOWN_NAME else p + o for o in outs], name=p + outs[0], **kw))

    for src, dst in ((embedding, "unit"), ("bank32", "bank_unit")):  # x / sqrt(sum(x^2) + eps), row by row
        n("Mul", [src, src], [dst + "_sq"])
        n("ReduceSum", [dst + "_sq", "axis"], [dst + "_ss"], keepdims=1)
        n("Add", [dst + "_ss", "eps"], [dst + "_ss_eps"])
        n("Sqrt", [dst + "_ss_eps"], [dst + "_norm"])
        n("Div", [src, dst + "_norm"], [dst])
        if src == embedding:
            n("Cast", ["bank"], ["bank32"], to=TensorProto.FLOAT)
    n("Transpose", ["bank_unit"], ["bank_t"], perm=[1, 0])
    n("MatMul", ["unit", "bank_t"], ["sims"])
    n("TopK", ["sims", "k"], ["top", "top_i"], axis=1, largest=1, sorted=1)
    n("Gather", ["top", "kth"], ["kth_sim"], axis=1)
    n("Sub", ["one", "kth_sim"], ["dist"])
    n("Reshape", ["dist", "flat"], [md.UNKNOWN_NAME])
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


def attach(payload: bytes, bank: Bank, held_back: np.ndarray, reject: float, progress=None) -> tuple[bytes, dict]:
    """``payload`` (an ONNX model with an ``embedding`` output) with the unknown score added and
    its operating point calibrated on ``held_back`` (in-class photos training never saw) written
    into its metadata. Returns the new model and the figures (for export.json)."""
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
    thr = threshold(scores, reject)
    rejected = float((scores > thr).mean())
    meta = {e.key: e.value for e in proto.metadata_props}
    meta.update(metadata(bank, thr, reject, len(held_back), rejected))
    set_metadata(proto, meta)
    return proto.SerializeToString(), {"threshold": round(thr, 6), "calibrated_on": int(len(held_back)),
                                       "rejected_in_class": round(rejected, 6), "scores_p50": round(float(np.median(scores)), 6)}
