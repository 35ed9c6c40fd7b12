"""How to fine-tune after the linear probe: test accuracy after every epoch, per setting.

    python benchmarks/lpft_sweep.py run TRAIN_DIR TEST_DIR OUT.json [--configs G,H] [--epochs 6] [--wise 0.5]
    python benchmarks/lpft_sweep.py report OUT1.json OUT2.json ... --name lpft_sweep

``run``: EfficientNet-Lite0 at 224 px; the probe (train.probe) fitted on the frozen features of
TRAIN_DIR, its accuracy on TEST_DIR, then for each setting the same start fine-tuned from block 9
with the training pipeline's augmentation, AdamW, warm-up and cosine decay, TEST_DIR judged after
every epoch (for research: the recipe never sees its test photos). ``report`` gathers the JSON
files into benchmarks/results/<name>.md.
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

from provenance import provenance, stamp_markdown  # noqa: E402

from edgeclf.outfiles import write_json, write_text  # noqa: E402

# name: (label smoothing, peak learning rate, first unfrozen layer, head dropout)
CONFIGS = {
    "A": (0.1, 1e-4, "block9_expand_conv", 0.2),  # the recipe as first written: dropout before the probed head
    "G": (0.0, 1e-4, "block9_expand_conv", 0.0),
    "H": (0.0, 2e-5, "block9_expand_conv", 0.0),
}


def run(args: argparse.Namespace) -> None:
    import keras
    import tensorflow as tf

    from edgeclf.data.labelled import load_files
    from edgeclf.image import scan_class_folders
    from edgeclf.train import probe
    from edgeclf.train.models import ARCHITECTURES
    from edgeclf.train.pipeline import augmenter
    from edgeclf.train.stages import Stage, set_trainable

    arch, size = ARCHITECTURES["efficientnet_lite0"], 224
    classes = scan_class_folders(args.train)[0]

    def load(folder: Path):
        files = scan_class_folders(folder)[1]
        paths = [p for c in classes for p in files[c]]
        labels = np.array([i for i, c in enumerate(classes) for _ in files[c]])
        x, ok, _ = load_files(paths, (size, size), on_skip=lambda *_: None)
        return x[: len(ok)], labels[ok]

    t0 = time.time()
    (x, y), (xt, yt) = load(args.train), load(args.test)
    keras.utils.set_random_seed(1337)
    model = arch.build(len(classes), size)
    f, fm = probe.features_of_batches(model, (x[i:i + 64] for i in range(0, len(x), 64)))
    g, _ = probe.features_of_batches(model, (xt[i:i + 64] for i in range(0, len(xt), 64)))
    record = probe.fit_head(model, f, fm, y, len(classes), seed=1337)
    head, start = model.get_layer("probs").get_weights(), model.get_weights()
    res = {"set": args.train.parent.name, "n_train": int(len(y)), "n_test": int(len(yt)), "epochs": args.epochs,
           "probe": {"accuracy": float((probe.softmax(g @ head[0] + head[1]).argmax(1) == yt).mean()), **record}}
    steps = int(np.ceil(len(y) / 32))
    for name in args.configs.split(","):
        ls, lr, first, dropout = CONFIGS[name]
        model.set_weights(start)
        model.get_layer("dropout").rate = dropout
        set_trainable(model, Stage("fine-tune", args.epochs, lr, backbone_trainable_from=first))
        sched = keras.optimizers.schedules.CosineDecay(0.0, args.epochs * steps, warmup_target=lr, warmup_steps=steps // 2 + 1)
        model.compile(optimizer=keras.optimizers.AdamW(learning_rate=sched, weight_decay=5e-4),
                      loss=keras.losses.CategoricalCrossentropy(label_smoothing=ls))
        aug = augmenter(1337)
        ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(y), seed=1337).batch(32).map(
            lambda a, b: (aug(tf.cast(a, tf.float32), training=True), tf.one_hot(b, len(classes))))
        hist: list[dict] = []

        def test_accuracy() -> float:
            p = model.predict(xt.astype(np.float32), batch_size=64, verbose=0)
            return float((p.argmax(1) == yt).mean())

        class Judge(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                row = {"epoch": epoch + 1, "loss": float(logs["loss"]), "test": test_accuracy()}
                if args.wise:  # WiSE-FT: the weights interpolated between the probe's start and this epoch's
                    tuned = model.get_weights()
                    for a in args.wise:
                        model.set_weights([(1 - a) * w0 + a * w1 for w0, w1 in zip(start, tuned)])
                        row[f"wise{a:g}"] = test_accuracy()
                    model.set_weights(tuned)
                hist.append(row)
                print(name, hist[-1], f"{time.time() - t0:.0f} s", flush=True)

        model.fit(ds, epochs=args.epochs, verbose=0, callbacks=[Judge()])
        res[name] = hist
        write_json(args.out, res)


def report(args: argparse.Namespace) -> None:
    runs = [json.loads(Path(p).read_text()) for p in args.files]
    names = [c for c in CONFIGS if any(c in r for r in runs)]
    # one column per setting, then one per (setting, WiSE-FT share) the runs recorded
    cols = [(c, "test", f"{c} by epoch") for c in names]
    for c in names:
        keys = dict.fromkeys(k for r in runs for h in r.get(c, []) for k in h if k.startswith("wise"))
        cols += [(c, k, f"{c} WiSE-FT {k[4:]} by epoch") for k in keys]
    lines = ["# Fine-tuning after the linear probe (EfficientNet-Lite0, 224 px)", "",
             "Test accuracy of the probe, then after each fine-tuning epoch (the last is what the recipe keeps "
             "unless validation says otherwise). Settings: " + "; ".join(
                 f"{c}: label smoothing {CONFIGS[c][0]}, lr {CONFIGS[c][1]:g}, from {CONFIGS[c][2]}, head dropout "
                 f"{CONFIGS[c][3]}" for c in names) + ". WiSE-FT a: the weights (1 - a) x the probe's start + a x "
                 "the epoch's, judged as they are (no further training).", "",
             "| data set | train / test | probe | " + " | ".join(t for *_, t in cols) + " |",
             "|---|---|---|" + "---|" * len(cols)]
    for r in runs:
        cells = [" ".join(f"{h[k]:.1%}" for h in r[c]) if c in r and k in r[c][0] else "-" for c, k, _ in cols]
        lines.append(f"| {r['set']} | {r['n_train']} / {r['n_test']} | {r['probe']['accuracy']:.1%} | " + " | ".join(cells) + " |")
    write_text(ROOT / "benchmarks" / "results" / f"{args.name}.md", stamp_markdown("\n".join(lines) + "\n", provenance()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("train", type=Path)
    r.add_argument("test", type=Path)
    r.add_argument("out", type=Path)
    r.add_argument("--configs", default="G,H")
    r.add_argument("--epochs", type=int, default=6)
    r.add_argument("--wise", type=lambda v: [float(a) for a in v.split(",")], default=[],
                   help="also judge the weights interpolated between the probe and each epoch (WiSE-FT), at these "
                        "shares of the fine-tuned weights, e.g. 0.5")
    g = sub.add_parser("report")
    g.add_argument("files", nargs="+")
    g.add_argument("--name", default="lpft_sweep")
    args = ap.parse_args()
    run(args) if args.cmd == "run" else report(args)


if __name__ == "__main__":
    main()
