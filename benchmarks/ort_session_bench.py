"""Which onnxruntime session settings give the int8 model a low median AND a short tail, idle
and next to a busy co-tenant? Evidence for the settings ``edgeclf.model.classifier`` uses.

    python benchmarks/ort_session_bench.py MODEL.int8.onnx [--rounds 12] [--turn 0.3]
        [--tflite MODEL.int8.tflite | --run RUN_DIR]

Every variant is a real ``onnxruntime.InferenceSession`` on the same model; batch-1 calls on the
same frames, variants taking turns inside every round (order reversed on odd rounds), and each
round timed twice: with the co-tenant of ``compare.py`` paused (idle) and running (one core
decoding a video). Reports p50, p99, p99/p50 and batch-32 frames/s per variant and condition,
LiteRT int8 on all cores and on one beside them, and where the second core pays: onnxruntime's
per-node profile on 1 thread against all cores, by op type and by feature-map size.
Writes benchmarks/results/ort_session.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

import numpy as np
import onnxruntime as ort
from compare_runners import Runner, convert_litert, keras_runners, litert_calibration, litert_runner, load_run
from compare_timing import interleaved_timings
from cotenant import CoTenant, cotenant_video
from provenance import provenance, stamp_json, stamp_markdown

from edgeclf import sysinfo
from edgeclf.model.classifier import Classifier
from edgeclf.model.session import open_session
from edgeclf.outfiles import write_json, write_text


def session(path: Path, threads: int, config: dict[str, str]) -> ort.InferenceSession:
    """edgeclf's session with exactly ``config`` (spin=True: no spinning entry of edgeclf's own)."""
    return open_session(path, threads, spin=True, config=config)


def variant_configs(cores: int) -> dict[str, tuple[int, dict[str, str]]]:
    """label -> (intra-op threads, session config entries)."""
    n = cores
    return {
        f"{n} threads, spinning (onnxruntime default)": (n, {}),
        f"{n} threads, no spinning": (n, {"session.intra_op.allow_spinning": "0"}),
        f"{n} threads, spinning stops after each run": (n, {"session.force_spinning_stop": "1"}),
        f"{n} threads, spin at most 100 us": (n, {"session.intra_op.spin_duration_us": "100"}),
        f"{n} threads, spin <= 100 us, stops after run": (n, {"session.intra_op.spin_duration_us": "100",
                                                             "session.force_spinning_stop": "1"}),
        f"{n} threads, dynamic_block_base 4": (n, {"session.dynamic_block_base": "4"}),
        f"{n} threads, no spinning, dynamic_block_base 4": (n, {"session.intra_op.allow_spinning": "0",
                                                                "session.dynamic_block_base": "4"}),
        f"{n} threads, no spinning, dynamic_block_base 2": (n, {"session.intra_op.allow_spinning": "0",
                                                                "session.dynamic_block_base": "2"}),
        "1 thread": (1, {}),
    }


def litert_int8_of_run(run_dir: Path, out_dir: Path, calib: int = 100) -> Path:
    """The run's Keras model as a LiteRT int8 file in ``out_dir``, converted and calibrated as
    compare.py does (``calib`` images drawn from the run's training split)."""
    run = load_run(run_dir)
    _, model = keras_runners(run_dir, sysinfo.cpu_cores())
    images, _ = litert_calibration(run, None, calib, np.random.default_rng(0))
    return convert_litert(model, images, out_dir)[1]


def node_times(path: Path, size: tuple[int, int], threads: int, runs: int = 300) -> list[dict]:
    """Each node's median kernel time over ``runs`` batch-1 calls (the first 50 dropped), in
    onnxruntime's own profile of the optimised graph (what really runs: QLinearConv, ...), with
    its op type and output shape. Workers spin within a run, as the adaptive arms do."""
    with tempfile.TemporaryDirectory() as tmp:
        s = open_session(path, threads=threads, spin=True, config={"session.force_spinning_stop": "1"},
                         enable_profiling=True, profile_file_prefix=str(Path(tmp) / "p"))
        x = np.random.default_rng(0).integers(0, 256, (1, *size, 3), dtype=np.uint8)
        for _ in range(runs):
            s.run(None, {s.get_inputs()[0].name: x})
        events = json.loads(Path(s.end_profiling()).read_text())
    times: dict[str, list[float]] = {}
    info: dict[str, tuple[str, list]] = {}
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            name = e["name"].removesuffix("_kernel_time")
            times.setdefault(name, []).append(e["dur"])
            shape = next(iter((e["args"].get("output_type_shape") or [{}])[0].values()), [])
            info.setdefault(name, (e["args"].get("op_name", "?"), shape))
    return [{"node": k, "op": info[k][0], "output": info[k][1], "us": float(np.median(v[50:] or v))}
            for k, v in times.items()]


def thread_scaling(path: Path, size: tuple[int, int], cores: int, repeats: int = 5, runs: int = 300) -> dict:
    """Per-node time on 1 thread and on all cores, summed by op type and by the size of the
    feature map a node writes: where the second core pays and where it does not. Each node's
    figure is its median over ``repeats`` profiles of each, taken in turns (on this shared machine
    one profile's total moves by 20% from one minute to the next)."""
    ones, manys = [], []
    for _ in range(repeats):
        ones.append(node_times(path, size, 1, runs))
        manys.append({r["node"]: r["us"] for r in node_times(path, size, cores, runs)})
    by_node = [{r["node"]: r["us"] for r in o} for o in ones]
    one = [{**r, "us": float(np.median([b.get(r["node"], 0.0) for b in by_node]))} for r in ones[0]]
    many = {k: float(np.median([m.get(k, 0.0) for m in manys])) for k in manys[0]}

    def group(key) -> list[dict]:
        out: dict[str, dict] = {}
        for r in one:
            g = out.setdefault(key(r), {"group": key(r), "nodes": 0, "us_1": 0.0, "us_n": 0.0})
            g["nodes"] += 1
            g["us_1"] += r["us"]
            g["us_n"] += many.get(r["node"], 0.0)
        rows = sorted(out.values(), key=lambda g: -g["us_1"])
        for g in rows:  # the speed-up of the figures shown, so the table agrees with itself
            g["us_1"], g["us_n"] = round(g["us_1"], 1), round(g["us_n"], 1)
            g["speedup"] = round(g["us_1"] / g["us_n"], 2) if g["us_n"] else None
        return rows

    def fmap(r: dict) -> str:  # onnxruntime runs the int8 graph channels-last: [N, H, W, C]
        o = r["output"]
        body = r["op"] in ("QLinearConv", "QLinearAdd") and len(o) == 4
        return f"{o[1]}x{o[2]}" if body else "head (the nodes after the last convolution)"

    total_1, total_n = round(sum(r["us"] for r in one), 1), round(sum(many.values()), 1)
    return {"threads": cores, "repeats": repeats, "runs_timed": max(0, runs - 50) or runs, "nodes": len(one),
            "us_1": total_1, "us_n": total_n,
            "speedup": round(total_1 / total_n, 2), "by_op": group(lambda r: r["op"]), "by_feature_map": group(fmap)}


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("--tflite", type=Path, help="the LiteRT int8 file of the same model, timed alongside")
    ap.add_argument("--run", type=Path, help="or the run folder: its Keras model is converted to LiteRT int8 as compare.py does")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--turn", type=float, default=0.3)
    ap.add_argument("--settle", type=float, default=1.0,
                    help="seconds each turn first runs untimed in its condition (compare.py's --settle): the "
                         "shipped classifier adapts to the load, and is timed in it, not while it changes")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--name", default="ort_session")
    return ap.parse_args()


def make_runners(args: argparse.Namespace, clf: Classifier, cores: int, tmp: Path) -> list[Runner]:
    """The shipped classifier, every fixed session variant, and LiteRT int8 when there is one (converted into ``tmp``)."""
    name = clf.input_name
    runners = [Runner("edgeclf Classifier (as shipped)", "", args.model, clf.predict_arrays)]
    for label, (threads, config) in variant_configs(cores).items():
        s = session(args.model, threads, config)
        runners.append(Runner(label, "", args.model, (lambda s: lambda x: s.run(None, {name: x})[0])(s)))
    tflite = args.tflite or (litert_int8_of_run(args.run, tmp) if args.run else None)
    if tflite:
        runners.append(litert_runner(f"LiteRT int8 ({cores} threads)", tflite, cores))
        if cores > 1:
            runners.append(litert_runner("LiteRT int8 (1 thread)", tflite, 1))
    return runners


def time_idle_and_loaded(runners: list[Runner], size: tuple[int, int], args: argparse.Namespace) -> tuple[dict, dict]:
    """compare.py's interleaved timings, idle and beside the co-tenant; and what the co-tenant used."""
    rng = np.random.default_rng(0)
    h, w = size
    frames = rng.integers(0, 256, (64, h, w, 3), dtype=np.uint8)
    batch = rng.integers(0, 256, (32, h, w, 3), dtype=np.uint8)
    for r in runners:  # warm-up
        for _ in range(10):
            r.one(frames[:1])
        r.predict(batch)
    with tempfile.TemporaryDirectory() as tmp:
        tenant = CoTenant(cotenant_video(Path(tmp) / "cotenant.mp4"))
        try:
            # compare.py's own interleaving: variants and idle/loaded conditions take turns every round
            timings = interleaved_timings(runners, frames, batch, args.rounds, args.turn, 10**6,
                                          lambda m: print(m, file=sys.stderr, flush=True),
                                          {"idle": tenant.idle, "loaded": tenant.load}, args.settle)
        finally:
            info = tenant.close()
    return timings, info


def timing_rows(timings: dict, runners: list[Runner]) -> list[dict]:
    rows = []
    for c, (per, bat) in timings.items():
        for k in (r.name for r in runners):
            a = np.asarray(per[k]) * 1e3
            p50, p99 = float(np.percentile(a, 50)), float(np.percentile(a, 99))
            rows.append({"condition": c, "variant": k, "p50_ms": round(p50, 3), "p99_ms": round(p99, 3),
                         "p99_over_p50": round(p99 / p50, 2), "frames": len(a),
                         "batch32_fps": round(32 / float(np.median(bat[k])), 1)})
    return rows


def to_markdown(report: dict, args: argparse.Namespace) -> str:
    cores, info, scaling = report["cores"], report["cotenant"], report["thread_scaling"]
    lines = [f"# onnxruntime session settings, int8 `{args.model.name}`, idle and next to a co-tenant", "",
             f"{report['machine']['cpu']}, {cores} cores usable, onnxruntime {ort.__version__}; {args.rounds} rounds x "
             f"{args.turn} s turns per variant and condition, interleaved, each after {args.settle:g}-{1.5 * args.settle:g} s untimed of single frames and as long of batches in its condition; co-tenant used {100 * (info['core_share'] or 0):.0f}% "
             f"of a core while running; load average at the end {report['load_average_at_end'][0]:.1f}.", "",
             "| condition | variant | p50 ms | p99 ms | p99/p50 | batch-32 frames/s | frames timed |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in report["rows"]:
        lines.append(f"| {r['condition']} | {r['variant']} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['p99_over_p50']:.2f} | "
                     f"{r['batch32_fps']:.0f} | {r['frames']} |")
    lines += ["", f"Where the time goes, and where the second core pays: onnxruntime's own profile, median kernel "
              f"time per node over {scaling['runs_timed']} batch-1 runs, 1 thread against {cores} (workers spinning within a run), "
              f"median of {scaling['repeats']} profiles of each taken in turns, summed. {scaling['nodes']} nodes: {scaling['us_1'] / 1e3:.2f} ms on 1 thread, {scaling['us_n'] / 1e3:.2f} ms "
              f"on {cores}, {scaling['speedup']:.2f}x. The profile's own cost per node inflates small nodes; "
              "compare the ratios, not the totals with the timings above.", ""]
    for title, key in (("by op type", "by_op"), ("by the feature map a node writes (height x width)", "by_feature_map")):
        lines += [f"{title[0].upper()}{title[1:]}:", "", f"| {'op' if key == 'by_op' else 'feature map'} | nodes | "
                  f"us on 1 thread | us on {cores} | speed-up |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {g['group']} | {g['nodes']} | {g['us_1']:.0f} | {g['us_n']:.0f} | "
                  + (f"{g['speedup']:.2f}x" if g["speedup"] is not None else "-") + " |" for g in scaling[key]]
        lines.append("")
    lines += ["", f"Reproduce: `{report['command']}`", ""]
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    cores = sysinfo.cpu_cores()
    clf = Classifier(args.model)  # edgeclf's own session, as `edgeclf predict`/`bench` open it
    with tempfile.TemporaryDirectory(prefix="edgeclf-ort-session-") as tflite_tmp:
        runners = make_runners(args, clf, cores, Path(tflite_tmp))
        timings, info = time_idle_and_loaded(runners, clf.size, args)
    rows = timing_rows(timings, runners)
    scaling = thread_scaling(args.model, clf.size, cores)
    report = {"model": args.model.name, "thread_scaling": scaling, "cores": cores, "machine": sysinfo.describe(), "onnxruntime": ort.__version__,
              "rounds": args.rounds, "turn_s": args.turn, "settle_s": args.settle, "cotenant": info, "rows": rows,
              "load_average_at_end": os.getloadavg(),
              "command": "python benchmarks/ort_session_bench.py " + " ".join(sys.argv[1:])}
    md = to_markdown(report, args)
    args.out.mkdir(parents=True, exist_ok=True)
    prov = provenance()
    write_json(args.out / f"{args.name}.json", stamp_json(report, prov))
    write_text(args.out / f"{args.name}.md", stamp_markdown(md, prov))
    print(md)


if __name__ == "__main__":
    main()
