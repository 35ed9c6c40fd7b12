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
from edgeclf.model.providers import GPU_PROVIDERS, short_names


def _f(v: float | None, fmt: str = ".3f") -> str:
    return "n/a" if v is None else format(v, fmt)


def _thr(r: dict) -> str:
    """Threads as shown: "2", or "2 (adaptive)" when the classifier chose them (most calls ran on 2)."""
    return f"{r['threads']} (adaptive)" if r.get("adaptive") else str(r["threads"])


def _on_gpu(report: dict) -> bool:
    """True for a run on a GPU provider, whose report has no CPU figures (matmul peak, threads)."""
    return report["provider"] in GPU_PROVIDERS


def _device(report: dict) -> str:
    """The provider that ran, as short as the options name it ("cuda")."""
    return short_names([report["provider"]])[0]


def _runs_on(report: dict, r: dict) -> str:
    """What ran a result, for the lines: "2 (adaptive) thread(s)" on the CPU, "cuda" on a GPU (with
    the CPU threads only where --threads set them)."""
    if not _on_gpu(report):
        return f"{_thr(r)} thread(s)"
    return _device(report) + ("" if r["threads"] is None else f" ({r['threads']} CPU threads)")


def _ops(report: dict) -> str:
    """FLOP for float models; OP for int8 ones (integer multiply-adds are not floating point). On a
    GPU, where no CPU probe says which arithmetic runs, the model's recorded precision decides."""
    return "OP" if (report.get("peak_precision") or report.get("precision")) == "int8" else "FLOP"


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
    # On a GPU the CPU's matmul peak and (unless --threads set it) the thread count say nothing: no columns.
    gpu = _on_gpu(report)
    thr = not gpu or any(r["threads"] is not None for r in report["results"])
    where = f" on {_device(report)}" if gpu else ""
    t = Table(title=f"edgeclf bench: {escape(safe_text(Path(report['model']).name))}{where} (latency in ms per frame)", title_justify="left")
    cols = (["thr"] if thr else []) + ["batch", "p50", "p90", "p99", "mean", "std", "fps", f"G{_ops(report)}/s"]
    for col in cols + ([] if gpu else [f"%{report.get('peak_precision', '')} peak"]):
        t.add_column(col, justify="right")
    for r in report["results"]:
        lat = r["latency_ms"]
        cells = ([_thr(r) if r["threads"] is not None else "n/a"] if thr else []) + [
            str(r["batch"]), _f(lat["p50"]), _f(lat["p90"]), _f(lat["p99"]), _f(lat["mean"]),
            _f(lat["std"]), _f(r["throughput_fps"], ".0f"), _f(r["gflops"], ".2f")]
        if not gpu:
            cells.append("n/a" if r["peak_fraction"] is None else f"{100 * r['peak_fraction']:.1f}")
        t.add_row(*cells)
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
                  f"batch 1, {_runs_on(report, src)})", highlight=False)
    pipe = report["pipeline"]
    per_call = pipe.get("frames_per_call")
    console.print(f"pipeline (edgeclf predict's reader thread + inference on {_runs_on(report, pipe)}, overlapped"
                  + (f", {per_call:.1f} frames per call" if per_call else "") + f"): {pipe['fps']:.1f} frames/s"
                  + (f" after the first {pipe['warmup_frames']}" if pipe.get("warmup_frames") else "") + " = "
                  f"{100 * pipe['vs_slowest_stage']:.0f}% of its slowest stage ({pipe['slowest_stage']} alone, "
                  f"as above: {pipe['stage_fps'][pipe['slowest_stage']]:.1f} frames/s)", highlight=False)


def _cpu_line(report: dict) -> str:
    """The CPU and, when the model runs on it, its measured matmul peak (a GPU run's CPU is only the host)."""
    if _on_gpu(report):
        return f"host CPU: {report['cpu']}, {report['cores']} cores (the model runs on {_device(report)})"
    return (f"CPU: {report['cpu']}, {report['cores']} cores; measured {report['peak_precision']} matmul peak "
            f"{report['core_peak_gflops']:.1f} G{_ops(report)}/s per core")


def _context_lines(report: dict) -> list[str]:
    """The model, the machine, the cold start, the memory, and (on the CPU) the share of the measured peak."""
    macs, gpu = report["macs_per_frame"], _on_gpu(report)
    note = report.get("provider_note")
    lines = [
        f"model: {escape(safe_text(report['model']))} ({report['model_bytes'] / 1e6:.2f} MB, {report['precision'] or 'unknown precision'}, "
        f"input {report['input_size'][0]}x{report['input_size'][1]})",
        f"MACs per frame: {'n/a' if macs is None else f'{macs / 1e6:.1f} M'}"
        + (f" ({report['macs_source']})" if macs else ""),
        f"provider: {report['provider']} ({report.get('engine', 'onnxruntime ' + report['onnxruntime'])})" + (f"; note: {escape(safe_text(note))}" if note else ""),
        _cpu_line(report),
        f"cold start (session creation to first result): {report['cold_start_ms']:.1f} ms",
        f"peak resident memory: {report['rss_mb']:.1f} MiB" + (" (host; the GPU's own memory is not counted)" if gpu else ""),
    ]
    if report["gflops"] is not None:
        head = f"achieved: {report['gflops']:.2f} G{_ops(report)}/s at batch {report['headline']['batch']}"
        lines.append(f"{head} on {_device(report)}" if gpu else
                     (f"{head}, {_thr(report['headline'])} thread(s) = {100 * report['peak_fraction']:.1f}% of the measured "
                      f"{report['peak_precision']} peak ({report['peak_probe']})"))
    return lines


def plot(report: dict, path: str | os.PathLike) -> None:
    """Write the report's charts as a PNG (OpenCV drawing: no matplotlib on the device)."""
    gpu = _on_gpu(report)
    labels = [f"batch {r['batch']}" if r["threads"] is None else f"{_thr(r)} thr, batch {r['batch']}" for r in report["results"]]
    engine = report.get("engine", f"onnxruntime {report['onnxruntime']}")
    sub = (f"{report['provider']}, {engine} (host: {report['cpu']})" if gpu else
           f"{report['cpu']} ({report['cores']} cores), {report['provider']}, {engine}")
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
