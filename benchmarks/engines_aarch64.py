"""Every engine row of compare.py that can run on a Raspberry Pi, run on an emulated one for
correctness: the same photos through each engine on this x86 host and on qemu's Cortex-A76 (or
A72), the same top-1 answer wanted on every photo.

Nothing is timed (emulation says nothing of a board's speed). The arm64 Python, numpy, OpenCV,
onnxruntime, ai-edge-litert and edgeclf come from ``.ci/aarch64 setup``; OpenVINO's and ncnn's
aarch64 wheels are downloaded from PyPI into a folder of their own (``--wheels``, cached). The ncnn
model is converted on the host by pnnx, as compare.py does; the ONNX and .tflite files are the
export's (``edgeclf export RUN --int8 --format tflite``).

    python benchmarks/engines_aarch64.py --run RUN --onnx-dir RUN/export [--images 20] [--cpu cortex-a76]

Rows compare.py has that this lane does not run, and why, are listed in the results.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

#: format -> (file in the export folder or "ncnn", what runs it)
ROWS = {
    "onnx_fp32": ("model.onnx", "edgeclf Classifier (onnxruntime)"),
    "onnx_int8": ("model.int8.onnx", "edgeclf Classifier (onnxruntime)"),
    "edgeclf_litert_int8": ("model.int8.tflite", "edgeclf Classifier (ai-edge-litert)"),
    "edgeclf_openvino_int8": ("model.int8.onnx", "edgeclf Classifier (OpenVINO engine)"),
    "litert_int8": ("model.int8.tflite", "ai-edge-litert Interpreter, bare"),
    "opencv_fp32": ("model.onnx", "OpenCV DNN"),
    "opencv_int8": ("model.int8.onnx", "OpenCV DNN"),
    "openvino_fp32": ("model.onnx", "OpenVINO"),
    "openvino_qdq_int8": ("model.int8.onnx", "OpenVINO"),
    "openvino_int8": ("nncf", "OpenVINO (its own int8 IR, made by NNCF on the host)"),
    "ncnn_fp32": ("ncnn", "ncnn (pnnx-converted on the host)"),
}
NOT_RUN = {
    "keras_predict, keras_call, litert_fp32": "TensorFlow is the workstation's, not a device's",
    "ort_openvino_fp32, ort_openvino_int8": "onnxruntime-openvino has no aarch64 wheel on PyPI",
    "ncnn_int8": "ncnn's Python wheel ships no int8 tools (ncnn2table, ncnn2int8)",
}
WHEELS = ("openvino==2026.4.1", "ncnn")
PLATFORMS = ["--platform", "manylinux_2_35_aarch64", "--platform", "manylinux_2_31_aarch64",
             "--platform", "manylinux_2_28_aarch64", "--platform", "manylinux2014_aarch64"]


# ------------------------------------------------------------------------------ the child: one engine
def child(fmt: str, path: str, x_path: str, out_path: str, extra: str) -> None:
    """Probabilities of ``fmt`` on the images in ``x_path`` (uint8 NHWC .npy), saved to ``out_path``."""
    if extra:
        sys.path.insert(0, extra)
    sys.path.insert(0, str(HERE))
    x = np.load(x_path)
    predict = _opener(fmt, Path(path))
    np.save(out_path, np.concatenate([np.asarray(predict(x[i:i + 1]), np.float32).reshape(1, -1) for i in range(len(x))]))


def _opener(fmt: str, path: Path):
    if fmt in ("onnx_fp32", "onnx_int8", "edgeclf_litert_int8"):
        from edgeclf.model.classifier import Classifier

        return Classifier(path, threads=1, unknown=False).predict_arrays
    if fmt == "edgeclf_openvino_int8":
        from edgeclf.model.classifier import Classifier

        return Classifier(path, threads=1, unknown=False, engine="openvino").predict_arrays
    if fmt == "litert_int8":
        from ai_edge_litert.interpreter import Interpreter

        it = Interpreter(model_path=str(path), num_threads=1)
        it.allocate_tensors()
        # the probabilities: edgeclf's export adds a second output, the (far wider) embedding of the unknown score
        inp, out = it.get_input_details()[0], min(it.get_output_details(), key=lambda d: int(d["shape"][-1]))

        def run(x: np.ndarray) -> np.ndarray:
            it.set_tensor(inp["index"], x)
            it.invoke()
            return it.get_tensor(out["index"])
        return run
    if fmt.startswith("opencv"):
        import cv2

        net = cv2.dnn.readNetFromONNX(str(path))
        return lambda x: (net.setInput(np.ascontiguousarray(x)), net.forward())[1]
    import engine_open as eo

    return eo.open_openvino(path, 1) if fmt.startswith("openvino") else eo.open_ncnn(path, 1)


# -------------------------------------------------------------------------------------- the host
def arm_site(wheels: Path) -> Path:
    """OpenVINO's and ncnn's aarch64 wheels (and their dependencies) installed for the arm64 Python."""
    site = wheels / "site"
    if (site / ".complete").is_file():
        return site
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "download", "-q", "--only-binary=:all:", *PLATFORMS, "--python-version", "3.11",
                    "--implementation", "cp", "-d", str(wheels), *WHEELS], check=True)
    subprocess.run([*pip, "install", "-q", "--no-deps", "--only-binary=:all:", *PLATFORMS, "--python-version", "3.11",
                    "--implementation", "cp", "--target", str(site),
                    *[str(w) for w in wheels.glob("*.whl") if w.name.startswith(("openvino", "ncnn"))]], check=True)
    (site / ".complete").touch()
    return site


def run_child(where: str, fmt: str, path: Path, x_path: Path, tmp: Path, extra: Path | None) -> tuple[np.ndarray | None, str, float]:
    """(probabilities or None, the error, seconds) of ``fmt`` on the host or the emulated CPU ``where``."""
    out = tmp / f"{where}-{fmt}.npy"
    args = ["child", fmt, str(path), str(x_path), str(out), str(extra or "")]
    cmd = ([sys.executable, str(Path(__file__).resolve()), *args] if where == "host" else
           [str(ROOT / ".ci" / "aarch64"), "python", where, str(Path(__file__).resolve()), *args])
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    seconds = time.perf_counter() - t0
    if res.returncode != 0 or not out.is_file():
        lines = (res.stderr or res.stdout).strip().splitlines()
        return None, (lines[-1] if lines else f"exit {res.returncode}")[:200], seconds
    return np.load(out), "", seconds


def compare_row(fmt: str, host: np.ndarray | None, arm: np.ndarray | None, y: np.ndarray, errors: tuple[str, str],
                seconds: float) -> dict:
    row = {"format": fmt, "file": ROWS[fmt][0], "runs_with": ROWS[fmt][1], "emulated_s": round(seconds, 1)}
    if host is None or arm is None:
        return {**row, "error": errors[0] or errors[1], "where": "host" if host is None else "aarch64"}
    return {**row, "n": len(y), "accuracy_host": float((host.argmax(1) == y).mean()),
            "accuracy_arm": float((arm.argmax(1) == y).mean()),
            "top1_agreement": float((host.argmax(1) == arm.argmax(1)).mean()),
            "max_abs_diff": float(np.abs(host - arm).max())}


def markdown(report: dict) -> str:
    prov = report.get("provenance", {})
    lines = ["# Every engine row on an emulated Raspberry Pi: the same answers as on x86", "",
             f"- Commit: `{prov.get('commit', 'unknown')}`; date: {prov.get('date', 'unknown')}",
             f"- Emulated CPU: {report['cpu']} (qemu user mode), one thread; host: {report['host']}",
             f"- Model: {report['model']}; {report['n']} photos of its validation split",
             "- Nothing timed: emulation says nothing of a board's speed.", "",
             "| format | runs with | file | top-1 agreement with x86 | accuracy x86 / aarch64 | max prob diff | emulated s |",
             "|---|---|---|---:|---:|---:|---:|"]
    for r in report["rows"]:
        if "error" in r:
            lines.append(f"| {r['format']} | {r['runs_with']} | {r['file']} | failed on {r['where']}: "
                         f"{r['error'].replace('|', '/')} | | | {r['emulated_s']} |")
            continue
        lines.append(f"| {r['format']} | {r['runs_with']} | {r['file']} | {r['top1_agreement']:.0%} | "
                     f"{r['accuracy_host']:.1%} / {r['accuracy_arm']:.1%} | {r['max_abs_diff']:.4f} | {r['emulated_s']} |")
    lines += ["", "Not run in this lane:", ""] + [f"- {k}: {v}" for k, v in NOT_RUN.items()]
    lines += ["", f"Reproduce: `{report['command']}`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--onnx-dir", type=Path, required=True, help="export folder with model.onnx, model.int8.onnx, model.int8.tflite")
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--cpu", default="cortex-a76", choices=("cortex-a72", "cortex-a76"))
    ap.add_argument("--wheels", type=Path, default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgeclf-aarch64-engines")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--name", default="engines_aarch64")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(HERE))
    from compare_engines import nncf_int8, pnnx_convert
    from compare_runners import litert_calibration, load_images, load_run
    from provenance import commit

    from edgeclf import sysinfo
    from edgeclf.outfiles import write_json, write_text

    run = load_run(args.run)
    x, y, _ = load_images(run, None)
    x, y = x[: args.images], y[: args.images]
    args.wheels.mkdir(parents=True, exist_ok=True)
    site = arm_site(args.wheels)
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgeclf-arm-engines-") as tmp:
        tmp = Path(tmp)
        np.save(tmp / "x.npy", x)
        made = {"ncnn": pnnx_convert(args.onnx_dir / "model.onnx", tuple(run["input_size"]), tmp)[0],
                # as compare.py makes it: NNCF on the photos LiteRT int8 is calibrated on
                "nncf": nncf_int8(args.onnx_dir / "model.onnx",
                                  litert_calibration(run, x, 100, np.random.default_rng(0))[0], tmp)[0]}
        for fmt, (file, _) in ROWS.items():
            path = made.get(file) or args.onnx_dir / file
            print(f"{fmt} ...", file=sys.stderr, flush=True)
            host, e1, _ = run_child("host", fmt, path, tmp / "x.npy", tmp, None)
            arm, e2, seconds = run_child(args.cpu, fmt, path, tmp / "x.npy", tmp, site)
            rows.append(compare_row(fmt, host, arm, y, (e1, e2), seconds))
    report = {"provenance": {"commit": commit()[0], "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())},
              "cpu": args.cpu, "host": sysinfo.describe()["cpu"], "model": f"{run['architecture']} {run['input_size'][0]}x{run['input_size'][1]}",
              "n": int(len(y)), "rows": rows, "not_run": NOT_RUN,
              "command": "python benchmarks/engines_aarch64.py --run RUN --onnx-dir RUN/export "
                         f"--images {args.images} --cpu {args.cpu}"}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / f"{args.name}.json", report)
    write_text(args.out / f"{args.name}.md", markdown(report))
    print(markdown(report))
    return report


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:
        child(*sys.argv[2:7])
    else:
        main()
