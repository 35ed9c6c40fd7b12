"""``edgeclf add-class`` and ``remove-class``: change an exported model's classes on the device,
from a few photos, without TensorFlow.

An edgeclf export ends in a float head, softmax(embedding @ W + b), and carries the unknown
score's bank of training embeddings with their classes (export/head.py, export/unknown.py).
Adding a class runs the new photos through the model for their embeddings, then:

- **the head gets a column** for the class, imprinted (Qi et al., "Low-shot learning with
  imprinted weights", CVPR 2018: the photos' mean embedding, scaled so that it scores like the
  trained classes' own photos) and then fitted by class-balanced logistic regression against the
  bank's photos with every trained column held fixed, so the old classes keep their weights and
  only lose the photos the new class takes;
- **the bank gets the photos** (raw, and normalised in int8 as the score reads them), so that the
  new class is not ``unknown``; the threshold stays.

The model file is rewritten tensor by tensor (``protoedit``) into a new folder; the original is
never changed. ``remove-class`` drops a class's column and its bank photos the same way.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from edgeclf.errors import EdgeclfError
from edgeclf.model import metadata as md, protoedit
from edgeclf.model.exported import FP16_NAME, FP32_NAME, INT8_NAME, REPORT_NAME, TFLITE_INT8_NAME
from edgeclf.model.unknown import UNKNOWN_LABEL, quantize_bank, unit_rows

W, B = md.HEAD_PREFIX + "W", md.HEAD_PREFIX + "b"
BANK, LABELS, K = md.UNKNOWN_PREFIX + "bank", md.UNKNOWN_PREFIX + "bank_labels", md.UNKNOWN_PREFIX + "k"
BANK_Q, BANK_SCALE, BIAS = md.UNKNOWN_PREFIX + "bank_q", md.UNKNOWN_PREFIX + "bank_scale", md.UNKNOWN_PREFIX + "bank_bias"
#: Logistic-regression steps when fitting a new column (full batch; ~0.2 s for 1,000 photos x 1,280).
FIT_STEPS = 300
MAX_MODEL_BYTES = 1 << 30


@dataclass
class Parts:
    """What add-class and remove-class change in one model file."""

    payload: bytes
    w: np.ndarray  # [D, C] float32
    b: np.ndarray  # [C]
    bank: np.ndarray  # [M, D] float16
    labels: np.ndarray  # [M] int64
    names: list[str]
    k: int  # the neighbour the unknown score reads
    bias: np.ndarray  # [M] float32, added to each bank photo's similarity
    metadata: dict[str, str]

    @property
    def threshold(self) -> float | None:
        """The unknown score's threshold export calibrated (None when the metadata has none)."""
        try:
            return float(json.loads(self.metadata[md.UNKNOWN])["threshold"])
        except (KeyError, ValueError, TypeError):
            return None

    def rewritten(self, w: np.ndarray, b: np.ndarray, bank: np.ndarray, labels: np.ndarray, bias: np.ndarray,
                  names: list[str]) -> bytes:
        """The model file with this head, bank and class names (the unknown entry's bank count too)."""
        meta = {md.CLASS_NAMES: json.dumps(names)}
        try:
            unknown = json.loads(self.metadata.get(md.UNKNOWN, ""))
            if isinstance(unknown, dict):
                meta[md.UNKNOWN] = json.dumps({**unknown, "bank": int(len(bank))})
        except ValueError:
            pass
        bank_q, scale = quantize_bank(bank)
        return protoedit.rewrite(self.payload, {W: w, B: b, BANK: bank, LABELS: labels, BANK_Q: bank_q,
                                                BANK_SCALE: np.array(scale, np.float32), BIAS: bias}, meta)


def read_parts(path: Path) -> Parts:
    """The head, bank and class names of an edgeclf model file; a one-line error for any other."""
    from edgeclf.model.classifier import parse_class_names

    if path.stat().st_size > MAX_MODEL_BYTES:
        raise EdgeclfError(f"{path}: {path.stat().st_size} bytes is more than a model edgeclf changes ({MAX_MODEL_BYTES})")
    payload = path.read_bytes()
    try:
        t = protoedit.read_tensors(payload, {W, B, BANK, LABELS, K, BIAS})
        meta = protoedit.read_metadata(payload)
    except protoedit.ProtoError as e:
        raise EdgeclfError(f"{path}: not an ONNX model edgeclf can change ({e})") from None
    if W not in t or B not in t or md.CLASS_NAMES not in meta:
        raise EdgeclfError(f"{path}: has no float head (exported by an older edgeclf, or not by edgeclf): export it again")
    if not {BANK, LABELS, K, BIAS} <= set(t):
        raise EdgeclfError(f"{path}: carries no training photos' embeddings (exported with --unknown-reject 0, or without "
                           "validation photos): add-class and eval --unknown need them; export it again with an unknown score")
    names = parse_class_names(meta[md.CLASS_NAMES], path)
    w, b, bank, labels, k, bias = t[W], t[B], t[BANK], t[LABELS], t[K], t[BIAS]
    c = len(names)
    if w.dtype != np.float32 or b.dtype != np.float32 or bank.dtype != np.float16 or labels.dtype != np.int64 \
            or k.dtype != np.int64 or k.shape != (1,) or bias.dtype != np.float32 or bias.shape != (len(bank),):
        raise EdgeclfError(f"{path}: its head, bank or k are not stored as edgeclf stores them (float32, float16, int64)")
    if w.ndim != 2 or w.shape[1] != c or b.shape != (c,) or bank.ndim != 2 or bank.shape[1] != w.shape[0] \
            or labels.shape != (len(bank),) or (len(labels) and not 0 <= labels.min() <= labels.max() < c) \
            or not 1 <= int(k[0]) <= max(1, len(bank)):
        raise EdgeclfError(f"{path}: its head {list(w.shape)}, bank {list(bank.shape)}, k and {c} class names do not fit together")
    return Parts(payload, w, b, bank, labels, names, int(k[0]), bias, meta)


def reach(new: np.ndarray, bank: np.ndarray, labels: np.ndarray, threshold: float | None) -> float:
    """How much nearer than the trained photos a new class's photos count for the unknown score.

    A trained class has hundreds of photos in the bank, a new one a few, so an unseen photo of it
    lies much farther from its nearest one than the threshold (set on the trained classes'
    density) allows: with 10 photos, 97% of unseen ants were ``unknown`` though the head named
    90% of them right (benchmarks/results/addclass.md). Each of the new photos counts k times (its
    1st neighbour is the score's k-th) and its similarity gets this bonus: enough that a frame as
    far from its nearest photo as the farthest of the photos is from the others (leave-one-out)
    is still accepted. With one photo, the typical distance between two photos of a trained class
    stands in. The bonus also widens what the class accepts of photos of other things: the price
    of a class learnt from a few photos."""
    if threshold is None:
        return 0.0
    e = unit_rows(np.asarray(new, np.float64))
    if len(e) >= 2:
        sims = e @ e.T
        np.fill_diagonal(sims, -np.inf)
        radius = float((1 - sims.max(1)).max())
    else:
        rng = np.random.default_rng(0)
        b = unit_rows(np.asarray(bank, np.float64))
        typical = []
        for c in np.unique(labels):
            rows = np.flatnonzero(labels == c)
            if len(rows) >= 2:
                i, j = rng.choice(rows, (2, min(200, len(rows))))
                keep = i != j
                typical.append(np.median(1 - (b[i[keep]] * b[j[keep]]).sum(1)) if keep.any() else np.nan)
        radius = float(np.nanmedian(typical)) if typical and not np.isnan(typical).all() else threshold
    return max(0.0, radius - threshold)


def fit_column(w: np.ndarray, b: np.ndarray, bank: np.ndarray, labels: np.ndarray, new: np.ndarray,
               steps: int = FIT_STEPS, l2: float = 1e-3) -> tuple[np.ndarray, float]:
    """A head column (weights [D], bias) for a class whose photos have embeddings ``new``, with the
    columns ``w``, ``b`` of the trained classes held fixed: imprinted, then fitted by gradient
    descent (Adam) on class-balanced cross-entropy over the bank and the new photos."""
    x = np.concatenate([bank.astype(np.float32), new.astype(np.float32)])
    y = np.concatenate([labels, np.full(len(new), w.shape[1])])
    counts = np.bincount(y, minlength=w.shape[1] + 1).astype(np.float64)
    sw = (1.0 / counts[y]) / (counts > 0).sum()  # every class weighs the same in all
    z_old = x @ w + b
    own = z_old[np.arange(len(bank)), labels] if len(bank) else np.array([5.0])
    mu = new.mean(0).astype(np.float64)
    # imprint: the photos' mean embedding, scaled to score like a trained class's own photos
    col = mu / max(float(mu @ mu), 1e-12) * float(np.median(own))
    bias = 0.0
    m = [np.zeros_like(col), 0.0]
    v = [np.zeros_like(col), 0.0]
    scale = float(np.abs(col).mean()) or 1e-3
    lr = (0.05 * scale, 0.05 * max(1.0, float(np.abs(own).mean())))
    target = (y == w.shape[1]).astype(np.float64)
    for t in range(1, steps + 1):
        z = np.concatenate([z_old, (x @ col + bias)[:, None]], axis=1)
        z -= z.max(1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(1, keepdims=True)
        g = (p[:, -1] - target) * sw  # d loss / d z_new
        grads = (x.T @ g + l2 * col / max(len(x), 1), float(g.sum()))
        for i, gr in enumerate(grads):
            m[i] = 0.9 * m[i] + 0.1 * gr
            v[i] = 0.999 * v[i] + 0.001 * gr * gr
            step = lr[i] * (m[i] / (1 - 0.9 ** t)) / (np.sqrt(v[i] / (1 - 0.999 ** t)) + 1e-12)
            if i == 0:
                col = col - step
            else:
                bias = bias - float(step)
    return col.astype(np.float32), float(bias)


def photo_keeper(model: str | Path) -> Callable[[np.ndarray], np.ndarray]:
    """What to keep of each photo for ``add_class(model, ...)``: the photo at the model's input
    size by the model's own resize, still BGR, so that ``add_class`` reads the same pixels as from
    the whole photo (a thousand 12-megapixel photos held whole would take 36 GB)."""
    from edgeclf.image import resize_bgr, resize_of, to_bgr8
    from edgeclf.model.declared import metadata_side

    path = _model_files(Path(model), warn=False)[0]
    meta = read_parts(path).metadata  # a model add-class cannot change is refused here, before any photo is read
    size = (metadata_side(meta, md.INPUT_HEIGHT, path), metadata_side(meta, md.INPUT_WIDTH, path))
    rule = resize_of(meta.get(md.PREPROCESSING))
    return lambda image: resize_bgr(to_bgr8(image), size, rule)


def _model_files(model: Path, warn: bool = True) -> list[Path]:
    """The model files to change: MODEL itself, or the fp32 and int8 models of an export folder."""
    if model.is_dir():
        files = [model / n for n in (FP32_NAME, INT8_NAME) if (model / n).is_file()]
        if not files:
            raise EdgeclfError(f"{model}: no {FP32_NAME} or {INT8_NAME} in this folder")
        if not warn:
            return files
        if (model / FP16_NAME).is_file():
            print(f"warning: {model / FP16_NAME} is left out (its head is float16)", flush=True)
        if (model / TFLITE_INT8_NAME).is_file():
            print(f"warning: {model / TFLITE_INT8_NAME} is left out (its head is compiled into LiteRT's graph; "
                  "`edgeclf export RUN --format tflite` from a run trained with these classes makes one)", flush=True)
        return files
    if not model.is_file():
        raise EdgeclfError(f"{model}: no such model file or export folder")
    return [model]


def _check_out(out: Path, sources: Sequence[Path]) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise EdgeclfError(f"{out}: --out exists and is not an empty folder (the result goes in a new folder)")
    if any(out.resolve() == s.parent.resolve() for s in sources):
        raise EdgeclfError(f"{out}: --out is the model's own folder; the original is never changed")


def _write_folder(out: Path, new_files: dict[str, bytes], source: Path, change: dict) -> dict:
    """The changed model files, and an export.json recording them and what changed, written
    beside ``out`` and renamed into place."""
    import hashlib

    from edgeclf.outfiles import write_bytes, write_json

    record_path = (source if source.is_dir() else source.parent) / REPORT_NAME
    record: dict = {}
    if record_path.is_file() and record_path.stat().st_size < 1 << 20:
        try:
            record = json.loads(record_path.read_text(encoding="utf-8"))
        except ValueError:
            record = {}
    kinds = {FP32_NAME: "fp32", INT8_NAME: "int8"}
    gone = ("files", "sizes_bytes", "sha256", "fp16", "tflite_int8")  # the fp16 and LiteRT models are not carried over
    record = {k: v for k, v in record.items() if k not in gone} if isinstance(record, dict) else {}
    record.setdefault("figures_describe", "the export before its class changes (parity, int8 guard, unknown threshold)")
    record.update(files={}, sizes_bytes={}, sha256={}, class_names=change["class_names"])
    record.setdefault("class_changes", []).append({k: v for k, v in change.items() if k != "class_names"})
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for name, payload in new_files.items():
            kind = kinds.get(name, name)
            write_bytes(tmp / name, payload)
            record["files"][kind], record["sizes_bytes"][kind] = name, len(payload)
            record["sha256"][kind] = hashlib.sha256(payload).hexdigest()
        record["files"]["report"] = REPORT_NAME
        write_json(tmp / REPORT_NAME, record)
        if out.is_dir():
            out.rmdir()  # empty (checked before): the finished folder takes its place whole
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return record


def add_class(model: str | Path, name: str, images: Sequence[np.ndarray], out: str | Path, *, source: str = "",
              progress: Callable[[int], None] | None = None) -> dict:
    """Add class ``name`` to ``model`` (an .onnx file or an export folder) from ``images`` (BGR, as
    OpenCV reads them), writing the result to the new folder ``out``. Returns a report."""
    from edgeclf.image import to_bgr8
    from edgeclf.model.classifier import Classifier

    model, out = Path(model), Path(out)
    files = _model_files(model)
    _check_out(out, files)
    problem = md.class_name_problem(name)
    if problem:
        raise EdgeclfError(f"class name {name!r} {problem}")
    if name == UNKNOWN_LABEL:
        raise EdgeclfError(f"class name {name!r} is what predict answers for a photo of none of the classes; choose another")
    if len(images) < 1:
        raise EdgeclfError(f"{source or 'source'}: no photo of {name!r} to learn from")
    t0 = time.perf_counter()
    new_files, report = {}, {"added": name, "photos": len(images), "source": source, "models": {}}
    for f in files:
        parts = read_parts(f)
        if name in parts.names:
            raise EdgeclfError(f"{f}: already has a class {name!r}")
        clf = Classifier(f, threads=None, unknown=False)
        x = np.stack([clf.preprocess(to_bgr8(img)) for img in images])
        e = np.concatenate([clf.session.run([md.EMBEDDING_NAME], {clf.input_name: x[i:i + 16]})[0] for i in range(0, len(x), 16)])
        if progress:
            progress(1)
        col, bias = fit_column(parts.w, parts.b, parts.bank.astype(np.float32), parts.labels, e)
        names = parts.names + [name]
        # The score reads the k-th nearest bank photo: each new photo counts k times, so a frame
        # is judged by its nearest photo of the class, with the class's bonus (``reach``).
        bonus = reach(e, parts.bank.astype(np.float32), parts.labels, parts.threshold)
        bank = np.concatenate([parts.bank, np.repeat(e.astype(np.float16), parts.k, axis=0)])
        labels = np.concatenate([parts.labels, np.full(len(e) * parts.k, len(parts.names), np.int64)])
        sim_bias = np.concatenate([parts.bias, np.full(len(e) * parts.k, bonus, np.float32)])
        new_files[f.name] = parts.rewritten(np.concatenate([parts.w, col[:, None]], axis=1),
                                            np.append(parts.b, np.float32(bias)), bank, labels, sim_bias, names)
        report["models"][f.name] = {"classes": names, "bank": int(len(bank)), "reach": round(bonus, 6)}
    report["seconds"] = round(time.perf_counter() - t0, 3)
    _write_folder(out, new_files, model, {"added": name, "photos": len(images), "source": source,
                                          "class_names": names})
    return report


def remove_class(model: str | Path, name: str, out: str | Path) -> dict:
    """``model`` without class ``name`` (its head column and its bank photos), in the new folder ``out``."""
    model, out = Path(model), Path(out)
    files = _model_files(model)
    _check_out(out, files)
    new_files, report = {}, {"removed": name, "models": {}}
    for f in files:
        parts = read_parts(f)
        if name not in parts.names:
            raise EdgeclfError(f"{f}: has no class {name!r} (classes: {', '.join(parts.names)})")
        if len(parts.names) <= 2:
            raise EdgeclfError(f"{f}: has only {len(parts.names)} classes; a classifier keeps at least 2")
        i = parts.names.index(name)
        keep = parts.labels != i
        if keep.sum() < parts.k:
            raise EdgeclfError(f"{f}: would keep {int(keep.sum())} training photos, fewer than the {parts.k} its unknown "
                               "score compares a frame with")
        labels = parts.labels[keep]
        labels = np.where(labels > i, labels - 1, labels)
        names = [n for n in parts.names if n != name]
        new_files[f.name] = parts.rewritten(np.delete(parts.w, i, axis=1), np.delete(parts.b, i), parts.bank[keep],
                                            labels, parts.bias[keep], names)
        report["models"][f.name] = {"classes": names, "bank": int(keep.sum())}
    _write_folder(out, new_files, model, {"removed": name, "class_names": names})
    return report
