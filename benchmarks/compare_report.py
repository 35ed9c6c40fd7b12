"""compare.py's report: one row per format, the goals of issues 5 and 14 and of edgeclf's default
path against its peers, the markdown and the chart."""

from __future__ import annotations

import numpy as np
from compare_runners import LABELS, REFERENCE, Runner, label, split_key

from edgeclf.bench import charts as cvplot
from edgeclf.bench.engines import MARGIN, choose

#: edgeclf's int8 paths -> the engine ``edgeclf bench --engines`` knows each by
EDGECLF_INT8 = {"onnx_int8": "onnxruntime", "edgeclf_litert_int8": "litert", "edgeclf_openvino_int8": "openvino"}
#: what edgeclf itself makes and runs: none of these is its own peer
EDGECLF_MADE = {"keras_predict", "keras_call", "onnx_fp32", *EDGECLF_INT8}
#: a peer counts only at equal accuracy: within this many points of edgeclf's default
PEER_POINTS = 0.5


def pct(a: np.ndarray, q: float) -> float:
    return float(np.percentile(a, q))


def summarise(runners: list[Runner], per_frame: dict, per_batch: dict, batch_n: int, acc: dict, mem: dict,
              errors: dict, first: dict | None = None) -> list[dict]:
    """One row per runner (ratios against ONNX int8 on the same thread-count setting), then one
    per format that could not run, with the reason. ``mem`` and ``first``: peak RSS and
    first-inference ms of each runner's fresh process (``compare_timing.probe_format``)."""
    first = first or {}
    rows = []
    for r in runners:
        ref = _reference(r.name)
        f = np.asarray(per_frame[r.name]) * 1e3
        fps = batch_n / float(np.median(per_batch[r.name]))
        ref_ms = float(np.median(per_frame[ref])) * 1e3 if ref in per_frame else None
        ref_fps = batch_n / float(np.median(per_batch[ref])) if ref in per_batch else None
        size = r.file_bytes or (r.file.stat().st_size if r.file else None)
        rows.append({
            "format": r.fmt, "key": r.name, "label": label(r.name), "runtime": r.runtime,
            "threads": r.threads if r.threads is not None else "adaptive",
            "file": r.file.name if r.file else None, "file_bytes": size,
            "p50_ms": pct(f, 50), "p99_ms": pct(f, 99), "mean_ms": float(f.mean()), "frames_timed": int(len(f)),
            "vs_onnx_int8": float(np.median(f) / ref_ms) if ref_ms else None,
            "batch_fps": fps, "batch_fps_vs_onnx_int8": fps / ref_fps if ref_fps else None,
            "accuracy": acc.get(r.name), "peak_rss_mb": mem.get(r.name),
            "first_inference_ms": first.get(r.name), "notes": r.notes,
        })
    for key, err in errors.items():
        fmt, t = split_key(key)
        rows.append({"format": fmt, "key": key, "label": label(key), "threads": t, "error": err})
    return rows


def _reference(key: str) -> str:
    """ONNX int8's runner on the same thread-count setting as ``key``."""
    t = split_key(key)[1]
    return REFERENCE if t is None else f"{REFERENCE}@{t}"


def goals_by_threads(rows: list[dict], loaded: list[dict] | None, settings: list[int | None]) -> list[dict]:
    """``check_goals`` on each thread-count setting's rows, the setting named in each goal when
    there are several."""
    if len(settings) == 1:
        return check_goals(rows, loaded)
    out = []
    for t in settings:
        mine = [r for r in rows if split_key(r["key"])[1] == t]
        mine_loaded = [r for r in loaded if split_key(r["key"])[1] == t] if loaded is not None else None
        out += [{**g, "goal": f"{g['goal']} [{t} thread{'s' if t != 1 else ''}]", "threads": t}
                for g in check_goals(mine, mine_loaded)]
    return out


def _by_format(rows: list[dict]) -> dict[str, dict]:
    """The rows that ran, by format."""
    return {r["format"]: r for r in rows if "error" not in r}


def check_goals(rows: list[dict], loaded: list[dict] | None = None) -> list[dict]:
    by = _by_format(rows)
    goals = tail_goals(rows, "idle")

    def goal(text: str, a: str, b: str, need: float, how: str) -> None:
        if a not in by or b not in by:
            goals.append({"goal": text, "met": None, "figure": f"not measured ({a if a not in by else b} unavailable)"})
            return
        ratio = by[b]["p50_ms"] / by[a]["p50_ms"]
        goals.append({"goal": text, "met": bool(ratio >= need), "ratio": ratio,
                      "figure": f"{by[a]['p50_ms']:.3f} ms vs {by[b]['p50_ms']:.3f} ms p50 per frame: {how.format(ratio)}"})

    goal("ONNX int8 at least as fast per frame as LiteRT int8", "onnx_int8", "litert_int8", 1.0,
         "LiteRT int8 takes {:.2f}x the ONNX int8 time")
    goal("ONNX int8 at least 100x faster per frame than Keras model.predict", "onnx_int8", "keras_predict", 100.0,
         "{:.0f}x faster")
    goal("ONNX int8 at least 2x faster per frame than ONNX fp32", "onnx_int8", "onnx_fp32", 2.0, "{:.2f}x faster")
    accs = {k: v["accuracy"] for k, v in by.items() if v.get("accuracy") is not None}
    edgeclf = {k: v for k, v in accs.items() if k in EDGECLF_MADE}
    own = ("Keras, ONNX fp32, ONNX int8" + (", its LiteRT int8" if "edgeclf_litert_int8" in edgeclf else "")
           + (", its OpenVINO engine" if "edgeclf_openvino_int8" in edgeclf else ""))
    for text, group in (("no accuracy difference larger than 1 point between formats", accs),
                        (f"(edgeclf's own: {own}) within 1 point", edgeclf)):
        if not group:
            continue
        hi, lo = max(group, key=group.get), min(group, key=group.get)
        spread = round(100 * (group[hi] - group[lo]), 6)  # 80.5% - 79.5% is 1.0000000000000009 in floats
        figure = (f"{spread:.2f} points between {hi} ({100 * group[hi]:.2f}%) and {lo} ({100 * group[lo]:.2f}%)" if spread
                  else f"every one scores {100 * group[hi]:.2f}%")
        goals.append({"goal": text, "met": bool(spread <= 1.0), "spread_points": spread, "figure": figure})
    goals.append(default_path_goal(rows, "idle"))
    if loaded is not None:
        idle_default = default_path(rows)
        goals += loaded_goals(loaded, idle_default["format"] if idle_default else None)
    return goals


def tail_goals(rows: list[dict], condition: str) -> list[dict]:
    """ONNX int8's p99 within 2x its own p50 (a steady frame rate, not just a fast median)."""
    by = {r["format"]: r for r in rows if "error" not in r}
    if "onnx_int8" not in by:
        return [{"goal": f"ONNX int8 p99 <= 2x its p50 ({condition})", "met": None, "figure": "not measured"}]
    r = by["onnx_int8"]
    ratio = r["p99_ms"] / r["p50_ms"]
    return [{"goal": f"ONNX int8 p99 <= 2x its p50 ({condition})", "met": bool(ratio <= 2.0), "ratio": ratio,
             "figure": f"p99 {r['p99_ms']:.3f} ms = {ratio:.2f}x p50 {r['p50_ms']:.3f} ms"}]


def loaded_goals(rows: list[dict], idle_default: str | None = None) -> list[dict]:
    """Under the co-tenant: the tail, the median and batch throughput against LiteRT int8, and
    edgeclf's default path against its peers (``idle_default``: the path chosen on the idle rows)."""
    by = _by_format(rows)
    goals = tail_goals(rows, "co-tenant")
    if "onnx_int8" in by and "litert_int8" in by:
        o, t = by["onnx_int8"], by["litert_int8"]
        goals.append({"goal": "ONNX int8 p50 <= LiteRT int8 p50 (co-tenant)", "met": bool(o["p50_ms"] <= t["p50_ms"]),
                      "ratio": t["p50_ms"] / o["p50_ms"],
                      "figure": f"{o['p50_ms']:.3f} ms vs {t['p50_ms']:.3f} ms p50 per frame"})
        goals.append({"goal": "ONNX int8 batch throughput >= LiteRT int8 (co-tenant)", "met": bool(o["batch_fps"] >= t["batch_fps"]),
                      "ratio": o["batch_fps"] / t["batch_fps"],
                      "figure": f"{o['batch_fps']:.0f} vs {t['batch_fps']:.0f} frames/s"})
    goals.append(default_path_goal(rows, "co-tenant", idle_default))
    return goals


def default_path(rows: list[dict]) -> dict | None:
    """The row of edgeclf's default among its int8 paths that ran: the one ``edgeclf bench
    --engines`` would record from these figures (its own ``choose``: the fastest at p50, but
    onnxruntime unless LiteRT or OpenVINO is ``MARGIN`` faster, and of other ways within ``MARGIN``
    of the fastest the shortest p99). None when none ran."""
    by = _by_format(rows)
    ways = [{"engine": engine, "file": fmt, "threads": by[fmt].get("threads"), "label": fmt,
             "latency_ms": {"p50": by[fmt]["p50_ms"], "p99": by[fmt]["p99_ms"]}}
            for fmt, engine in EDGECLF_INT8.items() if fmt in by]
    return by[choose(ways)["label"]] if ways else None


def peers_at_equal_accuracy(rows: list[dict], accuracy: float) -> list[dict]:
    """The int8 rows edgeclf does not make whose accuracy is within ``PEER_POINTS`` of ``accuracy``."""
    return [r for f, r in _by_format(rows).items() if "int8" in f and f not in EDGECLF_MADE
            and r.get("accuracy") is not None and round(100 * abs(r["accuracy"] - accuracy), 6) <= PEER_POINTS]


def default_path_goal(rows: list[dict], condition: str, idle_default: str | None = None) -> dict:
    """edgeclf's default path (``default_path``) no slower at p50 and at p99 than the fastest peer
    at equal accuracy (``peers_at_equal_accuracy``; the fastest at p50 and at p99 may differ)."""
    text = (f"edgeclf's default path (ONNX int8, its LiteRT int8 or its OpenVINO engine, chosen by bench --engines' "
            f"rule: {MARGIN:.0%} margin at p50, the shortest p99 among ways within it) "
            f"p50 and p99 no slower than the fastest int8 peer within {PEER_POINTS} point ({condition})")
    d = default_path(rows)
    if d is None or d.get("accuracy") is None:
        return {"goal": text, "met": None, "figure": "not measured (none of edgeclf's int8 paths ran and scored)"}
    name = LABELS.get(d["format"], d["format"])
    near = peers_at_equal_accuracy(rows, d["accuracy"])
    if not near:
        return {"goal": text, "met": None, "default": d["format"],
                "figure": f"not measured (no peer int8 row within {PEER_POINTS} point of {name}'s {100 * d['accuracy']:.2f}%)"}
    p50, p99 = min(near, key=lambda r: r["p50_ms"]), min(near, key=lambda r: r["p99_ms"])
    r50, r99 = d["p50_ms"] / p50["p50_ms"], d["p99_ms"] / p99["p99_ms"]
    figure = (f"default {name}: p50 {d['p50_ms']:.3f} ms = {r50:.3f}x {LABELS.get(p50['format'], p50['format'])}'s "
              f"{p50['p50_ms']:.3f} ms; p99 {d['p99_ms']:.3f} ms = {r99:.3f}x {LABELS.get(p99['format'], p99['format'])}'s "
              f"{p99['p99_ms']:.3f} ms ({len(near)} peer(s) within {PEER_POINTS} point)")
    if idle_default is not None and idle_default != d["format"]:
        figure += f"; chosen on the idle figures, bench --engines would run {LABELS.get(idle_default, idle_default)}"
    return {"goal": text, "met": bool(d["p50_ms"] <= p50["p50_ms"] and d["p99_ms"] <= p99["p99_ms"]),
            "ratio_p50": r50, "ratio_p99": r99, "default": d["format"], "peer_p50": p50["format"],
            "peer_p99": p99["format"], "figure": figure}


def markdown(report: dict) -> str:
    m = report["machine"]
    s = report["settings"]
    best = report["model"].get("best")
    lines = [
        "# edgeclf: the same model through every runtime", "",
        f"- Machine: {m['cpu']}, {m['cores']} cores ({m['arch']}, {m['os']}), Python {m['python']}; "
        f"measured float32 matmul peak {report['core_peak_gflops']:.0f} GFLOP/s per core",
        f"- Model: `{report['model']['run']}` ({report['model']['architecture']}, {report['model']['input_size'][0]}x"
        f"{report['model']['input_size'][1]}, {report['model']['classes']} classes, "
        f"{report['model']['macs'] / 1e6 if report['model']['macs'] else float('nan'):.1f} M MACs per frame"
        + (f"; trained to {100 * best['val_accuracy']:.1f}% val accuracy at epoch {best['epoch']}" if best else "") + ")",
        f"- Images: {report['data']['images']} labelled images ({report['data']['source']})",
        f"- Settings: {', '.join(map(str, s['threads']))} thread(s) for every runtime"
        + (" but edgeclf's, which adapts (its default: all cores while free, one when they are not)"
           if s.get("edgeclf_threads") == "adaptive" else "")
        + f"; {s['rounds']} interleaved rounds of ~{s['turn_s']} s turns per format"
        + (f", each after {s['settle_s']:g}-{1.5 * s['settle_s']:g} s untimed of single frames and as long of batches in its condition"
           if s.get("settle_s") else "")
        + f"; batch throughput on batches of {s['batch']}; medians reported",
        f"- Date: {report['date']}", "",
    ]
    if report.get("cotenant"):
        c = report["cotenant"]
        lines += [f"- Co-tenant: {c['what']}; it used {100 * (c['core_share'] or 0):.0f}% of a core while running "
                  f"(idle and loaded turns alternate inside every round)", "", "## Idle", ""]
    lines += results_table(report["results"])
    if report.get("results_loaded"):
        lines += ["", "## Under the co-tenant", ""] + results_table(report["results_loaded"])
    return _markdown_tail(report, lines)


def results_table(results: list[dict]) -> list[str]:
    lines = [
        ("| format | runtime | threads | file | p50 ms/frame | p99 ms/frame | x ONNX int8 time | batch frames/s | accuracy "
         "| peak RSS MiB | first inference ms |"),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if "error" in r:
            reason = r["error"] if r["error"].startswith("not available") else f"unavailable: {r['error']}"
            lines.append(f"| {r['label']} | {reason.replace('|', '/')} | {r['threads'] or ''} | | | | | | | | |")
            continue
        size = f"{r['file_bytes'] / 1e6:.2f} MB" if r["file_bytes"] else ""
        acc = f"{100 * r['accuracy']:.2f}%" if r["accuracy"] is not None else "n/a"
        mem = f"{r['peak_rss_mb']:.0f}" if r["peak_rss_mb"] else "n/a"
        vs = f"{r['vs_onnx_int8']:.2f}" if r["vs_onnx_int8"] else "n/a"
        first = f"{r['first_inference_ms']:.0f}" if r.get("first_inference_ms") else "n/a"  # rows from older reports lack it
        lines.append(f"| {r['label']} | {r['runtime']} | {r['threads']} | {size} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {vs} | "
                     f"{r['batch_fps']:.0f} | {acc} | {mem} | {first} |")
    return lines


def _markdown_tail(report: dict, lines: list[str]) -> str:
    base = report.get("baseline_rss_mb")
    lines += ["", f"Peak RSS: a fresh process that imports only that runtime, loads the model and runs 20 frames "
              f"(Python + numpy alone: {base:.0f} MiB)." if base else "", "",
              ("First inference ms: in that same fresh process, from just before the runtime's import to the end of "
               "its first result: the import, loading the model and one frame, Python and numpy already started "
               "(the model and libraries were just read, so the disk cache is warm); measured once, on the idle "
               "machine, and shown in both tables.") if base else "", "",
              "x ONNX int8 time: median per-frame time divided by ONNX int8's (above 1 = slower than ONNX int8).", "",
              "## Goals", ""]
    for g in report["goals"]:
        mark = {True: "MET", False: "MISSED", None: "NOT MEASURED"}[g["met"]]
        lines.append(f"- **{mark}**: {g['goal']}: {g['figure']}")
    notes = list(dict.fromkeys(f"- {LABELS.get(r['format'], r['format'])}: {n}"  # once, not once per thread count
                               for r in report["results"] for n in r.get("notes", [])))
    if notes or report.get("notes"):
        lines += ["", "## Notes", "", *notes, *[f"- {n}" for n in report.get("notes", [])]]
    lines += ["", f"Reproduce: `{report['command']}`", ""]
    return "\n".join(lines)


def chart(report: dict) -> np.ndarray:
    rows = [r for r in report["results"] if "error" not in r]
    labels = [r["label"] for r in rows]
    sub = f"{report['machine']['cpu']}, {', '.join(map(str, report['settings']['threads']))} thread(s); {report['model']['architecture']} " \
          f"{report['model']['input_size'][0]}px"
    return cvplot.stack([
        cvplot.bar_chart("Latency per frame (batch 1), lower is better", labels,
                         {"p50": [r["p50_ms"] for r in rows], "p99": [r["p99_ms"] for r in rows]}, "ms", sub, log=True),
        cvplot.bar_chart(f"Throughput, batches of {report['settings']['batch']}, higher is better", labels,
                         {"frames/s": [r["batch_fps"] for r in rows]}, "frames per second", log=True),
        cvplot.bar_chart("Accuracy on the same images", labels,
                         {"accuracy %": [100 * r["accuracy"] if r["accuracy"] is not None else None for r in rows]}, "%"),
        cvplot.bar_chart("Peak memory of a process running only this format", labels,
                         {"MiB": [r["peak_rss_mb"] for r in rows]}, "MiB"),
        cvplot.bar_chart("First inference in a fresh process (import + load + one frame), lower is better", labels,
                         {"ms": [r.get("first_inference_ms") for r in rows]}, "ms", log=True),
    ])
