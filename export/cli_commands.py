"""What ``edgeclf export`` prints: a short summary table (or one JSON object with ``--json``)."""

from __future__ import annotations

import json
from pathlib import Path

from .api import export_model


def run_export(source: Path, out: Path | None, *, json_out: bool = False, **options) -> dict:
    """Run the export; print the summary on stdout (JSON with ``json_out``), progress on stderr."""
    report = export_model(source, out, show_progress=not json_out, **options)
    if json_out:
        print(json.dumps(report))
    else:
        _print_summary(report, Path(out) if out is not None else Path(report["source"]).parent / "export")
    return report


def _print_summary(report: dict, out: Path) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    p = report["parity"]
    table = Table(title=f"edgeclf export -> {escape(str(out))}", show_header=True)
    table.add_column("file")
    table.add_column("size", justify="right")
    table.add_column("check")
    table.add_row(
        report["files"]["fp32"], _mb(report["sizes_bytes"]["fp32"]),
        f"parity with Keras on {p['n']} images: top-1 {p['top1_agreement']:.2%}, max |dp| {p['max_abs_diff']:.1e}",
    )
    if "fp16" in report["files"]:
        f = report["fp16"]
        table.add_row(report["files"]["fp16"], _mb(report["sizes_bytes"]["fp16"]),
                      f"vs Keras: top-1 {f['top1_agreement']:.2%}, max |dp| {f['max_abs_diff']:.1e}")
    if "int8" in report:
        r = report["int8"]
        table.add_row(
            report["files"].get("int8", "(rejected)"), _mb(report["sizes_bytes"].get("int8", 0)),
            f"{r['method']} calibration on {r['n_calib']} images; accuracy {r['accuracy_int8']:.2%} vs fp32 "
            f"{r['accuracy_fp32']:.2%} on {r['n_eval']} (agreement {r['top1_agreement']:.2%}); "
            f"size x{r['size_ratio']:.2f}; {r['latency_ms']['int8']:.2f} vs {r['latency_ms']['fp32']:.2f} ms/frame "
            f"({r['speedup']:.2f}x faster)",
        )
    console.print(table)


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n else "-"
