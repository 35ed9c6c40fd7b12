"""Training's peak memory and speed as the data set grows: does memory stay flat?

    python benchmarks/train_memory_bench.py --data ../shared/data/cats_dogs/train
    python benchmarks/train_memory_bench.py --counts 1000,5000,20000 --model seed --size 96 --epochs 2

For each image count N, a data set of N photos is made by hard-linking the given photos over and
over under new names (distinct paths, so each is decoded and cached on its own; no disk space
used), and `edgeclf train` runs on it in a child process twice: first with an empty image cache
(decoding + training), then again with the cache that run left (training only). For each run:
the child's peak resident memory (RSS high-water mark, from wait4's ru_maxrss), wall time, and
images/s (training: training images / the warm run's epoch time, from the second epoch on, as
the first also traces the graph; decoding: N / (cold wall - warm wall)).
Writes benchmarks/results/train_memory.md and train_memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from provenance import provenance, stamp_json, stamp_markdown

from edgeclf.image import scan_class_folders
from edgeclf.outfiles import write_json, write_text

RESULTS = ROOT / "benchmarks" / "results"


def make_dataset(src: Path, n: int, dst: Path) -> int:
    """``n`` images (split evenly over the classes) linked from ``src`` under new names."""
    classes, files = scan_class_folders(src)
    per_class = n // len(classes)
    for cls in classes:
        (dst / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            f = files[cls][i % len(files[cls])]
            target = dst / cls / f"{i // len(files[cls])}_{f.name}"
            try:
                os.link(f, target)
            except OSError:  # another file system: copy
                shutil.copyfile(f, target)
    return per_class * len(classes)


def measured(data: Path, out: Path, cache: Path, args) -> dict:
    """One ``edgeclf train`` child; its peak RSS is wait4's ru_maxrss for that child alone."""
    env = {**os.environ, "EDGECLF_CACHE_DIR": str(cache), "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = [sys.executable, "-m", "edgeclf.cli", "train", str(data), "--out", str(out), "--force",
           "--model", args.model, "--img-size", str(args.size), "--epochs", str(args.epochs),
           "--batch-size", str(args.batch), "--no-augment"]
    with tempfile.TemporaryFile() as so, tempfile.TemporaryFile() as se:
        t = time.perf_counter()
        child = subprocess.Popen(cmd, stdout=so, stderr=se, env=env)
        _, status, usage = os.wait4(child.pid, 0)  # reaps the child: no Popen.wait afterwards
        child.returncode = status = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t
        se.seek(0)
        stderr = se.read().decode()
    if status != 0:
        raise SystemExit(f"train failed on {data}: {stderr.strip().splitlines()[-1:] }")
    run = json.loads((out / "run.json").read_text())
    # The per-epoch lines on stderr carry each epoch's wall time; the first includes graph tracing.
    epochs = [float(m) for m in re.findall(r"^epoch +\d+/\d+ .* ([0-9.]+)s  ETA", stderr, re.M)]
    return {"peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "wall_s": round(wall, 1), "epoch_seconds": epochs,
            "train_seconds": run["train_seconds"], "n_train": run["n_train"], "n_val": run["n_val"],
            "val_accuracy": round(run["best"]["val_accuracy"], 4)}


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "cats_dogs" / "train")
    ap.add_argument("--counts", default="1000,5000,20000")
    ap.add_argument("--model", default="seed")
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    return ap.parse_args()


def measure_count(args: argparse.Namespace, n: int, tmp: Path) -> dict:
    """Train twice on ``n`` photos: with an empty image cache (cold), then reusing it (warm)."""
    data = tmp / f"data{n}"
    n_made = make_dataset(args.data, n, data)
    cache = tmp / f"cache{n}"
    cold = measured(data, tmp / f"run{n}", cache, args)
    warm = measured(data, tmp / f"run{n}", cache, args)
    cache_mb = sum(p.stat().st_size for p in cache.glob("*.npy")) / 2**20
    steady = warm["epoch_seconds"][1:] or warm["epoch_seconds"]
    row = {"images": n_made, "cold": cold, "warm": warm, "cache_mb": round(cache_mb, 1),
           "train_images_per_s": round(warm["n_train"] / (sum(steady) / len(steady)), 1),
           # None where background load made the warm run slower than the cold one.
           "decode_images_per_s": round(n_made / (cold["wall_s"] - warm["wall_s"]), 1)
           if cold["wall_s"] > warm["wall_s"] else None,
           "in_memory_array_mb": round(n_made * args.size * args.size * 3 / 2**20, 1)}
    shutil.rmtree(data)
    shutil.rmtree(cache)
    return row


def to_markdown(result: dict) -> str:
    rows = result["rows"]
    lines = [
        "# Training peak memory vs data set size",
        "",
        f"`{result['what']}`. Photos repeated (hard links under new names) to reach each count.",
        "",
        "| images | train/val | peak RSS cold MB | peak RSS warm MB | cache on disk MB | an in-memory array would be MB | train images/s | decode images/s | wall cold s | wall warm s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['images']} | {r['warm']['n_train']}/{r['warm']['n_val']} | {r['cold']['peak_rss_mb']} | {r['warm']['peak_rss_mb']} | "
                     f"{r['cache_mb']} | {r['in_memory_array_mb']} | {r['train_images_per_s']} | {r['decode_images_per_s'] or 'n/a'} | "
                     f"{r['cold']['wall_s']} | {r['warm']['wall_s']} |")
    lines += ["", f"Largest peak deviation from the smallest run's warm peak: {result['peak_spread_vs_smallest_warm']:.1%} (goal: within 20%).", ""]
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    rows = []
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        for n in (int(c) for c in args.counts.split(",")):
            rows.append(measure_count(args, n, Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
    peaks = [r["cold"]["peak_rss_mb"] for r in rows] + [r["warm"]["peak_rss_mb"] for r in rows]
    base = rows[0]["warm"]["peak_rss_mb"]
    result = {
        "what": f"edgeclf train --model {args.model} --img-size {args.size} --epochs {args.epochs} --batch-size {args.batch} "
                "--no-augment, in a child process; cold = empty image cache (decode + train), warm = cache reused",
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "rows": rows,
        "peak_spread_vs_smallest_warm": round(max(abs(p / base - 1) for p in peaks), 3),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    prov = provenance()
    write_json(args.out / "train_memory.json", stamp_json(result, prov))
    md = to_markdown(result)
    write_text(args.out / "train_memory.md", stamp_markdown(md, prov))
    print(md)


if __name__ == "__main__":
    main()
