"""Make a small trained run folder and its ONNX exports, for developing and testing compare.py.

A stand-in for ``edgeclf train`` + ``edgeclf export`` while those are being written: it writes the
same contract (RUN/model.keras, RUN/run.json, RUN/export/model.onnx and model.int8.onnx with
edgeclf metadata), with a plain training loop and tf2onnx + onnxruntime.quantization. Use the real
commands for real results.

    python benchmarks/dev_run.py ../shared/data/cats_dogs/train --out /tmp/run --epochs 5
    python benchmarks/dev_run.py --export-only RUN_DIR     # export a run made by 'edgeclf train'
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from edge_runtime import metadata as md  # noqa: E402
from edge_runtime.dataset import load_files  # noqa: E402
from edge_runtime.images import scan_class_folders  # noqa: E402
from edge_runtime.preprocess import RESIZE  # noqa: E402


def split_files(data_dir: Path, val_split: float, seed: int) -> tuple[list[str], dict[str, list[Path]], dict[str, list[Path]]]:
    classes, files = scan_class_folders(data_dir)
    rng = np.random.default_rng(seed)
    train, val = {}, {}
    for c in classes:
        paths = list(files[c])
        rng.shuffle(paths)
        n_val = max(1, int(round(len(paths) * val_split)))
        val[c], train[c] = sorted(paths[:n_val]), sorted(paths[n_val:])
    return classes, train, val


def export_onnx(model, out_dir: Path, size: int, class_names: list[str], calib: np.ndarray, meta: dict) -> None:
    """uint8 NHWC ``image`` -> float32 ``probs``; fp32 and static int8 (QDQ, per channel)."""
    import onnx
    import tensorflow as tf
    import tf2onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8, name="image")])
    def serve(image):
        return {"probs": model(tf.cast(image, tf.float32), training=False)}

    proto, _ = tf2onnx.convert.from_function(serve, input_signature=serve.input_signature, opset=17)
    out_dir.mkdir(parents=True, exist_ok=True)

    def save(m, path: Path, precision: str) -> None:
        onnx.helper.set_model_props(m, {**meta, md.PRECISION: precision})
        onnx.save(m, str(path))

    save(proto, out_dir / "model.onnx", "fp32")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"image": calib[i : i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self.it, None)

    tmp = out_dir / "model.int8.tmp.onnx"
    # U8S8 like export/quantize.py: onnxruntime's fast int8 kernels on x86 (S8S8 leaves convs in float).
    quantize_static(str(out_dir / "model.onnx"), str(tmp), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    save(onnx.load(str(tmp)), out_dir / "model.int8.onnx", "int8")
    tmp.unlink()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data_dir", type=Path, nargs="?")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--export-only", type=Path, metavar="RUN_DIR", help="export an existing run folder to RUN_DIR/export")
    ap.add_argument("--model", default="edgenet")
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--val-split", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=1337)
    args = ap.parse_args()
    if args.export_only:
        export_run(args.export_only, args.seed)
        return
    if args.data_dir is None or args.out is None:
        ap.error("give DATA_DIR and --out, or --export-only RUN_DIR")

    import keras

    from train.models import ARCHITECTURES, count_macs

    arch = ARCHITECTURES[args.model]
    size = args.size or arch.default_size
    data_dir = args.data_dir.resolve()
    classes, train, val = split_files(data_dir, args.val_split, args.seed)
    tr_paths = [p for c in classes for p in train[c]]
    va_paths = [p for c in classes for p in val[c]]
    x_tr, ok_tr, _ = load_files(tr_paths, (size, size))
    y_tr = np.array([classes.index(tr_paths[i].parent.name) for i in ok_tr])
    x_va, ok_va, _ = load_files(va_paths, (size, size))
    y_va = np.array([classes.index(va_paths[i].parent.name) for i in ok_va])

    keras.utils.set_random_seed(args.seed)
    kwargs = {"weights": None} if arch.pretrained else {}
    model = arch.build(len(classes), size, **kwargs)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    hist = model.fit(x_tr.astype(np.float32), y_tr, validation_data=(x_va.astype(np.float32), y_va),
                     epochs=args.epochs, batch_size=32, verbose=2)
    args.out.mkdir(parents=True, exist_ok=True)
    model.save(args.out / "model.keras")
    best = int(np.argmax(hist.history["val_accuracy"]))
    run = {
        "class_names": classes, "input_size": [size, size], "color_order": "RGB",
        "preprocessing": {"resize": RESIZE, "rescale": "inside the model"},
        "architecture": args.model, "params": int(model.count_params()), "macs": count_macs(model),
        "seed": args.seed, "data_dir": str(data_dir), "val_dir": None, "val_split": args.val_split,
        "splits": {"train": [str(p) for p in tr_paths], "val": [str(p) for p in va_paths]},
        "counts": {c: {"train": len(train[c]), "val": len(val[c])} for c in classes}, "skipped": [],
        "best": {"epoch": best + 1, "val_accuracy": float(hist.history["val_accuracy"][best]),
                 "val_loss": float(hist.history["val_loss"][best])},
        "final": {"val_accuracy": float(hist.history["val_accuracy"][-1])},
        "versions": {"keras": keras.__version__}, "note": "made by benchmarks/dev_run.py (stand-in for edgeclf train)",
    }
    (args.out / "run.json").write_text(json.dumps(run, indent=2))
    export_run(args.out, args.seed)
    print(f"wrote {args.out}")


def export_run(run_dir: Path, seed: int) -> None:
    import keras

    run = json.loads((run_dir / "run.json").read_text())
    model = keras.models.load_model(run_dir / "model.keras", compile=False)
    size = run["input_size"][0]
    meta = {
        md.CLASS_NAMES: json.dumps(run["class_names"]), md.INPUT_HEIGHT: str(size), md.INPUT_WIDTH: str(size),
        md.COLOR_ORDER: "RGB", md.PREPROCESSING: json.dumps(run["preprocessing"]), md.ARCHITECTURE: run["architecture"],
        md.VAL_ACCURACY: str(run["best"]["val_accuracy"]),
        md.SOURCE_SHA256: hashlib.sha256((run_dir / "model.keras").read_bytes()).hexdigest(),
        "macs": str(run["macs"]),
    }
    train_paths = [Path(p) for p in run["splits"]["train"]]
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(train_paths), size=min(100, len(train_paths)), replace=False)
    calib, _, _ = load_files([train_paths[i] for i in pick], (size, size))
    export_onnx(model, run_dir / "export", size, run["class_names"], calib, meta)


if __name__ == "__main__":
    main()
