"""``edgeclf bench``'s report as people read it: rich tables and lines on the terminal, and a PNG of
bar charts (``--plot``). The measuring is ``edgeclf.bench.run``'s."""

from __future__ import annotations

import os
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgeclf.bench import charts as cvplot
from edgeclf.errors import safe_text


def _f(v: float | None, fmt: str = ".3f") -> str:
    return "n/a" if v is None else format(v, fmt)


def _thr(r: dict) -> str:
    """Threads as shown: "2", or "2 (adaptive)" when the classifier chose them (most calls ran on 2)."""
    return f"{r['threads']} (adaptive)" if r.get("adaptive") else str(r["threads"])


def _ops(report: dict) -> str:
    """FLOP for float models; OP for int8 ones (integer multiply-adds are not floating point)."""
    return "OP" if report.get("peak_precision") == "int8" else "FLOP"


def render(report: dict, console: Console) -> None:
    """The readable report: one table of latency/throughput, one of stages, and the context."""
    console.print(_results_table(report))
    if "stages_ms" in report:
        _print_end_to_end(report, console)
    for line in _context_lines(report):
        console.print(line, highlight=False)


def _results_table(report: dict) -> Table:
    """Latency per frame, throughput and arithmetic speed of every thread count and batch."""
    # Paths go through rich's markup parser: escaped, so a file named "[bold]x.onnx" shows as named.
    t = Table(title=f"edgeclf bench: {escape(safe_text(Path(report['model']).name))} (latency in ms per frame)", title_justify="left")
    for col in ("thr", "batch", "p50", "p90", "p99", "mean", "std", "fps", f"G{_ops(report)}/s", f"%{report.get('peak_precision', '')} peak"):
        t.add_column(col, justify="right")
    for r in report["results"]:
        lat = r["latency_ms"]
        t.add_row(
            _thr(r), str(r["batch"]), _f(lat["p50"]), _f(lat["p90"]), _f(lat["p99"]), _f(lat["mean"]),
            _f(lat["std"]), _f(r["throughput_fps"], ".0f"), _f(r["gflops"], ".2f"),
            "n/a" if r["peak_fraction"] is None else f"{100 * r['peak_fraction']:.1f}",
        )
    return t


def _print_end_to_end(report: dict, console: Console) -> None:
    """The source's stages one frame at a time, then ``edgeclf predict``'s overlapped pipeline."""
    src = report["source"]
    s = Table(title="end to end, ms per frame", title_justify="left")
    for col in ("stage (ms)", "p50", "p90", "p99", "mean"):
        s.add_column(col, justify="right")
    for name, st in report["stages_ms"].items():
        s.add_row(name, _f(st["p50"]), _f(st["p90"]), _f(st["p99"]), _f(st["mean"]))
    console.print(s)
    console.print(f"end-to-end: {report['end_to_end_fps']:.1f} frames/s ({escape(safe_text(src['path']))}: {src['frames']} frames, "
                  f"batch 1, {_thr(src)} thread(s))", highlight=False)
    pipe = report["pipeline"]
    per_call = pipe.get("frames_per_call")
    console.print(f"pipeline (edgeclf predict's reader thread + inference on {_thr(pipe)} thread(s), overlapped"
                  + (f", {per_call:.1f} frames per call" if per_call else "") + f"): {pipe['fps']:.1f} frames/s"
                  + (f" after the first {pipe['warmup_frames']}" if pipe.get("warmup_frames") else "") + " = "
                  f"{100 * pipe['vs_slowest_stage']:.0f}% of its slowest stage ({pipe['slowest_stage']} alone, "
                  f"as above: {pipe['stage_fps'][pipe['slowest_stage']]:.1f} frames/s)", highlight=False)


def _context_lines(report: dict) -> list[str]:
    """The model, the machine, the cold start, the memory, and the share of the measured peak."""
    macs = report["macs_per_frame"]
    lines = [
        f"model: {escape(safe_text(report['model']))} ({report['model_bytes'] / 1e6:.2f} MB, {report['precision'] or 'unknown precision'}, "
        f"input {report['input_size'][0]}x{report['input_size'][1]})",
        f"MACs per frame: {'n/a' if macs is None else f'{macs / 1e6:.1f} M'}"
        + (f" ({report['macs_source']})" if macs else ""),
        f"provider: {report['provider']} (onnxruntime {report['onnxruntime']})",
        f"CPU: {report['cpu']}, {report['cores']} cores; measured {report['peak_precision']} matmul peak "
        f"{report['core_peak_gflops']:.1f} G{_ops(report)}/s per core",
        f"cold start (session creation to first result): {report['cold_start_ms']:.1f} ms",
        f"peak resident memory: {report['rss_mb']:.1f} MiB",
    ]
    if report["gflops"] is not None:
        lines.append(f"achieved: {report['gflops']:.2f} G{_ops(report)}/s at batch {report['headline']['batch']}, "
                     f"{_thr(report['headline'])} thread(s) = {100 * report['peak_fraction']:.1f}% of the measured "
                     f"{report['peak_precision']} peak ({report['peak_probe']})")
    return lines


def plot(report: dict, path: str | os.PathLike) -> None:
    """Write the report's charts as a PNG (OpenCV drawing: no matplotlib on the device)."""
    labels = [f"{_thr(r)} thr, batch {r['batch']}" for r in report["results"]]
    sub = f"{report['cpu']} ({report['cores']} cores), {report['provider']}, onnxruntime {report['onnxruntime']}"
    charts = [
        cvplot.bar_chart(
            f"Latency per frame: {Path(report['model']).name}", labels,
            {k: [r["latency_ms"][k] for r in report["results"]] for k in ("p50", "p90", "p99")}, "ms per frame", sub,
        ),
        cvplot.bar_chart("Throughput", labels, {"frames/s": [r["throughput_fps"] for r in report["results"]]}, "frames per second"),
    ]
    if "stages_ms" in report:
        st = report["stages_ms"]
        charts.append(cvplot.bar_chart(
            f"End to end, {report['end_to_end_fps']:.1f} frames/s: {Path(report['source']['path']).name}",
            list(st), {"mean": [v["mean"] for v in st.values()], "p99": [v["p99"] for v in st.values()]}, "ms per frame",
        ))
    cvplot.save_png(path, cvplot.stack(charts))
