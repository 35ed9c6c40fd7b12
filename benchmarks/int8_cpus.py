"""int8 on every CPU family: one trained run exported twice, with full-range (8-bit) weights and with
edgeclf's 7-bit weights (``export.quantize.REDUCE_RANGE``; 8-bit in depthwise convolutions), then classified by ``edgeclf predict
--json`` on this host and on emulated CPUs — x86 with AVX2 but no VNNI (qemu Haswell-v4),
Cortex-A72 and Cortex-A76 (``.ci/aarch64``) — and compared with this host.

    .ci/aarch64 setup
    python benchmarks/int8_cpus.py --run RUN_DIR [--out benchmarks/results]

Needs qemu-user-static and the train extra. Writes int8_cpus.json and int8_cpus.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from provenance import provenance, stamp_json, stamp_markdown

ROOT = Path(__file__).resolve().parents[1]
CPUS = ("cortex-a72", "cortex-a76", "haswell")


def predict(cpu: str, model: Path, images: Path) -> dict[str, dict]:
    args = ["predict", str(model), str(images), "--json"]
    env = {**os.environ}
    if cpu == "host":
        cmd = [sys.executable, "-m", "edgeclf.cli", *args]
    elif cpu == "haswell":
        cmd = ["qemu-x86_64-static", "-cpu", "Haswell-v4", sys.executable, "-m", "edgeclf.cli", *args]
    else:
        cmd = [str(ROOT / ".ci" / "aarch64"), "run", cpu, *args]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    return {r["source"]: r for r in map(json.loads, (line for line in out.splitlines() if line.startswith("{")))}


def to_markdown(result: dict) -> str:
    lines = [
        f"# int8 on every CPU family ({result['architecture']} {result['input_size'][0]}x{result['input_size'][1]}, "
        f"{result['rows'][0]['n']} validation images)", "",
        f"Exported on this host ({result['host']}); each CPU compared with it (`edgeclf predict --json`, "
        "probabilities at 6 decimals). Emulated with qemu 7.2 user mode; " + result["date"], "",
        "| int8 weights | CPU | top-1 agreement with host | largest probability difference | accuracy | guard's accuracy at export |",
        "|---|---|---:|---:|---:|---:|",
    ]
    names = {"cortex-a72": "Cortex-A72 (Pi 4, NEON)", "cortex-a76": "Cortex-A76 (Pi 5, dot product)",
             "haswell": "x86 AVX2, no VNNI (Haswell)"}
    for r in result["rows"]:
        lines.append(f"| {r['weights']} | {names[r['cpu']]} | {r['top1_agreement']:.1%} | {r['max_abs_diff']:.3g} | "
                     f"{r['accuracy']:.1%} | {r['accuracy_at_export']:.1%} |")
    lines += ["", "Reproduce: `.ci/aarch64 setup && python benchmarks/int8_cpus.py --run RUN_DIR`"]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a trained run folder (run.json with a validation split)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()

    from edgeclf.export import api, int8
    from edgeclf.sysinfo import cpu_family
    from edgeclf.train.run_record import read_run_record

    work = Path(tempfile.mkdtemp(prefix="edgeclf-int8-cpus-"))
    run = json.loads((args.run / "run.json").read_text())
    if read_run_record(args.run / "run.json").refitted:  # its validation photos are not held out
        raise SystemExit(f"{args.run}: the model was trained again on every photo (refit); train the run with --no-refit")
    images = work / "val"
    for p in map(Path, run["splits"]["val"]):
        (images / p.parent.name).mkdir(parents=True, exist_ok=True)
        (images / p.parent.name / p.name).symlink_to(p.resolve())
    rows = []
    candidates = int8._candidates
    for reduce_range in (False, True):
        # the export tries 7-bit weights first and keeps them when they pass (always, at --max-drop 1):
        # full-range weights have to be asked for
        int8._candidates = lambda tmp, images, judged, methods, _, *rest: candidates(  # noqa: E731
            tmp, images, judged, methods, reduce_range, *rest)
        report = api.export_model(args.run, work / f"rr{int(reduce_range)}", int8=True, max_drop=1.0, show_progress=False)
        assert report["int8"]["reduce_range"] is reduce_range, report["int8"]["reduce_range"]
        model = work / f"rr{int(reduce_range)}" / "model.int8.onnx"
        ref = predict("host", model, images)
        for cpu in CPUS:
            t = time.time()
            got = predict(cpu, model, images)
            rows.append({
                "weights": "7-bit, depthwise 8-bit (edgeclf)" if reduce_range else "8-bit (full range)", "cpu": cpu,
                "n": len(ref),
                "top1_agreement": sum(got[k]["index"] == ref[k]["index"] for k in ref) / len(ref),
                "max_abs_diff": max(abs(got[k]["probs"][c] - ref[k]["probs"][c]) for k in ref for c in ref[k]["probs"]),
                # top-1 class, as the export's guard counts it (predict's label may be "unknown")
                "accuracy": sum(Path(k).parent.name == max(got[k]["probs"], key=got[k]["probs"].get) for k in got) / len(got),
                "accuracy_at_export": report["int8"]["accuracy_int8"],
                "seconds": round(time.time() - t, 1),
            })
            print(rows[-1], flush=True)
    result = {"run": args.run.name, "architecture": run.get("architecture"), "input_size": run.get("input_size"),
              "host": cpu_family(), "rows": rows, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    args.out.mkdir(parents=True, exist_ok=True)
    prov = provenance()
    (args.out / "int8_cpus.json").write_text(json.dumps(stamp_json(result, prov), indent=2))
    (args.out / "int8_cpus.md").write_text(stamp_markdown(to_markdown(result), prov))


if __name__ == "__main__":
    main()
