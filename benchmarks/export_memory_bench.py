"""Peak memory of ``edgeclf export --int8`` (issue 26, item 16: under 2 GB for the default model),
stage by stage.

    python benchmarks/export_memory_bench.py --run RUN_DIR [--goal-mb 2048] [--out benchmarks/results]

The export runs as a user runs it, in a child process with stderr piped: its plain progress lines
(one as each stage starts) name the stage, the child's resident memory is sampled every 50 ms from
/proc/PID/status, and the peak is the kernel's high-water mark for the child (``wait4``'s
ru_maxrss, what ``/usr/bin/time -v`` reports). Linux only. Writes export_memory.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from provenance import provenance, stamp_json, stamp_markdown

from edgeclf.outfiles import write_json, write_text

ROOT = Path(__file__).resolve().parents[1]
#: Measured before this benchmark's change (commit 14c6336, same run and machine, ``/usr/bin/time -v``):
#: onnxruntime's Entropy and Percentile calibrators held every activation of the 200 images.
BEFORE = {"commit": "14c6336", "peak_rss_mb": 9705572 / 1024, "wall_s": 198,
          "peak_stage": "calibrating (entropy) / (percentile)"}


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None


def measure(run: Path, out: Path) -> dict:
    """Run the export; return its stages (start time, peak RSS while it ran), peak and wall time."""
    cmd = [sys.executable, "-m", "edgeclf.cli", "export", str(run), "--int8", "--out", str(out)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    started = time.monotonic()
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    stages = [{"stage": "start: TensorFlow, the Keras model", "at_s": 0.0, "peak_rss_mb": 0.0}]
    lines: list[str] = []

    def sample() -> None:
        while child.poll() is None:
            mb = rss_mb(child.pid)
            if mb is not None:
                stages[-1]["peak_rss_mb"] = max(stages[-1]["peak_rss_mb"], round(mb, 1))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    for line in child.stderr:
        lines.append(line.rstrip())
        if line.rstrip().endswith("..."):  # a stage starts (its "done" lines only close it)
            stages.append({"stage": line.strip().rstrip("."), "at_s": round(time.monotonic() - started, 1),
                           "peak_rss_mb": 0.0})
    _, status, usage = os.wait4(child.pid, 0)
    sampler.join()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit("export failed:\n" + "\n".join(lines[-20:]))
    return {"peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "wall_s": round(time.monotonic() - started, 1),
            "stages": stages, "stderr_lines": len(lines)}


def to_markdown(result: dict) -> str:
    m, goal = result["measured"], result["goal_mb"]
    lines = [
        "# Peak memory of `edgeclf export --int8`", "",
        f"Run: `{result['run']}` ({result['architecture']}, {result['input_size'][0]}x{result['input_size'][1]}); "
        "the export as a user runs it, stderr piped (its plain progress lines name each stage).", "",
        f"**Peak RSS {m['peak_rss_mb']:.0f} MB** (goal under {goal} MB: {'met' if m['peak_rss_mb'] < goal else 'NOT met'}); "
        f"wall {m['wall_s']:.0f} s. Before: {result['before']['peak_rss_mb']:.0f} MB, {result['before']['wall_s']} s "
        f"(commit {result['before']['commit']}; peak in {result['before']['peak_stage']}).", "",
        "| stage | starts at s | peak RSS while it runs MB |", "|---|---:|---:|",
    ]
    lines += [f"| {s['stage']} | {s['at_s']:.1f} | {s['peak_rss_mb']:.0f} |" for s in m["stages"]]
    lines += ["", "RSS sampled every 50 ms (a peak shorter than that may be missed in the table; the total is the "
              "kernel's high-water mark).", "",
              f"Reproduce: `python benchmarks/export_memory_bench.py --run {result['run']}`"]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a trained run folder (edgeclf train)")
    ap.add_argument("--goal-mb", type=int, default=2048)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    prov = provenance()
    run_json = json.loads((args.run / "run.json").read_text())
    with tempfile.TemporaryDirectory(prefix="edgeclf-export-mem-") as tmp:
        measured = measure(args.run, Path(tmp) / "export")
    result = {"run": str(args.run), "architecture": run_json.get("architecture"), "input_size": run_json["input_size"],
              "goal_mb": args.goal_mb, "measured": measured, "before": BEFORE}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "export_memory.json", stamp_json(result, prov))
    write_text(args.out / "export_memory.md", stamp_markdown(to_markdown(result), prov))
    print(to_markdown(result))


if __name__ == "__main__":
    main()
