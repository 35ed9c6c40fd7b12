"""The engines compare.py runs beside edgeclf's own: OpenVINO (fp32 from the ONNX file, its own
int8 made by NNCF from the calibration photos, and edgeclf's int8 ONNX file), onnxruntime with
OpenVINO's execution provider (in a child process: onnxruntime-openvino ships a module of the same
name as onnxruntime), and ncnn (converted from the ONNX file by pnnx). Which engines a run uses
(``--engines``), and why an engine that cannot run here is a row with a reason, not a crash.

Install: ``pip install openvino nncf ncnn`` and ``pip install --no-deps pnnx`` (its dependency on
torch is for converting PyTorch models, not ONNX ones); onnxruntime-openvino into a folder of its
own: ``pip install --no-deps --target DIR onnxruntime-openvino``, then ``--ort-openvino DIR``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from compare_runners import Formats, Runner
from engine_open import Unavailable, first_words, need, open_ncnn, open_openvino

HERE = Path(__file__).resolve().parent

#: engine -> its formats, in the order the results list them
ENGINES: dict[str, tuple[str, ...]] = {
    "keras": ("keras_predict", "keras_call"),
    "onnxruntime": ("onnx_fp32", "onnx_int8"),
    "edgeclf_litert": ("edgeclf_litert_int8",),  # edgeclf's own LiteRT path (export --format tflite)
    "edgeclf_openvino": ("edgeclf_openvino_int8",),  # edgeclf's own OpenVINO engine on its int8 ONNX
    "litert": ("litert_fp32", "litert_int8"),
    "opencv": ("opencv_fp32", "opencv_int8"),
    "openvino": ("openvino_fp32", "openvino_int8", "openvino_qdq_int8"),
    "ort_openvino": ("ort_openvino_fp32", "ort_openvino_int8"),
    "ncnn": ("ncnn_fp32", "ncnn_int8"),
}
FORMATS = [f for fmts in ENGINES.values() for f in fmts]


def chosen_formats(engines: str | None, skip: str = "") -> set[str]:
    """The formats to run: those of ``engines`` (comma list of engine or format names; None: all),
    less ``skip``. ValueError names an unknown one."""
    chosen: set[str] = set()
    for name in [s.strip() for s in (engines or ",".join(ENGINES)).split(",") if s.strip()]:
        if name in ENGINES:
            chosen.update(ENGINES[name])
        elif name in FORMATS:
            chosen.add(name)
        else:
            raise ValueError(f"unknown engine {name!r} (engines: {', '.join(ENGINES)}; or a format: {', '.join(FORMATS)})")
    return chosen - {s.strip() for s in skip.split(",") if s.strip()}


class Once:
    """A conversion made the first time a runner needs it; its error, if any, told to every one."""

    def __init__(self, make: Callable[[], object]) -> None:
        self.make, self.done, self.error = make, None, None

    def __call__(self):
        if self.done is None and self.error is None:
            try:
                self.done = self.make()
            except Exception as e:  # noqa: BLE001
                self.error = e
        if self.error is not None:
            raise self.error
        return self.done


def add_engines(formats: Formats, settings: list[int | None], cores: int, onnx: tuple[Path, Path],
                calibration: Callable[[], np.ndarray], size: tuple[int, int], tmp: Path,
                ort_openvino: Path | None) -> None:
    """OpenVINO, onnxruntime-openvino and ncnn rows at every thread-count setting (None: all cores);
    each made once, converted once, or a row saying why not."""
    onnx_fp32 = onnx[0]
    multi = len(settings) > 1
    nncf_model = Once(lambda: nncf_int8(onnx_fp32, calibration(), tmp))
    ncnn_param = Once(lambda: pnnx_convert(onnx_fp32, size, tmp))
    for t in settings:
        _add_engines_at(formats, t, t or cores, multi, onnx, nncf_model, ncnn_param, ort_openvino)


def _add_engines_at(formats: Formats, t: int | None, th: int, multi: bool, onnx: tuple[Path, Path], nncf_model: Once,
                    ncnn_param: Once, ort_openvino: Path | None) -> None:
    """The other engines' rows at one thread-count setting ``t`` (``th`` threads)."""
    onnx_fp32, onnx_int8 = onnx

    def add(fmt: str, make: Callable[[str], Runner]) -> None:
        k = f"{fmt}@{t}" if multi else fmt
        if formats.wants(k):
            formats.add(k, lambda: make(k))

    add("openvino_fp32", lambda k: openvino_runner(k, onnx_fp32, th))
    add("openvino_int8", lambda k: openvino_runner(k, nncf_model()[0], th, [nncf_model()[1]]))
    add("openvino_qdq_int8", lambda k: openvino_runner(k, onnx_int8, th, ["edgeclf's int8 ONNX (QDQ) read by OpenVINO"]))
    add("ort_openvino_fp32", lambda k: ort_openvino_runner(k, onnx_fp32, th, ort_openvino, formats.closers))
    add("ort_openvino_int8", lambda k: ort_openvino_runner(k, onnx_int8, th, ort_openvino, formats.closers))
    add("ncnn_fp32", lambda k: ncnn_runner(k, ncnn_param()[0], th, ncnn_param()[1]))
    add("ncnn_int8", lambda k: _no_runner(ncnn_int8_unavailable()))


def _no_runner(reason: str) -> Runner:
    raise Unavailable(reason)


# ------------------------------------------------------------------------------------- OpenVINO
def openvino_runner(name: str, path: Path, threads: int, notes: list[str] | None = None) -> Runner:
    ov = need("openvino", "openvino")
    return Runner(name, f"OpenVINO {ov.get_version().split('-')[0]} (CPU)", path, open_openvino(path, threads),
                  notes=list(notes or []), threads=threads, file_bytes=_ir_bytes(path))


def _ir_bytes(path: Path) -> int:
    """An OpenVINO IR is .xml + .bin; any other model is its one file."""
    return path.stat().st_size + (path.with_suffix(".bin").stat().st_size if path.suffix == ".xml" else 0)


def nncf_int8(onnx_fp32: Path, calib: np.ndarray, out_dir: Path) -> tuple[Path, str]:
    """OpenVINO's own int8 model (IR .xml/.bin in ``out_dir``), quantized by NNCF's post-training
    quantization on ``calib`` (the photos LiteRT int8 is calibrated on), and a note saying how."""
    ov = need("openvino", "openvino")
    nncf = need("nncf", "nncf")
    model = ov.Core().read_model(str(onnx_fp32))
    data = nncf.Dataset([calib[i : i + 1] for i in range(len(calib))])
    with contextlib.redirect_stdout(sys.stderr):  # its progress bars: stdout is the results table's
        q = nncf.quantize(model, data, subset_size=len(calib))
    xml = out_dir / "model.openvino_int8.xml"
    ov.save_model(q, str(xml), compress_to_fp16=False)
    return xml, f"NNCF {nncf.__version__} post-training quantization (default preset), {len(calib)} calibration photos"


# ---------------------------------------------------------------- onnxruntime-openvino, in a child
class ChildRunner:
    """A model run in a child process (``engine_open.py serve``): the parent sends images through a
    pipe and gets back the probabilities and the seconds the call took in the child, so the
    figures leave the pipe out."""

    def __init__(self, path: Path, threads: int, extra_path: Path | None) -> None:
        env = dict(os.environ)
        if extra_path is not None:
            env["PYTHONPATH"] = os.pathsep.join([str(extra_path), *filter(None, [env.get("PYTHONPATH")])])
        self.env = {"PYTHONPATH": env["PYTHONPATH"]} if extra_path is not None else {}
        # a file, not a pipe nobody reads (a chatty child would block on it); closed in close()
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, str(HERE / "engine_open.py"), "serve", str(path), str(threads)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, env=env)
        line = self.proc.stdout.readline()
        try:
            self.info = json.loads(line)
        except ValueError:
            why = self.said()
            self.close()
            raise Unavailable(f"child process failed: {why}") from None
        if "error" in self.info:
            self.close()
            raise Unavailable(self.info["error"])
        self.last_s = 0.0

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, np.uint8)
        self.proc.stdin.write(struct.pack("<3I", *x.shape[:3]) + x.tobytes())
        self.proc.stdin.flush()
        head = self.proc.stdout.read(16)
        if len(head) < 16:
            why = self.said()
            self.close()
            raise RuntimeError(f"child process ended: {why}")
        self.last_s, rows, cols = struct.unpack("<d2I", head)
        return np.frombuffer(self.proc.stdout.read(rows * cols * 4), np.float32).reshape(rows, cols)

    def said(self) -> str:
        """The child's last line on stderr."""
        self.stderr.seek(0)
        lines = self.stderr.read().decode(errors="replace").strip().splitlines()
        return first_words(Exception(lines[-1] if lines else "no output"))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.stderr.close()


def ort_openvino_runner(name: str, path: Path, threads: int, extra_path: Path | None,
                        closers: list[Callable[[], None]]) -> Runner:
    """onnxruntime with OpenVINO's provider on ``path``, in a child process with ``extra_path``
    (where onnxruntime-openvino was installed) first on its sys.path; ``closers`` gets its stop."""
    if extra_path is not None and not (extra_path / "onnxruntime").is_dir():
        raise Unavailable(f"{extra_path}: no onnxruntime here (pip install --no-deps --target {extra_path} onnxruntime-openvino)")
    child = ChildRunner(path, threads, extra_path)
    closers.append(child.close)
    notes = ["run in a child process; times are the child's own, the pipe left out"]
    where = "OpenVINO EP, every node"
    if child.info["fallback"]:
        where = "OpenVINO EP, some nodes on onnxruntime's CPU EP"
        notes.append("OpenVINO's provider could not take the whole graph: some nodes fell back to onnxruntime's CPU provider")
    return Runner(name, f"{child.info['runtime']} ({where})", path, child.predict,
                  notes=notes, threads=threads, own_time=lambda: child.last_s, env=child.env)


# ------------------------------------------------------------------------------------------ ncnn
def pnnx_convert(onnx_path: Path, size: tuple[int, int], out_dir: Path) -> tuple[Path, list[str]]:
    """``model.ncnn.param``/``.bin`` converted from the ONNX file by pnnx (float32 weights), and
    notes on how. edgeclf's graph as exported first; when pnnx cannot take it (the unknown score's
    TopK), only its ``probs`` output's part. Unavailable with pnnx's own words when neither converts."""
    exe = pnnx_program()
    work = out_dir / "pnnx"
    work.mkdir(exist_ok=True)
    notes: list[str] = []
    param, err = _pnnx(exe, onnx_path, size, work / "model.onnx")
    if param is None:
        notes.append(f"pnnx on the exported graph: {err}; converted its probs output's part instead")
        onnx = need("onnx", "onnx (the train extra)")
        probs = work / "probs.onnx"
        onnx.utils.extract_model(str(onnx_path), str(probs), [onnx.load(str(onnx_path), load_external_data=False)
                                                                .graph.input[0].name], ["probs"])
        param, err = _pnnx(exe, probs, size, probs)
        if param is None:
            raise Unavailable(f"pnnx could not convert the ONNX model: {err}")
    text = param.read_text()
    if "\nTensor.to " in text:  # the graph's uint8 -> float Cast: no such ncnn layer, and ncnn is fed floats
        param.write_text(re.sub(r"(?m)^Tensor\.to ", "Noop      ", text))
        notes.append("pnnx kept the input's uint8 Cast as a Tensor.to layer ncnn does not have: "
                     "made a Noop (ncnn is fed float pixels)")
    return param, notes


def pnnx_program() -> str:
    """The pnnx program inside the pnnx package, found without importing the package (which
    imports torch, needed only to convert PyTorch models)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("pnnx")
    except (ImportError, ValueError):  # a module set to None, as the tests do
        spec = None
    exe = Path(next(iter(spec.submodule_search_locations))) / "pnnx" if spec and spec.submodule_search_locations else None
    if exe is None or not exe.is_file():
        raise Unavailable("not installed (no pnnx program): pip install --no-deps pnnx (torch is only needed for PyTorch models)")
    return str(exe)


def _pnnx(exe: str, src: Path, size: tuple[int, int], dst: Path) -> tuple[Path | None, str]:
    """pnnx on ``src`` (copied to ``dst``, pnnx writes beside it): the .ncnn.param, or None and why."""
    if src != dst:
        dst.write_bytes(src.read_bytes())
    h, w = size
    p = subprocess.run([exe, dst.name, f"inputshape=[1,{h},{w},3]u8", "fp16=0"], capture_output=True, text=True,
                       cwd=dst.parent, timeout=600, check=False)
    param, binary = dst.with_suffix(".ncnn.param"), dst.with_suffix(".ncnn.bin")
    if p.returncode == 0 and param.is_file() and binary.is_file():
        return param, ""
    lines = [line.strip() for line in (p.stdout + p.stderr).splitlines() if line.strip()]
    said = next((line for line in reversed(lines) if "fail" in line.lower() or "error" in line.lower()),
                lines[-1] if lines else "no output")
    code = f"signal {-p.returncode}" if p.returncode < 0 else f"exit {p.returncode}"
    return None, f"pnnx {code}: {said[:300]}"


def ncnn_runner(name: str, param: Path, threads: int, notes: list[str]) -> Runner:
    ncnn = need("ncnn", "ncnn")
    return Runner(name, f"ncnn {ncnn.__version__}", param, open_ncnn(param, threads),
                  notes=[*notes, "one image per call (ncnn has no batch dimension): batches are a loop"],
                  threads=threads, file_bytes=param.stat().st_size + param.with_suffix(".bin").stat().st_size)


def ncnn_int8_unavailable() -> str:
    """Why ncnn int8 has no row: its int8 models come from the ncnn2table and ncnn2int8 programs."""
    ncnn = need("ncnn", "ncnn")
    tools = [t for t in ("ncnn2table", "ncnn2int8") if not _on_path(t)]
    where = Path(ncnn.__file__).parent
    if tools:
        return (f"not available: ncnn's int8 needs {' and '.join(tools)} (C++ tools built from ncnn's source), "
                f"which the ncnn {ncnn.__version__} wheel does not ship ({where.name}/ has the Python module only)")
    return "not available: ncnn2table and ncnn2int8 found, but compare.py does not run them yet"


def _on_path(tool: str) -> bool:
    return any((Path(d) / tool).is_file() for d in os.environ.get("PATH", "").split(os.pathsep) if d)

