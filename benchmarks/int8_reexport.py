"""int8 fidelity of this checkout's export against an earlier one, on runs recipe_bench.py trained:
each run (with and without the refit) is copied, exported again with ``export --int8``, and both
int8 models are judged on the set's held-out test photos, which neither export saw: accuracy,
top-1 agreement with fp32, and the unknown score's in-class rejections.

    python benchmarks/int8_reexport.py --sets ../datasets --work ../exp/rb2 --to ../exp/rb3

``--work`` holds recipe_bench.py's runs (SET/recipe-MODEL, and SET/old from ``--old``) with their
exports; ``--to`` receives the copies. Writes int8_reexport.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import recipe_bench as rb
from provenance import provenance, stamp_json, stamp_markdown

ROOT = Path(__file__).resolve().parents[1]
ARMS = {"recipe": "recipe-efficientnet_lite0", "without refit": "old"}


def on_test(export: Path, test: Path) -> dict:
    """The fp32 and int8 models of ``export`` on the test photos, and what the export chose."""
    import numpy as np
    import onnx

    from edgeclf.export.data import load_images
    from edgeclf.export.onnxrun import predict
    from edgeclf.image import resize_of, scan_class_folders
    from edgeclf.model.session import open_session
    meta = {p.key: p.value for p in onnx.load(str(export / "model.onnx")).metadata_props}
    size = (int(meta["input_height"]), int(meta["input_width"]))
    classes, files = scan_class_folders(test)
    paths = [p for c in classes for p in sorted(files[c])]
    labels = [i for i, c in enumerate(classes) for _ in files[c]]
    photos = load_images(paths, size, labels, resize=resize_of(meta.get("preprocessing")))
    fp32 = predict(open_session((export / "model.onnx").read_bytes()), photos.x).argmax(1)
    int8 = predict(open_session((export / "model.int8.onnx").read_bytes()), photos.x).argmax(1)
    q = json.loads((export / "export.json").read_text())["int8"]
    return {"n": int(len(photos.y)), "fp32": float(np.mean(fp32 == photos.y)), "int8": float(np.mean(int8 == photos.y)),
            "agreement": float(np.mean(int8 == fp32)), "method": q["method"], "reduce_range": q["reduce_range"],
            "guard_agreement": q["guard"]["top1_agreement"], "guard_n": q["guard"]["n"]}


def to_markdown(rows: dict) -> str:
    lines = ["# int8 against fp32 on held-out test photos: earlier export vs this checkout's", "",
             "Each run of the recipe benchmark exported twice (`export --int8`, default options); both int8 models on the "
             "set's test photos, which no export judged on. Agreement: top-1 the same as the run's fp32 ONNX model.", "",
             "| data set | run | test photos | fp32 | int8 before | int8 now | agreement before | agreement now | "
             "chosen now | guard's agreement now (photos) | test photos answered unknown now |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|---|---|"]
    for name, arms in rows.items():
        for arm, r in arms.items():
            b, a, u = r["before"], r["after"], r.get("unknown") or {}
            unknown = f"{u['in_class_rejected']:.1%}" if "in_class_rejected" in u else "-"
            lines.append(f"| {name} | {arm} | {a['n']} | {a['fp32']:.1%} | {b['int8']:.1%} | {a['int8']:.1%} | "
                         f"{b['agreement']:.1%} | {a['agreement']:.1%} | {a['method']}, {'7' if a['reduce_range'] else '8'}-bit | "
                         f"{a['guard_agreement']:.1%} ({a['guard_n']}) | {unknown} |")
    flat = [r for arms in rows.values() for r in arms.values()]
    if flat:
        mean = lambda key, when: sum(r[when][key] for r in flat) / len(flat)  # noqa: E731
        lines += ["", f"Mean over {len(flat)} runs: int8 accuracy {mean('int8', 'before'):.2%} before, "
                  f"{mean('int8', 'after'):.2%} now (fp32 {mean('fp32', 'after'):.2%}); agreement with fp32 "
                  f"{mean('agreement', 'before'):.2%} before, {mean('agreement', 'after'):.2%} now."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", type=Path, required=True, help="make_datasets.py's folder (SET/train, SET/test)")
    ap.add_argument("--work", type=Path, required=True, help="recipe_bench.py's --work, with its runs and exports")
    ap.add_argument("--to", type=Path, required=True, help="where the runs are copied and exported again")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    sets = rb.data_sets(argparse.Namespace(sets=args.sets, work=args.work, only=""))
    tests = [test for _, test in sets.values()]
    rows: dict[str, dict] = {}
    prov = provenance()
    for i, (name, (_, test)) in enumerate(sets.items()):
        others = tests[(i + 1) % len(tests)]  # the next set's photos, as recipe_bench.py judges the unknown score
        for arm, sub in ARMS.items():
            src, dst = args.work / name / sub, args.to / name / sub
            if not (src / "export" / "model.int8.onnx").is_file():
                continue
            if not (dst / "run.json").is_file():
                shutil.copytree(src, dst, ignore=shutil.ignore_patterns("export"))
            judged = rb.export_and_judge(dst, test, others)
            rows.setdefault(name, {})[arm] = {"before": on_test(src / "export", test), "after": on_test(dst / "export", test),
                                              "unknown": judged.get("int8_unknown"), "export_rc": judged["export_rc"]}
            print(name, arm, json.dumps(rows[name][arm]), flush=True)
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "int8_reexport.json").write_text(json.dumps(stamp_json({"sets": rows}, prov), indent=1))
            (args.out / "int8_reexport.md").write_text(stamp_markdown(to_markdown(rows), prov))


if __name__ == "__main__":
    main()
