"""Can onnxruntime's int8 path catch LiteRT int8? Session settings and quantization types, side by side.

Times, interleaved in the same rounds, LiteRT int8 (converted from the run's Keras model) against
the exported ``model.int8.onnx`` under several onnxruntime session settings, and against the same
fp32 model re-quantized with onnxruntime's S8S8 activations (the quantizer's default activation
type), to show what the exporter's U8S8 choice is worth.

    python benchmarks/int8_variants.py --run RUN_DIR [--onnx-dir DIR] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from compare import ROOT, log
from compare_runners import Runner, convert_litert, litert_runner, load_images, load_run
from compare_timing import interleaved_timings
from provenance import provenance, stamp_json, stamp_markdown

from edgeclf import sysinfo
from edgeclf.data.labelled import load_files
from edgeclf.model.session import open_session
from edgeclf.model.threads import default_threads
from edgeclf.outfiles import write_json, write_text


def ort_runner(name: str, path: Path, threads: int, config: dict | None = None, level: str = "all",
               binding: bool = False) -> Runner:
    import onnxruntime as ort

    # spin=True: onnxruntime's default unless ``config`` says otherwise (the variants compare exactly that).
    sess = open_session(path, threads, spin=True, config=config,
                        graph_optimization_level={"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                                                  "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED}[level])
    inp, out = sess.get_inputs()[0].name, sess.get_outputs()[0].name
    if not binding:
        return Runner(name, f"onnxruntime {ort.__version__}", path, lambda x: sess.run(None, {inp: x})[0])
    io = sess.io_binding()

    def run_bound(x: np.ndarray) -> np.ndarray:
        io.bind_cpu_input(inp, x)
        io.bind_output(out)
        sess.run_with_iobinding(io)
        return io.copy_outputs_to_cpu()[0]

    return Runner(name, f"onnxruntime {ort.__version__}", path, run_bound)


def requantize(fp32: Path, out: Path, calib: np.ndarray, activation: str) -> Path:
    """QDQ per-channel int8 of ``fp32`` with ``activation`` ("QInt8" or "QUInt8") activations."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from edgeclf.export.quantize import ImageBatches

    quantize_static(str(fp32), str(out), ImageBatches(calib, batch_size=1), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=getattr(QuantType, activation), weight_type=QuantType.QInt8)
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--onnx-dir", type=Path)
    ap.add_argument("--threads", type=int, default=default_threads())
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--turn", type=float, default=0.25)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    return ap.parse_args(argv)


def make_models(args: argparse.Namespace, run: dict, tmp: Path) -> tuple[Path, Path, Path]:
    """LiteRT int8 converted from the run's Keras model and an S8S8 re-quantization of its fp32 ONNX (both
    calibrated on 100 training images, into ``tmp``), and the exported int8 ONNX."""
    import keras

    onnx_dir = args.onnx_dir or args.run / "export"
    rng = np.random.default_rng(0)
    train = [Path(p) for p in run["splits"]["train"]]
    calib, _, _ = load_files([train[i] for i in rng.choice(len(train), min(100, len(train)), replace=False)],
                             tuple(run["input_size"]))
    log("converting to LiteRT int8 ...")
    _, tfl_int8 = convert_litert(keras.models.load_model(args.run / "model.keras", compile=False), calib, tmp)
    log("re-quantizing with S8S8 activations ...")
    s8s8 = requantize(onnx_dir / "model.onnx", tmp / "s8s8.onnx", calib, "QInt8")
    return tfl_int8, s8s8, onnx_dir / "model.int8.onnx"


def variants(tfl_int8: Path, s8s8: Path, int8: Path, t: int) -> dict[str, tuple[str, Callable[[], Runner]]]:
    """name -> (label, how to make its runner)."""
    return {
        "litert_int8": ("LiteRT int8 (XNNPACK)", lambda: litert_runner("litert_int8", tfl_int8, t)),
        "litert_1thread": ("LiteRT int8, 1 thread", lambda: litert_runner("litert_1thread", tfl_int8, 1)),
        "ort_export": ("ONNX int8 as exported (U8S8 QDQ), defaults", lambda: ort_runner("ort_export", int8, t)),
        "ort_1thread": ("same, 1 intra-op thread", lambda: ort_runner("ort_1thread", int8, 1)),
        "ort_nospin": ("same, allow_spinning=0", lambda: ort_runner("ort_nospin", int8, t, {"session.intra_op.allow_spinning": "0"})),
        "ort_iobinding": ("same, IO binding", lambda: ort_runner("ort_iobinding", int8, t, binding=True)),
        "ort_extended": ("same, graph optimisation EXTENDED", lambda: ort_runner("ort_extended", int8, t, level="extended")),
        "ort_s8s8": ("re-quantized S8S8 QDQ (quantizer default)", lambda: ort_runner("ort_s8s8", s8s8, t)),
    }


def time_variants(made: dict[str, tuple[str, Callable[[], Runner]]], x: np.ndarray, args: argparse.Namespace) -> list[dict]:
    """Per-frame p50 and p90 of every variant, interleaved, against LiteRT int8's."""
    runners = [make() for _, make in made.values()]
    for r in runners:
        for _ in range(3):
            r.one(x[:1])
    per_frame, _ = interleaved_timings(runners, x, x[:8], args.rounds, args.turn, 200, lambda m: log(f"  {m}"))["idle"]
    ref = float(np.median(per_frame["litert_int8"]))
    rows = []
    for name, (label, _) in made.items():
        f = np.asarray(per_frame[name])
        rows.append({"variant": name, "label": label, "p50_ms": float(np.median(f) * 1e3),
                     "p90_ms": float(np.percentile(f, 90) * 1e3), "vs_litert_int8": float(np.median(f) / ref),
                     "frames_timed": int(len(f))})
    return rows


def to_markdown(report: dict) -> str:
    m, size = report["machine"], report["model"]["input_size"]
    lines = [f"# onnxruntime int8 variants vs LiteRT int8 ({report['model']['architecture']} {size[0]}x{size[1]}, batch 1)", "",
             f"{m['cpu']}, {m['cores']} cores; {report['threads']} thread(s) unless stated; "
             f"{report['rounds']} interleaved rounds; {report['date']}", "", "| variant | p50 ms/frame | p90 ms/frame | x LiteRT int8 time |", "|---|---:|---:|---:|"]
    lines += [f"| {r['label']} | {r['p50_ms']:.3f} | {r['p90_ms']:.3f} | {r['vs_litert_int8']:.2f} |" for r in report["results"]]
    lines += ["", f"Reproduce: `{report['command']}`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    run = load_run(args.run)
    x, _, _ = load_images(run, None)
    tmp = Path(tempfile.mkdtemp(prefix="edgeclf-int8-"))
    rows = time_variants(variants(*make_models(args, run, tmp), args.threads), x, args)
    argv_shown = sys.argv[1:] if argv is None else argv
    report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": sysinfo.describe(),
              "threads": args.threads, "rounds": args.rounds,
              "model": {"run": str(args.run), "architecture": run.get("architecture"), "input_size": list(run["input_size"])},
              "results": rows, "command": "python benchmarks/int8_variants.py " + " ".join(argv_shown)}
    md = to_markdown(report)
    prov = provenance(["benchmarks/int8_variants.py", *argv_shown])
    write_json(args.out / "int8_variants.json", stamp_json(report, prov))
    write_text(args.out / "int8_variants.md", stamp_markdown(md, prov))
    print(md)
    return report


if __name__ == "__main__":
    main()
