"""Which score tells a trained model's classes from everything else: max-softmax, energy,
Mahalanobis, k-nearest-neighbour, measured on one run's embeddings.

    python benchmarks/ood_methods.py RUN --ood DIR[,DIR..] [--unseen DIR:CLASS[,..]] [--name ood_methods]

RUN: an ``edgeclf train`` run folder. Its training split is the reference (class statistics, the
neighbour bank); its validation split is the held-back in-class set the operating point is set on
(each method's threshold rejects ``--reject`` of it, default 2%). ``--ood``: folders of photos of
none of the classes (any layout; up to ``--per-ood`` photos from each, seeded). ``--unseen``:
folders of photos of one of the run's classes that training never saw, with that class, to check
that the operating point holds beyond the validation split.

Reported per method: AUROC (unknown = positive), the share of unknowns accepted when 95% of the
validation photos are (FPR95), and at the 2% operating point: unknowns rejected, validation and
unseen photos accepted with their right label. The Keras model is run once per photo; the
methods are numpy on its embeddings (the input of its ``probs`` layer) and logits.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from provenance import provenance, stamp_json, stamp_markdown  # noqa: E402

from edgeclf.metrics import auroc  # noqa: E402
from edgeclf.outfiles import write_json, write_text  # noqa: E402


def embed(model, paths: list[Path], size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings, logits) of ``paths`` through the Keras ``model``."""
    import keras

    from edgeclf.train.imagecache import load_files

    head = model.get_layer("probs")
    net = keras.Model(model.inputs, head.input)
    w, b = head.get_weights()
    out = []
    for i in range(0, len(paths), 64):
        x, ok, _ = load_files(paths[i:i + 64], size, on_skip=lambda *_: None)
        out.append(np.asarray(net(x[: len(ok)].astype(np.float32), training=False)))
    e = np.concatenate(out).astype(np.float64)
    return e, e @ w + b


def methods(train_e, train_y, train_logits, n_classes):
    """{name: score(embeddings, logits) -> higher is more unknown}, fitted on the training split."""
    def msp(e, lg):
        z = lg - lg.max(1, keepdims=True)
        p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
        return -p.max(1)

    def energy(e, lg):
        m = lg.max(1)
        return -(m + np.log(np.exp(lg - m[:, None]).sum(1)))

    means = np.stack([train_e[train_y == c].mean(0) for c in range(n_classes)])
    centred = train_e - means[train_y]
    cov = centred.T @ centred / len(train_e)
    cov += np.eye(len(cov)) * 1e-3 * np.trace(cov) / len(cov)  # shrinkage: more dimensions than photos
    prec = np.linalg.inv(cov)

    def maha(e, lg):
        d = [np.einsum("ij,jk,ik->i", e - m, prec, e - m) for m in means]
        return np.min(d, axis=0)

    bank = train_e / np.linalg.norm(train_e, axis=1, keepdims=True)

    def knn(k):
        def score(e, lg):
            n = e / np.linalg.norm(e, axis=1, keepdims=True)
            sims = n @ bank.T
            return 1 - np.sort(sims, axis=1)[:, -k]
        return score

    out = {"max-softmax": msp, "energy": energy, "mahalanobis": maha}
    for k in (1, 5, 10, 50):
        out[f"knn-{k}"] = knn(k)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--ood", required=True, help="comma-separated folders of photos of none of the classes")
    ap.add_argument("--unseen", default="", help="comma-separated DIR:CLASS of unseen photos of a known class")
    ap.add_argument("--per-ood", type=int, default=300)
    ap.add_argument("--reject", type=float, default=0.02)
    ap.add_argument("--sweep", default="0.005,0.01,0.02,0.05", help="other operating points to tabulate")
    ap.add_argument("--name", default="ood_methods")
    args = ap.parse_args()

    from edgeclf.image import list_images
    from edgeclf.train.keras_model import input_size_of, load_keras_model, resolve_source
    from edgeclf.train.tf_quiet import import_tensorflow_quietly

    import_tensorflow_quietly()
    t0 = time.time()
    src = resolve_source(args.run)
    if src.refitted:  # its validation photos are not held out
        raise SystemExit(f"{args.run}: the model was trained again on every photo (refit); train the run with --no-refit")
    model = load_keras_model(src.model_path)
    size = input_size_of(model, src.model_path)
    names = src.class_names

    def labelled(split):
        ps = [p for p in src.split_paths(split) if src.label_of(p) is not None]
        return ps, np.array([src.label_of(p) for p in ps])

    (tr_p, tr_y), (va_p, va_y) = labelled("train"), labelled("val")
    tr_e, tr_l = embed(model, tr_p, size)
    va_e, va_l = embed(model, va_p, size)
    rng = np.random.default_rng(0)
    ood = {}
    for d in args.ood.split(","):
        files = list_images(Path(d))
        files = [files[i] for i in sorted(rng.choice(len(files), min(args.per_ood, len(files)), replace=False))]
        ood[Path(d).name if Path(d).name not in ("train", "test") else Path(d).parent.name] = embed(model, files, size)
    unseen = {}
    for item in filter(None, args.unseen.split(",")):
        d, c = item.rsplit(":", 1)
        files = list_images(Path(d))
        unseen[f"{Path(d).name} as {c}"] = (*embed(model, files, size), names.index(c))
    print(f"embedded in {time.time() - t0:.0f} s", flush=True)

    rows = {}
    all_ood_e = np.concatenate([e for e, _ in ood.values()])
    all_ood_l = np.concatenate([lg for _, lg in ood.values()])
    for name, fn in methods(tr_e, tr_y, tr_l, len(names)).items():
        sv, so = fn(va_e, va_l), fn(all_ood_e, all_ood_l)
        thr = float(np.quantile(sv, 1 - args.reject))
        thr95 = float(np.quantile(sv, 0.95))
        row = {"auroc": auroc(sv, so), "fpr95": float((so <= thr95).mean()),
               "unknown_rejected": float((so > thr).mean()),
               "val_accepted_right": float(((sv <= thr) & (va_l.argmax(1) == va_y)).mean()),
               "per_ood_rejected": {}, "unseen_accepted_right": {}}
        for k, (e, lg) in ood.items():
            row["per_ood_rejected"][k] = float((fn(e, lg) > thr).mean())
        for k, (e, lg, c) in unseen.items():
            row["unseen_accepted_right"][k] = float(((fn(e, lg) <= thr) & (lg.argmax(1) == c)).mean())
        row["sweep"] = {}
        for r in map(float, args.sweep.split(",")):
            t = float(np.quantile(sv, 1 - r))
            row["sweep"][f"{r:g}"] = {
                "unknown_rejected": float((so > t).mean()),
                "val_accepted_right": float(((sv <= t) & (va_l.argmax(1) == va_y)).mean()),
                **{k: float(((fn(e, lg) <= t) & (lg.argmax(1) == c)).mean()) for k, (e, lg, c) in unseen.items()}}
        rows[name] = row
        print(name, json.dumps(row), flush=True)

    result = {"run": str(args.run), "classes": names, "n_train": len(tr_p), "n_val": len(va_p),
              "ood": {k: len(e) for k, (e, _) in ood.items()}, "unseen": {k: len(v[0]) for k, v in unseen.items()},
              "reject": args.reject, "methods": rows}
    write_json(ROOT / "benchmarks" / "results" / f"{args.name}.json", stamp_json(result, provenance()))
    lines = [f"# Telling the classes from everything else: scores compared on {args.run.name}", "",
             f"Reference: the run's {len(tr_p)} training photos; operating point: {args.reject:.0%} of its "
             f"{len(va_p)} validation photos rejected. Unknowns: " +
             ", ".join(f"{k} ({len(e)})" for k, (e, _) in ood.items()) + "." +
             ("" if not unseen else " Unseen in-class photos: " + ", ".join(f"{k} ({len(v[0])})" for k, v in unseen.items()) + "."),
             "", "| score | AUROC | unknowns accepted at 95% in-class (FPR95) | unknowns rejected at the 2% point | "
             "validation right and accepted | " + " | ".join(f"{k} rejected" for k in ood) + " | " +
             " | ".join(f"{k}: right and accepted" for k in unseen) + " |",
             "|---|---|---|---|---|" + "---|" * (len(ood) + len(unseen))]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['auroc']:.4f} | {r['fpr95']:.1%} | {r['unknown_rejected']:.1%} | "
                     f"{r['val_accepted_right']:.1%} | " + " | ".join(f"{v:.1%}" for v in r["per_ood_rejected"].values())
                     + (" | " if unseen else "") + " | ".join(f"{v:.1%}" for v in r["unseen_accepted_right"].values()) + " |")
    sweep = list(next(iter(rows.values()))["sweep"])
    lines += ["", "The same scores at other operating points (share of validation photos rejected): unknowns "
              "rejected / validation photos right and accepted" + (" / unseen in-class photos right and accepted"
                                                                   if unseen else "") + ".", "",
              "| score | " + " | ".join(f"{float(r):.1%} rejected" for r in sweep) + " |", "|---|" + "---|" * len(sweep)]
    for name, r in rows.items():
        lines.append(f"| {name} | " + " | ".join(" / ".join(f"{v:.1%}" for v in r["sweep"][k].values()) for k in sweep) + " |")
    write_text(ROOT / "benchmarks" / "results" / f"{args.name}.md", stamp_markdown("\n".join(lines) + "\n", provenance()))


if __name__ == "__main__":
    main()
