"""The training recipe on several small real data sets, judged on each set's held-out photos.

    python benchmarks/recipe_bench.py --sets DATASETS_ROOT
    python benchmarks/recipe_bench.py --sets DATASETS_ROOT --model efficientnet_lite2
    python benchmarks/recipe_bench.py --sets DATASETS_ROOT --old "python -m edgeclf.cli" --old-env PYTHONPATH=OLD

DATASETS_ROOT holds one folder per data set with ``train/<class>/`` and ``test/<class>/`` (see
benchmarks/datasets.md for where each comes from and benchmarks/make_datasets.py); the shared
cats and dogs photos (which have no test folder) are added with a seeded 30% held out.

Arms, each on the same photos:
- ``probe``: the backbone's frozen features with a tuned linear head (train.probe, in a child process of its own):
  the floor the recipe must not fall below;
- ``recipe``: ``edgeclf train`` as shipped (a subprocess; wall time and peak RSS), then ``edgeclf
  export --int8`` and ``edgeclf eval`` of the Keras, fp32 ONNX and int8 ONNX models on the test photos;
- ``old`` (with --old): another edgeclf's ``train`` (e.g. an earlier commit installed elsewhere),
  judged the same way on Keras.
Writes benchmarks/results/<name>.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from provenance import provenance, stamp_json, stamp_markdown  # noqa: E402

from edgeclf.image import scan_class_folders  # noqa: E402
from edgeclf.outfiles import write_json, write_text  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
SHARED = ROOT.parent / "shared" / "data" / "cats_dogs" / "train"
EDGECLF = [sys.executable, "-m", "edgeclf.cli"]


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", type=Path, required=True, help="folder of data sets, each with train/ and test/")
    ap.add_argument("--only", default="", help="comma-separated data set names to run (default: all)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/edgeclf-recipe-bench"))
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--train-args", default="", help="extra options for edgeclf train (a variant of the recipe)")
    ap.add_argument("--old", default="", help="command that runs another edgeclf (its train is the 'old' arm)")
    ap.add_argument("--old-env", default="", help="NAME=VALUE for the old command's environment")
    ap.add_argument("--old-args", default="", help="extra options for the old command's train")
    ap.add_argument("--old-label", default="old recipe", help="what the old arm is called in the table")
    ap.add_argument("--old-export", action="store_true",
                    help="also export the old arm's runs with this edgeclf and judge them as the recipe's (int8, unknown score)")
    ap.add_argument("--name", default="", help="results file name (default: recipe-MODEL)")
    ap.add_argument("--reuse", action="store_true", help="keep finished runs in --work")
    ap.add_argument("--probe-only", action="store_true", help="only the frozen-features arm (a quick look at a backbone)")
    args = ap.parse_args()
    args.name = args.name or f"recipe-{args.model}"
    return args


def data_sets(args: argparse.Namespace) -> dict[str, tuple[Path, Path]]:
    """name -> (train folder, test folder)."""
    sets = {p.name: (p / "train", p / "test") for p in sorted(args.sets.iterdir()) if (p / "train").is_dir()}
    if SHARED.is_dir():
        sets["cats_dogs"] = hold_out(SHARED, args.work / "cats_dogs-split", 0.3)
    only = [s for s in args.only.split(",") if s]
    return {k: v for k, v in sets.items() if not only or k in only}


def hold_out(src: Path, dst: Path, fraction: float, seed: int = 0) -> tuple[Path, Path]:
    """A seeded, stratified train/test split of ``src`` as symbolic links under ``dst``."""
    classes, files = scan_class_folders(src)
    for cls in classes:
        paths = sorted(files[cls])
        random.Random(seed).shuffle(paths)
        n_test = int(len(paths) * fraction)
        for i, p in enumerate(paths):
            link = dst / ("test" if i < n_test else "train") / cls / p.name
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                link.symlink_to(p.resolve())
    return dst / "train", dst / "test"


def run_child(cmd: list[str], env: dict | None = None) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run ``cmd``; (result, wall seconds, the child's own peak RSS in MB, from wait4)."""
    import tempfile

    t = time.time()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.time() - t
        out.seek(0)
        err.seek(0)
        result = subprocess.CompletedProcess(cmd, os.waitstatus_to_exitcode(status), out.read(), err.read())
    return result, wall, usage.ru_maxrss / 1024


def evaluate(model: Path, test: Path) -> dict:
    """``edgeclf eval MODEL TEST --json``: accuracy, its interval when printed, and the count."""
    res = subprocess.run([*EDGECLF, "eval", str(model), str(test), "--json"], capture_output=True, text=True)
    if res.returncode != 0:
        return {"error": (res.stderr.strip().splitlines() or ["?"])[-1]}
    report = json.loads(res.stdout)
    return {k: report[k] for k in ("accuracy", "accuracy_ci95", "n_images") if k in report}


def in_class_unknown(model: Path, test: Path, others: Path) -> dict:
    """``edgeclf eval MODEL TEST --unknown OTHERS``: the share of the test photos (all of known
    classes) the calibrated unknown score rejects (export aims at 2%), and of ``others`` it catches."""
    res = subprocess.run([*EDGECLF, "eval", str(model), str(test), "--unknown", str(others), "--json", "--force",
                          "--plot", str(model.with_suffix(".unknown.png"))], capture_output=True, text=True)
    if res.returncode != 0:
        return {"error": (res.stderr.strip().splitlines() or ["?"])[-1]}
    u = json.loads(res.stdout)["unknown"]
    return {"in_class_rejected": u["in_class_rejected"]["share"], "n": u["in_class_rejected"]["n"],
            "others_rejected": u["unknown_rejected"]["share"], "others": str(others)}


def recipe_arm(name: str, train: Path, test: Path, args: argparse.Namespace, others: Path | None = None) -> dict:
    """``edgeclf train`` + ``export --int8`` + ``eval`` of the three models on the test photos
    (and, with ``others``, the int8 model's unknown score on the test photos and on ``others``)."""
    out = args.work / name / f"recipe-{args.model}"
    row: dict = {}
    if not (args.reuse and (out / "run.json").is_file()):
        cmd = [*EDGECLF, "train", str(train), "--out", str(out), "--force", "--json", "--model", args.model,
               *shlex.split(args.train_args)]
        res, wall, peak = run_child(cmd)
        if res.returncode not in (0, 130):
            return {"error": (res.stderr.strip().splitlines() or ["?"])[-1]}
        row["train_s"], row["train_peak_mb"] = round(wall, 1), round(peak)
    run = json.loads((out / "run.json").read_text())
    row.update(val_accuracy=run["best"]["val_accuracy"], n_train=run["n_train"], n_val=run["n_val"],
               macs_m=round(run["macs"] / 1e6, 1), probe=run.get("linear_probe"), refit=run.get("refit"))
    return {**row, **export_and_judge(out, test, others)}


def export_and_judge(out: Path, test: Path, others: Path | None = None) -> dict:
    """``export --int8`` of the run ``out``, then its three models on the test photos (and, with
    ``others``, the int8 model's unknown score on the test photos and on ``others``)."""
    export, row = out / "export", {}
    res = subprocess.run([*EDGECLF, "export", str(out), "--int8", "--out", str(export), "--force"],
                         capture_output=True, text=True)
    row["export_rc"] = res.returncode
    if res.returncode:
        row["export_error"] = (res.stderr.strip().splitlines() or ["?"])[-1]
    row["keras"] = evaluate(out / "model.keras", test)
    row["fp32"] = evaluate(export / "model.onnx", test)
    row["int8"] = evaluate(export / "model.int8.onnx", test)
    if others is not None:
        row["int8_unknown"] = in_class_unknown(export / "model.int8.onnx", test, others)
    return row


def old_arm(name: str, train: Path, test: Path, args: argparse.Namespace, others: Path | None = None) -> dict:
    """Another edgeclf's ``train`` on the same photos, judged on Keras (with ``--old-export``, also
    exported and judged as the recipe arm is)."""
    out = args.work / name / "old"
    row: dict = {}
    if not (args.reuse and (out / "run.json").is_file()):
        env = dict(os.environ)
        if args.old_env:
            key, _, value = args.old_env.partition("=")
            env[key] = value
        cmd = [*shlex.split(args.old), "train", str(train), "--out", str(out), "--force", "--json",
               *shlex.split(args.old_args)]
        res, wall, _ = run_child(cmd, env)
        if res.returncode not in (0, 130):
            return {"error": (res.stderr.strip().splitlines() or ["?"])[-1]}
        row["train_s"] = round(wall, 1)
    run = json.loads((out / "run.json").read_text())
    row.update(val_accuracy=run["best"]["val_accuracy"], keras=evaluate(out / "model.keras", test))
    if args.old_export:
        row.update(export_and_judge(out, test, others))
    return row


def probe_arm(train: Path, test: Path, model_name: str) -> dict:
    """The frozen backbone's features with a tuned linear head (train.probe), judged on the test photos."""
    from edgeclf.data.labelled import load_files
    from edgeclf.train.models import ARCHITECTURES
    from edgeclf.train.probe import features_of_batches, fit_head, softmax

    arch, started = ARCHITECTURES[model_name], time.time()
    classes = scan_class_folders(train)[0]
    model = arch.build(len(classes), arch.default_size)

    def features(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        files = scan_class_folders(folder)[1]
        paths = [p for c in classes for p in files[c]]
        labels = np.array([i for i, c in enumerate(classes) for _ in files[c]])
        x, ok, _ = load_files(paths, (arch.default_size, arch.default_size), on_skip=lambda *_: None)
        x = x[: len(ok)]  # load_files packs the readable images first
        plain, mirrored = features_of_batches(model, (x[i:i + 64] for i in range(0, len(x), 64)))
        return plain, mirrored, labels[ok]

    f, fm, y = features(train)
    g, _, yt = features(test)
    record = fit_head(model, f, fm, y, len(classes), seed=1337)
    w, b = model.get_layer("probs").get_weights()
    accuracy = float((softmax(g @ w + b).argmax(1) == yt).mean())
    return {"accuracy": accuracy, "n": int(len(yt)), "l2": record["l2"], "seconds": round(time.time() - started, 1)}


def mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def to_markdown(rows: dict, args: argparse.Namespace) -> str:
    def pct(r: dict, k: str, ci: bool = False) -> str:
        e = r.get(k)
        if not isinstance(e, dict) or "accuracy" not in e:
            return "-"
        lo_hi = e.get("accuracy_ci95")
        return f"{e['accuracy']:.1%}" + (f" ({lo_hi[0]:.1%}-{lo_hi[1]:.1%})" if ci and lo_hi else "")

    lines = [f"# Training recipe on small real data sets ({args.model})", "",
             "Accuracy on each set's held-out test photos (never seen in training or validation); in brackets the "
             "95% Wilson interval from the number of test photos. Data sets: benchmarks/datasets.md.", "",
             "| data set | train / test photos | frozen features + tuned linear head | recipe Keras | fp32 ONNX | int8 ONNX "
             f"| {args.old_label} Keras | train time | peak RSS | int8 export | int8: test photos answered unknown |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        rec, old, probe = r.get("recipe", {}), r.get("old", {}), r.get("probe", {})
        n_test = (rec.get("keras") or {}).get("n_images", probe.get("n", "?"))
        lines.append(f"| {name} | {rec.get('n_train', 0) + rec.get('n_val', 0)} / {n_test} | "
                     f"{probe.get('accuracy', float('nan')):.1%} | {pct(rec, 'keras', ci=True)} | {pct(rec, 'fp32')} | "
                     f"{pct(rec, 'int8')} | {pct(old, 'keras')} | {rec.get('train_s', float('nan')) / 60:.1f} min | "
                     f"{rec.get('train_peak_mb', float('nan')):.0f} MB | "
                     f"{'accepted' if rec.get('export_rc') == 0 else rec.get('export_error', '-')} | "
                     f"{_unknown_cell(rec.get('int8_unknown'))} |")
    summary = summarise(rows, args.old_label)
    if summary:
        lines += ["", "| mean over the data sets | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in summary.items()]
    return "\n".join(lines) + "\n"


def _unknown_cell(u: dict | None) -> str:
    if not isinstance(u, dict) or "in_class_rejected" not in u:
        return "-"
    return f"{u['in_class_rejected']:.1%} of {u['n']} ({Path(u['others']).parent.name}: {u['others_rejected']:.0%} caught)"


def summarise(rows: dict, old_label: str = "old recipe") -> dict[str, str]:
    """Means over the sets every arm finished, and the recipe's margins over the other arms."""
    acc = lambda r, k: (r.get(k) or {}).get("accuracy") if isinstance(r.get(k), dict) else None
    arms = {"probe": [], "recipe": [], "old": [], "int8": []}
    for r in rows.values():
        probe, rec, old = r.get("probe", {}).get("accuracy"), acc(r.get("recipe", {}), "keras"), acc(r.get("old", {}), "keras")
        if probe is None or rec is None:
            continue
        arms["probe"].append(probe)
        arms["recipe"].append(rec)
        arms["int8"].append(acc(r["recipe"], "int8") if acc(r["recipe"], "int8") is not None else float("nan"))
        arms["old"].append(old if old is not None else float("nan"))
    if not arms["recipe"]:
        return {}
    m = {k: float(np.mean(v)) for k, v in arms.items()}
    worst = min(np.array(arms["recipe"]) - np.array(arms["probe"]))
    out = {"sets": str(len(arms["recipe"])), "frozen features + tuned linear head": f"{m['probe']:.1%}",
           "recipe (Keras)": f"{m['recipe']:.1%}", "recipe (int8)": f"{m['int8']:.1%}",
           "recipe minus linear head, worst set": f"{worst * 100:+.1f} points"}
    if np.isfinite(m["old"]):
        out[f"{old_label} (Keras)"] = f"{m['old']:.1%}"
        out[f"recipe minus {old_label}"] = f"{(m['recipe'] - m['old']) * 100:+.1f} points"
    return out


def probe_in_child(train: Path, test: Path, model_name: str) -> dict:
    """``probe_arm`` in a process of its own: TensorFlow keeps what it allocated until its process
    ends (11 GB with Lite2), which beside the ``edgeclf train`` child got runs killed for memory."""
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import recipe_bench as r; "
            "print(json.dumps(r.probe_arm(*map(r.Path, sys.argv[2:4]), sys.argv[4])))")
    res = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent), str(train), str(test), model_name],
                         capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"probe arm failed on {train}:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    args = parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict] = {}
    sets = data_sets(args)
    tests = [test for _, test in sets.values()]
    for i, (name, (train, test)) in enumerate(sets.items()):
        print(f"== {name}", flush=True)
        rows[name] = {"probe": probe_in_child(train, test, args.model)}
        print("probe", rows[name]["probe"], flush=True)
        if args.probe_only:
            continue
        others = tests[(i + 1) % len(tests)] if len(tests) > 1 else None  # the next set's photos: none of these classes
        rows[name]["recipe"] = recipe_arm(name, train, test, args, others)
        print("recipe", rows[name]["recipe"], flush=True)
        if args.old:
            rows[name]["old"] = old_arm(name, train, test, args, others)
            print("old", rows[name]["old"], flush=True)
    prov = provenance()
    write_json(RESULTS / f"{args.name}.json", stamp_json({"model": args.model, "train_args": args.train_args,
                                                          "old": args.old, "old_args": args.old_args, "old_label": args.old_label, "sets": rows}, prov))
    md = to_markdown(rows, args)
    write_text(RESULTS / f"{args.name}.md", stamp_markdown(md, prov))
    print(md)


if __name__ == "__main__":
    main()
