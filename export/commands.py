"""The ``edgeclf export`` and ``edgeclf demo`` commands (added to the CLI through the
``edgeclf.commands`` entry point) and what ``export`` prints: a short summary table (or one JSON
object with ``--json``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from edgeclf.errors import EdgeclfError, require_train_extra

FORMATS = ("onnx", "tflite")


def run_export(source: Path, out: Path | None, *, json_out: bool = False, **options) -> dict:
    """Run the export; print the summary on stdout (JSON with ``json_out``), progress on stderr."""
    from .api import export_model  # TensorFlow loads here

    report = export_model(source, out, show_progress=not json_out, **options)
    if json_out:
        print(json.dumps(report))
    else:
        _print_summary(report, Path(out) if out is not None else Path(report["source"]).parent / "export")
    return report


def parse_formats(values: list[str] | None) -> set[str]:
    """``--format`` given repeated and/or comma-separated (``--format onnx,tflite``) as a set;
    ``{"onnx"}`` when not given. A one-line error names a value that is neither."""
    found = {v.strip() for value in (values or ["onnx"]) for v in value.split(",")}
    for v in sorted(found):
        if v not in FORMATS:
            raise EdgeclfError(f"--format {v or repr(v)}: expected {' or '.join(FORMATS)}")
    return found


def _print_summary(report: dict, out: Path) -> None:
    from rich.markup import escape
    from rich.table import Table

    from edgeclf.progress import console as make_console

    console = make_console(highlight=True)
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
            f"{r['method']} calibration on {r['n_calib']} images; {_int8_check(r)}; "
            f"size x{r['size_ratio']:.2f}; {r['latency_ms']['int8']:.2f} vs {r['latency_ms']['fp32']:.2f} ms/frame "
            f"({r['speedup']:.2f}x faster)",
        )
    if "tflite_int8" in report:
        r = report["tflite_int8"]
        table.add_row(
            report["files"].get("tflite_int8", "(rejected)"), _mb(report["sizes_bytes"].get("tflite_int8", 0)),
            f"LiteRT, calibrated on {r['n_calib']} images; {_int8_check(r, 'LiteRT int8 vs fp32 ONNX')}; "
            f"size x{r['size_ratio']:.2f}" + ("" if r.get("unknown_score") else "; no unknown score"),
        )
    console.print(table)
    if "refit" in report:
        r = report["refit"]
        held = f"{r['held_out_accuracy']:.1%}" if isinstance(r.get("held_out_accuracy"), (int, float)) else "not recorded"
        console.print(f"note: the model was trained again on all {r['photos']} photos (refit), so its validation photos are "
                      f"not held out: the accuracies above compare int8 with fp32 on photos it has seen, and the unknown "
                      f"score's threshold is set on them; the held-out run's validation accuracy (run.json) is {held}")
    if "unknown" in report:
        u = report["unknown"]
        console.print(f"unknown score: {u['k']}-th nearest of {u['bank']} training photos (cosine); threshold "
                      + ", ".join(f"{k} {u[k]['threshold']:.4f} ({u[k]['rejected_in_class']:.1%} of {u[k]['calibrated_on']} "
                                  "validation photos rejected)" for k in ("fp32", "int8", "tflite_int8") if k in u))


def _int8_check(r: dict, what: str = "int8 vs fp32") -> str:
    """The guard's verdict and what it rests on, then the validation split's accuracy."""
    if "guard" not in r:  # an export.json of an earlier edgeclf
        return (f"accuracy {r['accuracy_int8']:.2%} vs fp32 {r['accuracy_fp32']:.2%} on {r['n_eval']} "
                f"(agreement {r['top1_agreement']:.2%})")
    from .int8 import describe

    return (f"{what} on {r['judged_on']}: {describe(r['guard'])}: [bold]{r['verdict']}[/]; validation "
            f"accuracy {r['accuracy_int8']:.2%} vs fp32 {r['accuracy_fp32']:.2%} on {r['n_eval']}")


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n else "-"


def register(app: typer.Typer) -> None:
    """Add ``export`` and ``demo`` to the ``edgeclf`` CLI. Imports no TensorFlow: commands load it when they run."""

    @app.command()
    def export(
        source: Path = typer.Argument(..., help="A run folder or a .keras model."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default: RUN_DIR/export)."),
        int8: bool = typer.Option(False, "--int8", help="Also write a verified int8 model (model.int8.onnx)."),
        calib: Optional[Path] = typer.Option(None, "--calib", help="Calibration images for --int8 (default: the run's training images)."),
        calib_size: int = typer.Option(200, "--calib-size", help="Number of calibration images (a seeded random sample)."),
        calib_method: str = typer.Option("auto", "--calib-method", help="auto (the best against fp32 of minmax, entropy, percentile) or one of them."),
        fp16: bool = typer.Option(False, "--fp16", help="Also write a float16 model for GPUs (model.fp16.onnx)."),
        formats: Annotated[list[str] | None, typer.Option(
            "--format", help="onnx (default) and/or tflite, repeated or comma-separated (--format onnx,tflite). "
            "tflite also writes model.int8.tflite (LiteRT full-integer int8, the --calib images, the int8 guard; "
            "needs ai-edge-litert). model.onnx (fp32) is always written: every other model is checked against it.")] = None,
        opset: int = typer.Option(17, "--opset", help="ONNX opset (13-18)."),
        max_drop: float = typer.Option(0.01, "--max-drop", help="Largest accepted int8 accuracy drop vs fp32 (0.01 = 1 point): int8 is rejected when its drop "
                                      "on the validation and training photos is credibly above it (95% interval)."),
        unknown_reject: float = typer.Option(0.02, "--unknown-reject", help="Share of the validation photos the unknown score's threshold rejects: "
                                             "predict answers 'unknown' for frames farther from the training photos (0: no unknown score)."),
        json_out: bool = typer.Option(False, "--json", help="Print export.json's content as one JSON object."),
        force: bool = typer.Option(False, "--force", help="Replace an earlier export in the output folder."),
    ) -> None:
        """Export a trained model to ONNX (and a verified int8 ONNX, a verified LiteRT int8)."""
        tflite = "tflite" in parse_formats(formats)
        require_train_extra("export")
        run_export(
            source, out, json_out=json_out, int8=int8, fp16=fp16, tflite=tflite, calib=calib, calib_size=calib_size,
            calib_method=calib_method, opset=opset, max_drop=max_drop, unknown_reject=unknown_reject, force=force,
        )

    @app.command()
    def demo(
        out: Path = typer.Option(Path("edgeclf-demo"), "--out", "-o", help="Folder for the generated data, run and results."),
        force: bool = typer.Option(False, "--force", help="Start over if --out already holds a demo."),
    ) -> None:
        """The whole chain on generated data: make a data set, train, export, classify a video, benchmark."""
        require_train_extra("demo")
        from .demo import check_demo_out, run_demo

        check_demo_out(out, force)  # before TensorFlow loads
        run_demo(out, force=force)
