"""``edgeclf demo``: the whole chain on data it generates itself, in a few minutes on 2 CPU cores.

data (shapes) -> train (edgenet) -> export (fp32 + verified int8 ONNX) -> classify a generated
video with the int8 model through the edge runtime -> benchmark fp32 against int8.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from rich.markup import escape

from edgeclf.data.synthetic import make_shapes_dataset, make_shapes_video
from edgeclf.errors import EdgeclfError
from edgeclf.train.config import TrainConfig, check_writable_folder

DEMO_IMAGES_PER_CLASS = 300
DEMO_SIZE = 64
DEMO_EPOCHS = 20
STEPS = 5
DEMO_ENTRIES = {"data", "run", "export", "shapes.mp4", "annotated.mp4"}  # what a demo folder holds


def _step(i: int, title: str) -> None:
    from edgeclf.train.epochs import console

    console.rule(f"[bold]{i}/{STEPS} {title}")


def check_demo_out(out: Path, force: bool) -> None:
    """``--out`` can take a demo: a folder (or nothing yet), empty unless ``force`` and then an
    earlier demo's, writable. Needs no TensorFlow, so the command refuses at once."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise EdgeclfError(f"{out}: --out exists and is not a folder")
    try:
        occupied = out.is_dir() and any(out.iterdir())
    except OSError as e:
        raise EdgeclfError(f"{out}: cannot read the --out folder ({e.strerror or e})") from None
    if occupied:
        if not force:
            raise EdgeclfError(f"{out}: already exists and is not empty; use --force to start over or --out elsewhere")
        if not (out / "data").is_dir() and not (out / "run").is_dir():
            raise EdgeclfError(f"{out}: not an edgeclf demo folder; refusing to delete it even with --force")
        # --force deletes the folder: only when everything in it is the demo's own.
        foreign = sorted(p.name for p in out.iterdir() if p.name not in DEMO_ENTRIES)
        if foreign:
            raise EdgeclfError(f"{out}: holds files that are not the demo's ({', '.join(foreign[:3])}"
                               f"{', ...' if len(foreign) > 3 else ''}); refusing to delete it even with --force")
    check_writable_folder(out, "--out")


def run_demo(out: Path, force: bool = False, epochs: int = DEMO_EPOCHS, per_class: int = DEMO_IMAGES_PER_CLASS) -> dict:
    """Run every stage into ``out``; returns the headline figures."""
    out = Path(out)
    check_demo_out(out, force)
    if any(out.iterdir()):
        try:
            shutil.rmtree(out)
        except OSError as e:
            raise EdgeclfError(f"{out}: cannot remove the earlier demo ({e.strerror or e})") from None
    t0 = time.time()
    results: dict = {"out": str(out)}

    _step(1, "generate data")
    data = _generate(out, per_class)
    _step(2, "train")
    results["val_accuracy"] = _train(data, out, epochs)
    _step(3, "export to ONNX and int8 ONNX")
    results["int8"], model = _export(out)
    _step(4, "classify a video on the edge runtime (no TensorFlow)")
    video = out / "shapes.mp4"
    results["video"] = _classify_video(model, video)
    _step(5, "benchmark")
    results["bench"] = _bench(out / "export", video)

    _summary(out, time.time() - t0)
    return results


def _generate(out: Path, per_class: int) -> Path:
    """The shapes data set; returns its folder."""
    from edgeclf.train.epochs import console

    data = make_shapes_dataset(out / "data", per_class=per_class, size=DEMO_SIZE, seed=0)
    console.print(f"{3 * per_class} images of circles, squares and triangles on noisy backgrounds in {escape(str(data))}")
    return data


def _train(data: Path, out: Path, epochs: int) -> float:
    """edgenet on ``data`` into out/run; returns its validation accuracy."""
    from edgeclf.train.epochs import console
    from edgeclf.train.trainer import train

    # The demo trains edgenet from scratch, not the pretrained default: generated shapes need no
    # ImageNet features, and it keeps the whole demo offline and within about 1.5 minutes.
    run = train(TrainConfig(data_dir=data, out=out / "run", model="edgenet", img_size=DEMO_SIZE, epochs=epochs,
                            batch_size=32, patience=epochs, seed=0))
    if run["interrupted"]:
        raise KeyboardInterrupt  # the rest of the chain needs a finished model
    console.print(f"edgenet (from scratch) {DEMO_SIZE}x{DEMO_SIZE}: validation accuracy {run['val_report']['accuracy']:.1%}, "
                  f"{run['macs'] / 1e6:.1f} M MACs/frame")
    return run["val_report"]["accuracy"]


def _export(out: Path) -> tuple[dict, Path]:
    """fp32 and int8 ONNX into out/export; returns export.json's int8 entry and the model the
    video step runs (int8, or fp32 when the int8 model was rejected)."""
    from edgeclf.train.epochs import console

    from .api import export_model

    exported = export_model(out / "run", out / "export", int8=True, max_drop=0.03)
    q = exported.get("int8") or {}
    console.print(f"parity Keras vs ONNX: {exported['parity']['top1_agreement']:.1%} top-1 agreement, "
                  f"max |Δp| {exported['parity']['max_abs_diff']:.1e} on {exported['parity']['n']} images")
    if q.get("accepted", True) and (out / "export" / "model.int8.onnx").exists():
        console.print(f"int8 ({q['method']}): accuracy {q['accuracy_int8']:.1%} vs fp32 {q['accuracy_fp32']:.1%}, "
                      f"{q['size_ratio']:.0%} of the size, {1 / q['latency_ratio']:.1f}x faster per frame")
        return q, out / "export" / "model.int8.onnx"
    console.print("[yellow]int8 model rejected by its accuracy check; the video step uses fp32")
    return q, out / "export" / "model.onnx"


def _classify_video(model: Path, video: Path) -> dict:
    """Generate ``video`` and classify it with ``model`` through the edge runtime; frames, accuracy, fps."""
    from edgeclf.model.classifier import Classifier
    from edgeclf.predict.loop import classify
    from edgeclf.sources.open import open_source
    from edgeclf.train.epochs import console

    truth = make_shapes_video(video, frames=90, size=160, fps=15, hold=15, seed=1)
    clf = Classifier(model, provider="cpu")
    t = time.perf_counter()
    preds = [r.prediction.label for r in classify(clf, open_source(str(video)), batch=8)]
    seconds = time.perf_counter() - t
    agree = sum(p == g for p, g in zip(preds, truth)) / max(1, len(truth))
    console.print(f"{model.name} on {video.name}: {len(preds)} frames, {agree:.1%} labelled correctly, "
                  f"{len(preds) / seconds:.0f} frames/s end to end")
    out = video.parent
    console.print(escape(f"  try: edgeclf predict {model} {video} --save {out / 'annotated.mp4'}"))
    console.print(escape(f"   or: edgeclf predict {model} {video} --serve 8080 --loop   (then open http://127.0.0.1:8080/)"))
    return {"frames": len(preds), "accuracy": agree, "fps": len(preds) / seconds}


def _summary(out: Path, seconds: float) -> None:
    from edgeclf.train.epochs import console

    console.rule("[bold]done")
    console.print(f"finished in {seconds:.0f} s. Everything is in {escape(str(out))}/:")
    for name, what in (
        ("data/", "generated training images (3 classes)"),
        ("run/", "model.keras, run.json, history.csv, curves.png, confusion.png"),
        ("export/", "model.onnx, model.int8.onnx, export.json, bench-*.png"),
        ("shapes.mp4", "the generated test video"),
    ):
        console.print(f"  {name:<12} {what}")


def _bench(export_dir: Path, video: Path) -> dict:
    """``edgeclf bench`` on the fp32 and int8 models, batch 1 and 8, the video end to end."""
    from edgeclf.bench.report import render
    from edgeclf.progress import console as make_console
    from edgeclf.train.epochs import console

    reports = {}
    for name in ("model.onnx", "model.int8.onnx"):
        path = export_dir / name
        if not path.exists():
            continue
        # A fresh process, as on the device: this one holds TensorFlow, which would swell the
        # memory figure and compete for the cores.
        cmd = [sys.executable, "-m", "edgeclf.cli", "bench", str(path), "--runs", "100", "--warmup", "10",
               "--batch", "1,8", "--provider", "cpu", "--source", str(video), "--json",
               "--plot", str(export_dir / f"bench-{path.stem.replace('.', '-')}.png")]
        console.print(f"edgeclf bench {name} (fresh process, batch 1 and 8, video end to end)...")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
            raise EdgeclfError(f"{path}: benchmark failed ({last})")
        report = json.loads(proc.stdout)
        console.rule(name)
        render(report, make_console(stderr=True, highlight=True))
        reports[name] = report
    return reports
