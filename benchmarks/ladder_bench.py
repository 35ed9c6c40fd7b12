"""The EfficientNet-Lite ladder side by side: MACs, int8 latency here at 1 and 2 threads, the
latency expected on a Raspberry Pi 4 and 5, and each rung's accuracy on the recipe benchmark.

    python benchmarks/ladder_bench.py                      # after recipe_bench.py for each --model

Latency: each rung's int8 ONNX model (as ``--model auto`` measures it, train/budget.py: converted,
quantized as export does, median of 40 single-frame runs after a warm-up), measured afresh here
(no cache), the rungs interleaved round by round so a neighbour's burst hits them alike.
Accuracy: read from benchmarks/results/recipe-<model>.json (recipe_bench.py --model M --name
recipe-M); a rung without that file shows "-".
Pi estimates: MACs x a published int8 per-MAC figure for each board (PI_MS_PER_GMAC, with its
source); an estimate, not a measurement.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["EDGECLF_CACHE_DIR"] = "none"  # measured afresh, never read from a cache
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from provenance import provenance, stamp_json, stamp_markdown  # noqa: E402

from edgeclf.outfiles import write_json, write_text  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
ROUNDS = 5
# int8 milliseconds per 10^9 multiply-accumulates at 4 threads, from published measurements.
# Pi 4: MLPerf Inference v1.0 (open, Krai, rpi4 at 1.5 GHz, TFLite 2.4.1): EfficientNet-Lite0 int8
# 32.60 ms mean for 407 M MACs = 80 ms/GMAC (Lite2's preliminary run: 74). Pi 5: no published int8
# EfficientNet-Lite figure was found; the Pi 4 figure divided by the Pi 5's measured speed-up on
# the same family at 4 threads, TFLite/XNNPACK int8 EfficientDet-Lite0-2: 3.4-3.9x
# (NobuoTsukamoto/benchmarks, 2024) -> 80 / 3.8 = 21 ms/GMAC (ncnn's int8 MobileNetV1 on a Pi 5:
# 15-20 ms/GMAC, Tencent/ncnn benchmark/README.md).
PI_MS_PER_GMAC: dict[str, float] = {"Pi 4": 80.0, "Pi 5": 21.0}
PI_SOURCE = ("4 threads; Pi 4: MLPerf Inference v1.0 open/Krai, EfficientNet-Lite0 int8 on TFLite; Pi 5: that "
             "figure / 3.8, the Pi 5's speed-up on EfficientDet-Lite int8 (NobuoTsukamoto/benchmarks); "
             "see benchmarks/ladder_bench.py")


def main() -> None:
    import tempfile

    from edgeclf.train.budget import LADDER, build_int8, time_int8
    from edgeclf.train.models import ARCHITECTURES, count_macs

    rows, files = {}, {}
    tmp = Path(tempfile.mkdtemp(prefix="edgeclf-ladder-"))
    for name in LADDER:
        arch = ARCHITECTURES[name]
        model = arch.build(2, arch.default_size, weights=None)
        rows[name] = {"size": arch.default_size, "macs": count_macs(model), "params": int(model.count_params()),
                      "ms": {1: [], 2: []}}
        files[name] = build_int8(name, arch.default_size, tmp)
    for _ in range(ROUNDS):
        for threads in (1, 2):
            for name in LADDER:
                rows[name]["ms"][threads].append(time_int8(files[name], threads))
    shutil.rmtree(tmp, ignore_errors=True)
    accuracy = recipe_accuracy(list(rows))
    for name, r in rows.items():
        r["int8_ms"] = {str(t): float(np.median(v)) for t, v in r.pop("ms").items()}
        r["pi_ms"] = {pi: r["macs"] / 1e9 * f for pi, f in PI_MS_PER_GMAC.items()}
        r["accuracy"] = accuracy[name]
    prov = provenance()
    write_json(RESULTS / "ladder.json", stamp_json({"rows": rows, "pi_ms_per_gmac": PI_MS_PER_GMAC,
                                                    "pi_source": PI_SOURCE, "rounds": ROUNDS}, prov))
    md = to_markdown(rows)
    write_text(RESULTS / "ladder.md", stamp_markdown(md, prov))
    print(md)


def recipe_accuracy(names: list[str]) -> dict[str, dict | None]:
    """Each rung's mean accuracy (Keras and int8) over the recipe benchmark's data sets that every
    rung with a result finished, so the rungs are compared on the same photos."""
    per_rung = {}
    for name in names:
        path = RESULTS / f"recipe-{name}.json"
        if path.is_file():
            sets = json.loads(path.read_text())["sets"]
            per_rung[name] = {s: r["recipe"] for s, r in sets.items()
                              if isinstance(r.get("recipe", {}).get("keras"), dict)
                              and "accuracy" in r["recipe"]["keras"]}
    common = sorted(set.intersection(*(set(v) for v in per_rung.values()))) if per_rung else []
    out: dict[str, dict | None] = {name: None for name in names}
    for name, sets in per_rung.items():
        if common:
            out[name] = {"sets": common,
                         "keras": float(np.mean([sets[s]["keras"]["accuracy"] for s in common])),
                         "int8": float(np.mean([(sets[s].get("int8") or {}).get("accuracy", float("nan"))
                                                for s in common]))}
    return out


def to_markdown(rows: dict) -> str:
    pis = list(PI_MS_PER_GMAC)
    head = ["model", "input", "MACs", "int8 ms here, 1 thread", "int8 ms here, 2 threads",
            *[f"{pi} int8 ms (estimate)" for pi in pis], "recipe benchmark accuracy (Keras / int8)"]
    lines = ["# The EfficientNet-Lite ladder", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in rows.items():
        acc = r["accuracy"]
        acc_s = f"{acc['keras']:.1%} / {acc['int8']:.1%} ({len(acc['sets'])} sets)" if acc else "-"
        lines.append(f"| {name} | {r['size']}x{r['size']} | {r['macs'] / 1e6:.0f} M | {r['int8_ms']['1']:.1f} | "
                     f"{r['int8_ms']['2']:.1f} | " + "".join(f"{r['pi_ms'][pi]:.0f} | " for pi in pis) + f"{acc_s} |")
    sets = next((r["accuracy"]["sets"] for r in rows.values() if r["accuracy"]), None)
    if sets:
        lines += ["", f"Accuracy: the mean over the data sets every rung with a recipe result finished "
                      f"({', '.join(sets)}), on each set's held-out photos (recipe_bench.py)."]
    if PI_SOURCE:
        lines += ["", f"Pi estimates: MACs x {', '.join(f'{pi} {f:g} ms/GMAC' for pi, f in PI_MS_PER_GMAC.items())} "
                      f"({PI_SOURCE})."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
