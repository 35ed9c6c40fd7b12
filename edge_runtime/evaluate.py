"""``edgeclf eval``: accuracy of a Keras or ONNX model on a labelled folder, the same way for both, or of
a run on its own validation split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from rich.markup import escape
from rich.table import Table

from edgeclf import sysinfo
from edgeclf.data.labelled import LabelledImages, load_files, load_labelled
from edgeclf.errors import EdgeclfError, require_train_extra, safe_text, warn, warn_skip
from edgeclf.image import scan_class_folders
from edgeclf.metrics import classification_report
from edgeclf.model.batching import in_batches
from edgeclf.plugins import model_loader
from edgeclf.progress import Bars, console as make_console

console = make_console(stderr=True)


def _open(model: Path, data_dir: Path | None, batch_size: int = 32, unknown_threshold: float | None = None):
    """(class_names, size, predict(batch) -> probs, kind, record or Classifier) for an .onnx, a
    .keras or a run folder; ``record`` is the run's run.json (what the Keras loader read); for an
    .onnx file the Classifier itself."""
    if model.suffix in (".onnx", ".tflite"):
        from edgeclf.model.classifier import Classifier

        clf = Classifier(model, unknown_threshold=unknown_threshold)
        clf.check_batch(1 if clf.max_batch == 1 else batch_size, "--batch-size")  # fixed batch 1: image by image
        return clf.class_names, clf.size, clf.predict_arrays, model.suffix[1:], clf
    if not model.exists():
        raise EdgeclfError(f"{model}: no such model file or run folder")
    if not (model.is_dir() or model.suffix == ".keras"):
        raise EdgeclfError(f"{model}: not a model (expected a run folder, a .keras, an .onnx or a .tflite file)")
    require_train_extra("eval")
    load = model_loader("keras")  # edgeclf.train's, through its entry point: the runtime does not import it
    if load is None:
        # TensorFlow is there (checked above), so edgeclf's own metadata lacks the loader: a broken install
        raise EdgeclfError(f"{model}: no Keras model loader is registered (edgeclf.model_loaders); "
                           "reinstall edgeclf: pip install --force-reinstall 'edgeclf[train]'")
    km = load(model)
    names = km.class_names
    if names is None and data_dir is not None:  # a bare .keras file: assume the folder's classes if their number fits
        names, _ = scan_class_folders(data_dir)
        if len(names) != km.num_classes:
            raise EdgeclfError(f"{model}: no run.json beside it and {data_dir} has {len(names)} classes, the model {km.num_classes}")
    return names, km.size, km.predict, "keras", km


def _check_memory(n: int, size: tuple[int, int], where: object) -> None:
    """Every image is held at the model's input size: refuse what would take more than half the memory."""
    need = n * size[0] * size[1] * 3
    if need > sysinfo.available_memory_bytes() // 2:
        raise EdgeclfError(f"{where}: {n} images at {size[0]}x{size[1]} need {need / 2**30:.1f} GiB, more than half "
                           "of the memory available; evaluate on a smaller folder")


def _folder(data_dir: Path, class_names: list[str], size: tuple[int, int], resize: str, bars: Bars) -> LabelledImages:
    """A labelled folder (one sub-folder per class), read at the model's input size by its resize rule."""
    n = sum(len(v) for v in scan_class_folders(data_dir)[1].values())
    _check_memory(n, size, data_dir)
    return load_labelled(data_dir, size, class_names, progress=bars.add("reading images", n), resize=resize)


def _validation_split(model: Path, record, class_names: list[str], size: tuple[int, int], resize: str,
                      bars: Bars) -> LabelledImages:
    """The run's own validation images, as run.json lists them; each one's class is the class
    folder it lies in, below the run's --val folder or data folder."""
    paths = record.split_paths("val") if record is not None else []
    if not paths:
        raise EdgeclfError(f"{model}: {'no run.json records' if record is not None else 'no run.json, so no'} validation "
                           f"split to score; give a labelled folder: edgeclf eval {model} DATA_DIR")
    folders = {Path(root) / name: i for root in (record.val_dir, record.data_dir) if root for i, name in enumerate(class_names)}
    labels = [next((folders[d] for d in p.parents if d in folders), None) for p in paths]
    if None in labels:
        stray = paths[labels.index(None)]
        raise EdgeclfError(f"{model}: run.json's validation file {stray} is in none of the run's class folders")
    _check_memory(len(paths), size, model)
    x, ok, skipped = load_files(paths, size, warn_skip, bars.add("reading the validation split", len(paths)), resize)
    if not ok:
        raise EdgeclfError(f"{model}: none of the {len(paths)} validation images run.json lists can be read "
                           f"(moved or deleted?); give a labelled folder: edgeclf eval {model} DATA_DIR")
    return LabelledImages(x, np.asarray([labels[i] for i in ok], np.int64), [paths[i] for i in ok], class_names, skipped)


def evaluate(model: Path, data_dir: Path | None = None, batch_size: int = 32, quiet: bool = False,
             unknown_dir: Path | None = None, unknown_threshold: float | None = None, plot: Path | None = None) -> dict:
    """Evaluate ``model`` on ``data_dir`` (one sub-folder per class), or without it on the run's
    own validation split (run.json's file list); returns the report dict. With ``unknown_dir``
    (photos of none of the classes, any layout) also the open-set figures (``openset``) of an
    .onnx model with an unknown score, and their PNG at ``plot``."""
    if batch_size < 1:
        raise EdgeclfError(f"--batch-size must be at least 1 (got {batch_size})")
    model = Path(model)
    data_dir = None if data_dir is None else Path(data_dir)
    class_names, size, predict, kind, handle = _open(model, data_dir, batch_size, unknown_threshold)
    record, clf = (None, handle) if kind in ("onnx", "tflite") else (getattr(handle, "record", None), None)
    if unknown_dir is not None and kind == "tflite" and clf.unknown_output is None:
        raise EdgeclfError(f"{model}: this LiteRT model has no unknown score (export it again with this edgeclf, "
                           "or evaluate the export's .onnx model with --unknown)")
    if unknown_dir is not None and kind == "keras":  # judged with its export's bank and threshold
        from edgeclf.openset import ScoredKeras

        clf = ScoredKeras(handle, class_names, unknown_threshold)
    if unknown_dir is not None and clf.unknown_rule.threshold is None:
        raise EdgeclfError(f"{model}: no unknown score threshold (export the model with this edgeclf to get one, or "
                           "pass --unknown-threshold)")
    unknown_files = _unknown_files(unknown_dir, size) if unknown_dir is not None else None
    with Bars(quiet=quiet or not console.is_terminal, console=console) as bars:  # a log gets no bar
        if data_dir is None:
            data = _validation_split(model, record, class_names, size, handle.resize, bars)
        else:
            data = _folder(data_dir, class_names, size, handle.resize, bars)
        if unknown_files is not None:
            open_set = _open_set(clf, data, unknown_dir, unknown_files, size, handle.resize, batch_size, bars, plot, model)
            probs = open_set.pop("_probs")
        else:
            probs = in_batches(predict, data.x, batch_size, bars.add("classifying", len(data.x)))
    pred = probs.argmax(1) if len(probs) else np.zeros(0, np.int64)
    report = classification_report(data.y, pred, class_names)
    report.update(
        model=str(model), format=kind, class_names=class_names, n_skipped=len(data.skipped), skipped=data.skipped,
    )
    if data_dir is None:  # said in the output: a score on other photos would not be comparable
        report.update(split="val", split_source="run.json")
        if getattr(record, "refitted", False):  # train --refit: the model has seen these photos
            report["trained_on_these_photos"] = True
            warn(f"{model}: the model was trained again on every photo (refit), the validation split's included: this "
                 "accuracy is on photos it has seen; give photos it has not: edgeclf eval MODEL DATA_DIR")
    if unknown_files is not None:
        report["unknown"] = open_set
    return report


def _unknown_files(unknown_dir: Path, size: tuple[int, int]) -> list[Path]:
    """Every image under ``unknown_dir`` (any layout), or a one-line error."""
    from edgeclf.image import list_images

    if not unknown_dir.is_dir():
        raise EdgeclfError(f"{unknown_dir}: --unknown is not a folder")
    files = list_images(unknown_dir)
    if not files:
        raise EdgeclfError(f"{unknown_dir}: --unknown holds no image files")
    _check_memory(len(files), size, unknown_dir)
    return files


def _open_set(clf, data: LabelledImages, unknown_dir: Path, files: list[Path], size: tuple[int, int], resize: str,
              batch_size: int, bars: Bars, plot: Path | None, model: Path) -> dict:
    """The open-set figures (and the PNG); "_probs": the in-class photos' probabilities. The unknown
    photos are read at the model's input ``size`` by its ``resize`` rule."""
    from edgeclf.openset import plot_scores, scores_of, unknown_report

    known = scores_of(clf, data.x, batch_size, bars.add("classifying", len(data.x)))
    x, ok, _ = load_files(files, size, warn_skip, bars.add("reading the unknown photos", len(files)), resize)
    if not ok:
        raise EdgeclfError(f"{unknown_dir}: none of its {len(files)} image files can be read")
    up, us = scores_of(clf, x[: len(ok)], batch_size, bars.add("classifying the unknown photos", len(ok)))
    report = unknown_report(clf, known, up, us, data.y, unknown_dir)
    if plot is not None:
        plot_scores(plot, report, known[1], us, model)
        report["plot"] = str(plot)
    return {**report, "_probs": known[0]}


def print_report(report: dict) -> None:
    out = make_console()
    # Names go through rich's markup parser: escaped, so a class "[cats]" is shown, not eaten as a tag.
    ci = report["accuracy_ci95"]
    out.print(f"[bold]{escape(safe_text(report['model']))}[/] ({report['format']}): accuracy [bold]{report['accuracy']:.2%}[/] "
              f"(95% CI {100 * ci[0]:.1f}-{100 * ci[1]:.1f}%) "
              f"on {report['n_images']} images" + (" of the run's validation split (run.json)" if report.get("split") else "")
              + (f", {report['n_skipped']} skipped" if report["n_skipped"] else ""))
    # one row per class, each figure with its 95% Wilson interval from its own count: recall from
    # the class's images (support), precision from the images predicted as it (predicted)
    t = Table("class", "recall (95% CI)", "support", "precision (95% CI)", "predicted",
              caption="95% CI: Wilson score interval; the fewer the images, the wider")
    for name, m in report["per_class"].items():
        t.add_row(escape(name), _pct_ci(m["recall"], m["recall_ci95"]), str(m["support"]),
                  _pct_ci(m["precision"], m["precision_ci95"]), str(m["predicted"]))
    out.print(t)
    cm = Table("true \\ predicted", *map(escape, report["class_names"]), title="confusion matrix")
    for name, row in zip(report["class_names"], report["confusion"]):
        cm.add_row(escape(name), *map(str, row))
    out.print(cm)


def _pct_ci(value: float, ci: list[float]) -> str:
    return f"{value:.1%} ({100 * ci[0]:.1f}-{100 * ci[1]:.1f})"


def run_eval(model: Path, data_dir: Path | None, json_out: bool = False, batch_size: int = 32,
             unknown_dir: Path | None = None, unknown_threshold: float | None = None, plot: Path | None = None,
             force: bool = False) -> dict:
    from edgeclf.errors import warn
    from edgeclf.outfiles import check_output

    if unknown_dir is None and (unknown_threshold is not None or plot is not None):
        warn("--unknown-threshold and --plot apply with --unknown; ignored")
        unknown_threshold = plot = None
    if unknown_dir is not None:  # before any work: a plot must never replace an input
        plot = check_output(plot if plot is not None else Path(model).with_suffix(".unknown.png"), "--plot",
                            [p for p in (model, data_dir, unknown_dir) if p is not None], force)
    report = evaluate(model, data_dir, batch_size=batch_size, quiet=json_out, unknown_dir=unknown_dir,
                      unknown_threshold=unknown_threshold, plot=plot)
    if json_out:
        print(json.dumps(report))
    else:
        print_report(report)
        if "unknown" in report:
            _print_open_set(report["unknown"])
    return report


def _print_open_set(u: dict) -> None:
    out = make_console()
    t = Table("figure", "value (95% CI)", "photos", title=f"photos of none of the classes: {escape(safe_text(u['unknown_dir']))}",
              caption=f"threshold {u['threshold']:.4f} ({'calibrated at export' if u['threshold_source'] == 'model' else 'given'}); "
                      "AUROC and the 95% point use every score, not the threshold")
    for name, key in (("in-class photos right and not unknown", "in_class_right_and_accepted"),
                      ("in-class photos answered unknown", "in_class_rejected"),
                      ("unknown photos answered unknown", "unknown_rejected")):
        f = u[key]
        t.add_row(name, _pct_ci(f["share"], f["ci95"]), str(f["n"]))
    t.add_row("AUROC (unknown vs in-class)", f"{u['auroc']:.4f}", "")
    t.add_row("unknowns accepted when 95% of in-class are", f"{u['unknown_accepted_at_95']:.1%}", "")
    out.print(t)
    if "plot" in u:
        out.print(f"score distributions: {escape(u['plot'])}")
