"""``edgeclf add-class``: accuracy against the number of photos per new class, and its time.

    python benchmarks/addclass_bench.py --export ../exp/unknown/run/export --old-test ../exp/unknown/data/test \
        --new NAME=TRAIN_DIR:TEST_DIR [--new ...] [--shots 1,5,10,20] [--draws 3] [--name addclass]

For each number of photos n and each of ``--draws`` seeded draws, every ``--new`` class is added
in turn (n photos drawn from its TRAIN_DIR) to the export's fp32 and int8 models; the enlarged
model is then judged, as ``predict`` answers (``unknown`` counts as wrong), on the new classes'
TEST_DIR photos and on the old classes' ``--old-test`` photos (never seen in training), against
the original model on the same old photos. Time: the whole ``edgeclf add-class`` command (a fresh
process, both models of the export folder) for 20 photos from a folder, median of 3.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from provenance import provenance, stamp_json, stamp_markdown  # noqa: E402

from edgeclf.outfiles import write_json, write_text  # noqa: E402


def accuracy(model: Path, x: np.ndarray, y: list[str]) -> float:
    from edgeclf.model.classifier import Classifier

    clf = Classifier(model, threads=2)
    preds = clf.predictions(*clf.classify_arrays(x))
    return float(np.mean([p.label == t for p, t in zip(preds, y)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--export", type=Path, required=True)
    ap.add_argument("--old-test", type=Path, required=True)
    ap.add_argument("--new", action="append", required=True, help="NAME=TRAIN_DIR:TEST_DIR")
    ap.add_argument("--shots", default="1,5,10,20")
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--name", default="addclass")
    args = ap.parse_args()

    from edgeclf.data.labelled import load_labelled
    from edgeclf.image import list_images, read_image
    from edgeclf.model.classes import add_class
    from edgeclf.model.classifier import Classifier

    clf = Classifier(args.export / "model.onnx", threads=1)
    old = load_labelled(args.old_test, clf.size, resize=clf.resize)  # the model's own rule
    old_y = [old.class_names[i] for i in old.y]
    new = {}
    for spec in args.new:
        name, dirs = spec.split("=", 1)
        train_dir, test_dir = map(Path, dirs.split(":"))
        test_files = list_images(test_dir)
        clf = Classifier(args.export / "model.onnx", threads=1)
        new[name] = {"train": list_images(train_dir), "test_x": np.stack([clf.preprocess(read_image(f)) for f in test_files])}
    base = {p: accuracy(args.export / f, old.x, old_y) for p, f in (("fp32", "model.onnx"), ("int8", "model.int8.onnx"))}
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="edgeclf-addclass-"))
    for n in map(int, args.shots.split(",")):
        for draw in range(args.draws):
            rng = np.random.default_rng(1000 * n + draw)
            current = args.export
            t = time.perf_counter()
            for name, d in new.items():
                pick = [d["train"][i] for i in rng.choice(len(d["train"]), n, replace=False)]
                out = tmp / f"{n}-{draw}-{name}"
                add_class(current, name, [read_image(p) for p in pick], out)
                current = out
            seconds = time.perf_counter() - t
            row = {"shots": n, "draw": draw, "seconds_all_classes": seconds}
            for p, f in (("fp32", "model.onnx"), ("int8", "model.int8.onnx")):
                x_new = np.concatenate([d["test_x"] for d in new.values()])
                y_new = [k for k, d in new.items() for _ in range(len(d["test_x"]))]
                row[p] = {"new": accuracy(current / f, x_new, y_new), "old": accuracy(current / f, old.x, old_y)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    shutil.rmtree(tmp)
    timing = cli_time(args.export, next(iter(new.items())))
    result = {"export": str(args.export), "old_test": str(args.old_test), "n_old_test": len(old_y),
              "new": {k: {"train_pool": len(d["train"]), "n_test": len(d["test_x"])} for k, d in new.items()},
              "old_accuracy_before": base, "rows": rows, "cli_seconds_20_photos": timing}
    write_json(ROOT / "benchmarks" / "results" / f"{args.name}.json", stamp_json(result, provenance()))
    write_text(ROOT / "benchmarks" / "results" / f"{args.name}.md", stamp_markdown(markdown(result), provenance()))


def cli_time(export: Path, new: tuple[str, dict], runs: int = 3) -> dict:
    """Wall time of the whole command for 20 photos of one class from a folder (both models)."""
    name, d = new
    src = Path(tempfile.mkdtemp(prefix="edgeclf-addclass-src-"))
    for p in d["train"][:20]:
        (src / p.name).symlink_to(p.resolve())
    times = []
    for i in range(runs):
        out = src.parent / f"{src.name}-out{i}"
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "edgeclf.cli", "add-class", str(export), name, str(src), "--out", str(out)],
                       check=True, capture_output=True)
        times.append(time.perf_counter() - t)
        shutil.rmtree(out)
    shutil.rmtree(src)
    return {"median": float(np.median(times)), "all": times}


def markdown(res: dict) -> str:
    shots = sorted({r["shots"] for r in res["rows"]})
    lines = ["# `edgeclf add-class`: accuracy against the number of photos per new class", "",
             f"Model: {res['export']} (trained on the old classes only). New classes, added in turn: " +
             ", ".join(f"{k} ({v['n_test']} unseen test photos, drawn from {v['train_pool']})" for k, v in res["new"].items())
             + f". Old classes judged on {res['n_old_test']} photos training never saw. Right = the label `predict` "
             "gives (`unknown` counts as wrong); mean (min-max) over the draws.", "",
             "| photos per new class | new classes right (fp32) | new classes right (int8) | old classes right (fp32) | "
             "old classes right (int8) | seconds to add them all (in process) |", "|---|---|---|---|---|---|"]
    for n in shots:
        rs = [r for r in res["rows"] if r["shots"] == n]

        def cell(p: str, k: str) -> str:
            v = [r[p][k] for r in rs]
            return f"{np.mean(v):.1%} ({min(v):.1%}-{max(v):.1%})"
        lines.append(f"| {n} | {cell('fp32', 'new')} | {cell('int8', 'new')} | {cell('fp32', 'old')} | {cell('int8', 'old')} | "
                     f"{np.mean([r['seconds_all_classes'] for r in rs]):.2f} |")
    b = res["old_accuracy_before"]
    lines += ["", f"Old classes before any class was added: fp32 {b['fp32']:.1%}, int8 {b['int8']:.1%}.", "",
              f"`edgeclf add-class EXPORT_FOLDER NAME FOLDER_OF_20_PHOTOS --out DIR`, the whole command in a fresh process "
              f"(both models): median {res['cli_seconds_20_photos']['median']:.2f} s of {len(res['cli_seconds_20_photos']['all'])} "
              "(goal: under 10 s)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
