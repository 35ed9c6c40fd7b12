"""``edgeclf eval``: accuracy of a Keras or ONNX model on a labelled folder, the same way for both."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgeclf import sysinfo
from edgeclf.data.labelled import load_labelled
from edgeclf.errors import EdgeclfError, require_train_extra, safe_text
from edgeclf.image import scan_class_folders
from edgeclf.metrics import classification_report
from edgeclf.model.batching import in_batches
from edgeclf.plugins import model_loader
from edgeclf.progress import Bars

console = Console(stderr=True, highlight=False)


def _open(model: Path, data_dir: Path, batch_size: int = 32):
    """(class_names, size, predict(batch) -> probs, kind) for an .onnx, a .keras or a run folder."""
    if model.suffix == ".onnx":
        from edgeclf.model.classifier import Classifier

        clf = Classifier(model)
        clf.check_batch(1 if clf.max_batch == 1 else batch_size, "--batch-size")  # fixed batch 1: image by image
        return clf.class_names, clf.size, clf.predict_arrays, "onnx"
    if not model.exists():
        raise EdgeclfError(f"{model}: no such model file or run folder")
    if not (model.is_dir() or model.suffix == ".keras"):
        raise EdgeclfError(f"{model}: not a model (expected a run folder, a .keras or an .onnx file)")
    require_train_extra("eval")
    load = model_loader("keras")  # edgeclf.train's, through its entry point: the runtime does not import it
    if load is None:
        # TensorFlow is there (checked above), so edgeclf's own metadata lacks the loader: a broken install
        raise EdgeclfError(f"{model}: no Keras model loader is registered (edgeclf.model_loaders); "
                           "reinstall edgeclf: pip install --force-reinstall 'edgeclf[train]'")
    km = load(model)
    names = km.class_names
    if names is None:  # a bare .keras file: assume the folder's classes if their number fits
        names, _ = scan_class_folders(data_dir)
        if len(names) != km.num_classes:
            raise EdgeclfError(f"{model}: no run.json beside it and {data_dir} has {len(names)} classes, the model {km.num_classes}")
    return names, km.size, km.predict, "keras"


def evaluate(model: Path, data_dir: Path, batch_size: int = 32, quiet: bool = False) -> dict:
    """Evaluate ``model`` on ``data_dir`` (one sub-folder per class); returns the report dict."""
    if batch_size < 1:
        raise EdgeclfError(f"--batch-size must be at least 1 (got {batch_size})")
    model, data_dir = Path(model), Path(data_dir)
    class_names, size, predict, kind = _open(model, data_dir, batch_size)
    with Bars(quiet=quiet, console=console) as bars:
        n = sum(len(v) for v in scan_class_folders(data_dir)[1].values())
        need = n * size[0] * size[1] * 3  # every image is held at the model's input size
        if need > sysinfo.available_memory_bytes() // 2:
            raise EdgeclfError(f"{data_dir}: {n} images at {size[0]}x{size[1]} need {need / 2**30:.1f} GiB, more than half "
                               "of the memory available; evaluate on a smaller folder")
        data = load_labelled(data_dir, size, class_names, progress=bars.add("reading images", n))
        probs = in_batches(predict, data.x, batch_size, bars.add("classifying", len(data.x)))
    pred = probs.argmax(1) if len(probs) else np.zeros(0, np.int64)
    report = classification_report(data.y, pred, class_names)
    report.update(
        model=str(model), format=kind, class_names=class_names, n_skipped=len(data.skipped), skipped=data.skipped,
    )
    return report


def print_report(report: dict) -> None:
    out = Console(highlight=False)
    # Names go through rich's markup parser: escaped, so a class "[cats]" is shown, not eaten as a tag.
    out.print(f"[bold]{escape(safe_text(report['model']))}[/] ({report['format']}): accuracy [bold]{report['accuracy']:.2%}[/] "
              f"on {report['n_images']} images" + (f", {report['n_skipped']} skipped" if report["n_skipped"] else ""))
    t = Table("class", "precision", "recall", "support")
    for name, m in report["per_class"].items():
        t.add_row(escape(name), f"{m['precision']:.3f}", f"{m['recall']:.3f}", str(m["support"]))
    out.print(t)
    cm = Table("true \\ predicted", *map(escape, report["class_names"]), title="confusion matrix")
    for name, row in zip(report["class_names"], report["confusion"]):
        cm.add_row(escape(name), *map(str, row))
    out.print(cm)


def run_eval(model: Path, data_dir: Path, json_out: bool = False, batch_size: int = 32) -> dict:
    report = evaluate(model, data_dir, batch_size=batch_size, quiet=json_out)
    if json_out:
        print(json.dumps(report))
    else:
        print_report(report)
    return report
