"""Opening and calling the engines compare.py adds beside edgeclf's own: OpenVINO, onnxruntime's
OpenVINO execution provider and ncnn. Nothing heavy is imported at the top, so a fresh process
that measures one engine's memory (``compare_timing.PROBE_CODE``) and the child process that runs
onnxruntime-openvino (``python engine_open.py serve ...``) load only that engine.

Every ``open_*`` takes uint8 RGB NHWC images, as edgeclf's ONNX models do, and returns a function
from such a batch to the model's probabilities [N, classes].
"""

from __future__ import annotations

import json
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

Predict = Callable[[np.ndarray], np.ndarray]
OV_EP = "OpenVINOExecutionProvider"


class Unavailable(Exception):
    """An engine that cannot run here, and why in one line: a row of the results, not a crash."""


def need(module: str, install: str):
    """``module`` imported, or Unavailable naming the package to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise Unavailable(f"not installed ({first_words(e)}): pip install {install}") from e


def first_words(e: BaseException, n: int = 200) -> str:
    text = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return text if len(text) <= n else text[: n - 3] + "..."


# ------------------------------------------------------------------------------------- OpenVINO
def ov_config(threads: int) -> dict[str, object]:
    """Latency hint, ``threads`` inference threads, and float32 arithmetic (OpenVINO's CPU plugin
    otherwise picks bf16 on CPUs that have it, which would make its fp32 row something else)."""
    return {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}


def open_openvino(path: Path, threads: int) -> Predict:
    """An OpenVINO model (ONNX or IR .xml) compiled for the CPU, once per batch size (static shapes
    run faster than a dynamic one, as the LiteRT interpreters are resized once per batch size)."""
    ov = need("openvino", "openvino")
    core = ov.Core()
    requests: dict[tuple, tuple] = {}

    def request(shape: tuple) -> tuple:
        if shape not in requests:
            model = core.read_model(str(path))
            model.reshape(list(shape))
            compiled = core.compile_model(model, "CPU", ov_config(threads))
            requests[shape] = (compiled.create_infer_request(), probs_port(compiled.outputs))
        return requests[shape]

    def predict(x: np.ndarray) -> np.ndarray:
        req, port = request(x.shape)
        req.infer({0: np.ascontiguousarray(x)}, share_inputs=True)
        return req.get_tensor(port).data.reshape(len(x), -1).copy()

    return predict


def probs_port(outputs: list) -> object:
    """The ``probs`` output (edgeclf's models may also output ``unknown_score``), else the first."""
    return next((o for o in outputs if "probs" in o.get_names()), outputs[0])


# ----------------------------------------------------------------- onnxruntime + OpenVINO provider
def ort_openvino_session(path: Path, threads: int, strict: bool = True):
    """An onnxruntime session whose provider is OpenVINO on the CPU; ``strict``: no node may fall
    back to onnxruntime's own CPU provider (the session fails instead)."""
    import onnxruntime as ort

    if OV_EP not in ort.get_available_providers():
        raise Unavailable(f"onnxruntime {ort.__version__} at {Path(ort.__file__).parent} has no {OV_EP} "
                          "(pip install --no-deps --target DIR onnxruntime-openvino, then --ort-openvino DIR)")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    if strict:
        so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    options = {"device_type": "CPU", "num_of_threads": str(threads),
               "load_config": json.dumps({"CPU": {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}})}
    providers = [(OV_EP, options)] + ([] if strict else ["CPUExecutionProvider"])  # strict: naming it is an error
    return ort.InferenceSession(str(path), so, providers=providers)


def open_ort_openvino(path: Path, threads: int) -> tuple[Predict, dict]:
    """The session's predict function, and what it is (versions, providers, whether nodes fell back)."""
    import onnxruntime as ort

    try:
        sess, fallback = ort_openvino_session(path, threads), False
    except Unavailable:
        raise
    except Exception:  # noqa: BLE001 - some nodes need onnxruntime's CPU provider: allow it, and say so
        sess, fallback = ort_openvino_session(path, threads, strict=False), True
    inp = sess.get_inputs()[0].name
    names = [o.name for o in sess.get_outputs()]
    out = "probs" if "probs" in names else names[0]

    def predict(x: np.ndarray) -> np.ndarray:
        return sess.run([out], {inp: x})[0]

    info = {"runtime": f"onnxruntime-openvino {ort.__version__}", "providers": sess.get_providers(), "fallback": fallback}
    return predict, info


def serve(path: str, threads: str) -> None:
    """The child process of onnxruntime-openvino: one JSON line saying what it runs (or why it
    cannot), then, per request (uint32 N, H, W and N*H*W*3 uint8 on stdin), the seconds the call took
    (float64), the output's shape (uint32 rows, cols) and its float32 values on stdout."""
    out = sys.stdout.buffer
    try:
        predict, info = open_ort_openvino(Path(path), int(threads))
    except Exception as e:  # noqa: BLE001 - the parent turns it into a results row
        why = first_words(e) if isinstance(e, Unavailable) else f"{type(e).__name__}: {first_words(e)}"
        out.write((json.dumps({"error": why}) + "\n").encode())
        out.flush()
        return
    out.write((json.dumps(info) + "\n").encode())
    out.flush()
    stdin = sys.stdin.buffer
    while head := stdin.read(12):
        n, h, w = struct.unpack("<3I", head)
        x = np.frombuffer(stdin.read(n * h * w * 3), np.uint8).reshape(n, h, w, 3)
        t0 = time.perf_counter()
        y = np.ascontiguousarray(predict(x), np.float32)
        dt = time.perf_counter() - t0
        out.write(struct.pack("<d2I", dt, *y.reshape(len(y), -1).shape) + y.tobytes())
        out.flush()


# ------------------------------------------------------------------------------------------ ncnn
def open_ncnn(param: Path, threads: int) -> Predict:
    """An ncnn model (``.param`` beside its ``.bin``) in float32, one image per extractor call:
    ncnn has no batch dimension. The input is the ONNX model's NHWC uint8 image as pnnx converted
    it: an [H, W, 3] float blob (the graph's own scaling and Transpose follow)."""
    ncnn = need("ncnn", "ncnn")
    net = ncnn.Net()
    net.opt.num_threads = threads
    for flag in ("use_fp16_storage", "use_fp16_packed", "use_fp16_arithmetic", "use_bf16_storage"):
        setattr(net.opt, flag, False)  # float32 all the way, as its row says
    if net.load_param(str(param)) != 0 or net.load_model(str(param.with_suffix(".bin"))) != 0:
        raise Unavailable(f"ncnn could not load {param.name}")
    src, dst = ncnn_blobs(param)

    def one(img: np.ndarray) -> np.ndarray:
        ex = net.create_extractor()
        # clone(): a Mat made on a numpy array crashes this wheel's extract (signal 11)
        ex.input(src, ncnn.Mat(np.ascontiguousarray(img, np.float32)).clone())
        ret, out = ex.extract(dst)
        if ret != 0:
            raise RuntimeError(f"ncnn extract({dst!r}) returned {ret}")
        return np.asarray(out, np.float32).reshape(-1)

    def predict(x: np.ndarray) -> np.ndarray:
        return np.stack([one(img) for img in x])

    return predict


def ncnn_blobs(param: Path) -> tuple[str, str]:
    """The input and output blob names of an ncnn .param file (its Input layer's top, the last layer's top)."""
    layers = [line.split() for line in param.read_text().splitlines()[2:] if line.strip()]
    inp = next(ls for ls in layers if ls[0] == "Input")
    last = layers[-1]
    n_in, n_out = int(last[2]), int(last[3])
    return inp[4], last[4 + n_in + n_out - 1]


if __name__ == "__main__" and sys.argv[1:2] == ["serve"]:
    serve(*sys.argv[2:4])
