"""The runtimes compare.py times: one ``Runner`` per way of running the model (Keras, onnxruntime
through edgeclf's ``Classifier``, LiteRT converted from the same Keras model, OpenCV DNN; the other
engines are in ``compare_engines``), and the run's model and labelled images they all share."""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from edgeclf.data.labelled import load_files, load_labelled
from edgeclf.errors import EdgeclfError, first_line
from edgeclf.image import resize_of
from edgeclf.model.batching import in_batches

ROOT = Path(__file__).resolve().parents[1]

REFERENCE = "onnx_int8"
LABELS = {
    "keras_predict": "Keras model.predict",
    "keras_call": "Keras model(x)",
    "onnx_fp32": "ONNX fp32 (onnxruntime)",
    "onnx_int8": "ONNX int8 (onnxruntime)",
    "edgeclf_litert_int8": "edgeclf LiteRT int8 (export --format tflite)",
    "edgeclf_openvino_int8": "edgeclf OpenVINO engine on its int8 ONNX",
    "litert_fp32": "LiteRT fp32",
    "litert_int8": "LiteRT int8",
    "opencv_fp32": "OpenCV DNN fp32 ONNX",
    "opencv_int8": "OpenCV DNN int8 ONNX",
    "openvino_fp32": "OpenVINO fp32 (from ONNX)",
    "openvino_int8": "OpenVINO int8 (NNCF)",
    "openvino_qdq_int8": "OpenVINO on the int8 ONNX",
    "ort_openvino_fp32": "onnxruntime-openvino fp32",
    "ort_openvino_int8": "onnxruntime-openvino int8",
    "ncnn_fp32": "ncnn fp32 (pnnx from ONNX)",
    "ncnn_int8": "ncnn int8",
}


def split_key(key: str) -> tuple[str, int | None]:
    """A runner's name as (format, thread-count setting): ``onnx_int8@2`` when a run times several
    thread counts, plain ``onnx_int8`` (setting None) when it times one."""
    fmt, _, t = key.partition("@")
    return fmt, int(t) if t else None


def label(key: str) -> str:
    fmt, t = split_key(key)
    return LABELS.get(fmt, fmt) + (f", {t} thread{'s' if t != 1 else ''}" if t is not None else "")


@dataclass
class Runner:
    """One way of running the model: a per-frame call, a batch call, and what it is."""

    name: str
    runtime: str
    file: Path | None
    predict: Callable[[np.ndarray], np.ndarray]  # uint8 RGB NHWC batch (any N) -> probs [N, C]
    one: Callable[[np.ndarray], np.ndarray] | None = None  # fastest path for one frame [1, H, W, 3]
    notes: list[str] = field(default_factory=list)
    arm_calls: Callable[[], dict[str, int]] | None = None  # an adaptive runner's calls so far per way of running
    threads: int | None = None  # threads it runs on (None: edgeclf's adaptive default)
    file_bytes: int | None = None  # the model's size on disk, when it is more than ``file``
    own_time: Callable[[], float] | None = None  # the last call's seconds as the runner measured them (a child process)
    env: dict[str, str] = field(default_factory=dict)  # environment a fresh process running it needs

    @property
    def fmt(self) -> str:
        return split_key(self.name)[0]

    def __post_init__(self) -> None:
        if self.one is None:
            self.one = self.predict


# ---------------------------------------------------------------------------------------- the data
def load_run(run_dir: Path) -> dict:
    path = run_dir / "run.json"
    if not path.is_file():
        raise EdgeclfError(f"{run_dir}: not a run folder (no run.json)")
    if not (run_dir / "model.keras").is_file():
        raise EdgeclfError(f"{run_dir}: no model.keras")
    from edgeclf.train.run_record import read_run_record

    return read_run_record(path).to_dict()  # validated: a hand-edited run.json is a one-line error


def load_images(run: dict, data: Path | None) -> tuple[np.ndarray, np.ndarray, str]:
    """Labelled images at the model's input size: ``data`` or the run's validation split."""
    size, resize = tuple(run["input_size"]), resize_of(run.get("preprocessing"))  # the rule the model was trained with
    names = run["class_names"]
    if data is not None:
        li = load_labelled(data, size, names, resize=resize)
        return li.x, li.y, str(data)
    val = run.get("splits", {}).get("val") or []
    if not val:
        raise EdgeclfError("run.json has no validation split (splits.val); pass --data DIR")
    from edgeclf.train.run_record import record_from_dict

    if record_from_dict(run, "run.json").refitted:  # run.json's own rule for a refitted model
        raise EdgeclfError("the model was trained again on every photo (run.json: refit), its validation split "
                           "included: pass --data DIR with photos it has not seen")
    base = Path(run.get("data_dir") or ".")
    paths = [Path(p) if Path(p).is_absolute() else base / p for p in val]
    x, ok, _ = load_files(paths, size, resize=resize)
    y = np.array([names.index(paths[i].parent.name) for i in ok], np.int64)
    return x, y, f"validation split of {_shown(run.get('data_dir'))} ({len(paths)} files)"


def _shown(path: str | None) -> str:
    """A path as the results name it: relative to the repository when it can be (run.json holds
    absolute paths, which name this machine)."""
    if not path:
        return "?"
    try:
        return os.path.relpath(path, ROOT) if Path(path).is_absolute() else path
    except ValueError:
        return path


# ------------------------------------------------------------------------------------- the runners
def keras_runners(run_dir: Path, threads: int) -> tuple[list[Runner], object]:
    import tensorflow as tf

    notes = []
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
    except RuntimeError:  # TensorFlow already started in this process (compare.main called from Python)
        notes.append(f"TensorFlow was already initialised: its thread count is its own, not {threads}")
    import keras

    model = keras.models.load_model(run_dir / "model.keras", compile=False)

    def predict(x: np.ndarray) -> np.ndarray:
        return model.predict(x.astype(np.float32), batch_size=32, verbose=0)

    def call(x: np.ndarray) -> np.ndarray:
        return model(x.astype(np.float32), training=False).numpy()

    f = run_dir / "model.keras"
    rt = f"keras {keras.__version__} / tensorflow {tf.__version__}"
    return [Runner("keras_predict", rt, f, predict, notes=list(notes), threads=threads),
            Runner("keras_call", rt, f, call, notes=list(notes), threads=threads)], model


def onnx_runner(name: str, path: Path, threads: int) -> Runner:
    import onnxruntime as ort

    from edgeclf.model.classifier import Classifier

    clf = Classifier(path, threads=threads)
    return Runner(name, f"onnxruntime {ort.__version__}", path, clf.predict_arrays, arm_calls=clf.thread_calls,
                  threads=threads)


def edgeclf_litert_runner(name: str, onnx_dir: Path, threads: int) -> Runner:
    """edgeclf's own LiteRT path: its ``Classifier`` on the ``model.int8.tflite`` that ``edgeclf
    export --format tflite`` writes into the export folder (its conversion and int8 guard, not
    ``convert_litert``'s). Unavailable, with how to make it, when the folder has none."""
    from engine_open import Unavailable

    from edgeclf.model import litert
    from edgeclf.model.classifier import Classifier
    from edgeclf.model.exported import TFLITE_INT8_NAME

    path = onnx_dir / TFLITE_INT8_NAME
    if not path.is_file():
        raise Unavailable(f"not available: no {TFLITE_INT8_NAME} in {onnx_dir} (edgeclf export RUN --format tflite)")
    if not litert.available():
        raise Unavailable(f"not installed (ai-edge-litert): {litert.INSTALL_HINT}")
    clf = Classifier(path, threads=threads)
    return Runner(name, f"edgeclf Classifier, {litert.version()}", path, clf.predict_arrays, threads=threads,
                  notes=[("edgeclf's Classifier on the export folder's model.int8.tflite (edgeclf export --format "
                          "tflite: its own conversion and int8 guard), as predict runs it when bench --engines chose LiteRT")])


def edgeclf_openvino_runner(name: str, onnx_int8: Path, threads: int) -> Runner:
    """edgeclf's own OpenVINO path: its ``Classifier(engine="openvino")`` on the export's int8 ONNX,
    as predict and serve run it when bench --engines chose OpenVINO. Unavailable without openvino."""
    from engine_open import Unavailable

    from edgeclf.model import openvino_engine
    from edgeclf.model.classifier import Classifier

    if not openvino_engine.available():
        raise Unavailable(f"not installed (openvino): {openvino_engine.INSTALL_HINT}")
    clf = Classifier(onnx_int8, threads=threads, engine="openvino")
    return Runner(name, f"edgeclf Classifier, {openvino_engine.version()}", onnx_int8, clf.predict_arrays,
                  threads=threads, notes=["edgeclf's Classifier with engine='openvino' on the export's model.int8.onnx "
                                          "(the whole graph, unknown score included), as predict and serve run it "
                                          "when bench --engines chose OpenVINO"])


def convert_litert(model, calib: np.ndarray, out_dir: Path) -> tuple[Path, Path]:
    """fp32 and full-integer int8 (uint8 input, float output) .tflite files from the Keras model."""
    import tensorflow as tf

    def converter():
        try:
            return tf.lite.TFLiteConverter.from_keras_model(model)
        except Exception:  # noqa: BLE001 - Keras 3 models go through a SavedModel instead
            saved = out_dir / "saved_model"
            model.export(str(saved), format="tf_saved_model")
            return tf.lite.TFLiteConverter.from_saved_model(str(saved))

    fp32 = out_dir / "model.tflite"
    int8 = out_dir / "model.int8.tflite"
    with contextlib.redirect_stdout(sys.stderr):  # Keras prints its SavedModel signature on stdout
        fp32.write_bytes(converter().convert())
        c = converter()
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        c.representative_dataset = lambda: ([calib[i : i + 1].astype(np.float32)] for i in range(len(calib)))
        c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        c.inference_input_type = tf.uint8  # raw pixels in, like the ONNX model's uint8 input
        int8.write_bytes(c.convert())
    return fp32, int8


def litert_calibration(run: dict, fallback: np.ndarray | None, n: int,
                       rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """``n`` images to calibrate LiteRT int8 on, and a note saying which: from the run's training
    split, else the first of ``fallback`` (the evaluation images)."""
    train_paths = [Path(p) for p in run.get("splits", {}).get("train", [])]
    if train_paths:
        pick = rng.choice(len(train_paths), size=min(n, len(train_paths)), replace=False)
        calib, _, _ = load_files([train_paths[i] for i in pick], tuple(run["input_size"]),
                                 resize=resize_of(run.get("preprocessing")))
        return calib, f"LiteRT int8 calibrated on {len(calib)} training images"
    if fallback is None or len(fallback) == 0:
        raise EdgeclfError("run.json has no training split to calibrate LiteRT int8 on")
    return fallback[:n], f"LiteRT int8 calibrated on {len(fallback[:n])} of the evaluation images (run has no training split)"


def litert_interpreter_class() -> tuple[type, str]:
    try:
        from ai_edge_litert import __version__ as v
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, f"ai-edge-litert {v}"
    except ImportError:
        import tensorflow as tf

        return tf.lite.Interpreter, f"tf.lite {tf.__version__}"


def litert_runner(name: str, path: Path, threads: int) -> Runner:
    Interpreter, runtime = litert_interpreter_class()
    interpreters: dict[int, tuple] = {}

    def interp_for(n: int):
        # One interpreter per batch size: resizing in place re-plans the graph every call.
        if n not in interpreters:
            it = Interpreter(model_path=str(path), num_threads=threads)
            inp = it.get_input_details()[0]
            if inp["shape"][0] != n:
                it.resize_tensor_input(inp["index"], [n, *inp["shape"][1:]])
            it.allocate_tensors()
            interpreters[n] = (it, it.get_input_details()[0], it.get_output_details()[0])
        return interpreters[n]

    def predict(x: np.ndarray) -> np.ndarray:
        it, inp, out = interp_for(len(x))
        if inp["dtype"] == np.float32:
            feed = x.astype(np.float32)
        else:
            scale, zp = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            feed = x if (scale == 1.0 and zp == 0 and inp["dtype"] == np.uint8) else \
                np.clip(np.round(x / scale + zp), info.min, info.max).astype(inp["dtype"])
        it.set_tensor(inp["index"], feed)
        it.invoke()
        y = it.get_tensor(out["index"])
        if out["dtype"] != np.float32:
            scale, zp = out["quantization"]
            y = (y.astype(np.float32) - zp) * scale
        return y

    return Runner(name, runtime, path, predict, threads=threads)


def opencv_runner(name: str, path: Path, threads: int) -> Runner:
    import cv2

    net = cv2.dnn.readNetFromONNX(str(path))

    def predict(x: np.ndarray) -> np.ndarray:
        if cv2.getNumThreads() != threads:  # one setting per process: runners on other thread counts change it
            cv2.setNumThreads(threads)
        net.setInput(np.ascontiguousarray(x))
        return np.asarray(net.forward()).reshape(len(x), -1)

    return Runner(name, f"OpenCV {cv2.__version__} dnn", path, predict, threads=threads)


def accuracy(r: Runner, x: np.ndarray, y: np.ndarray, bs: int = 32) -> tuple[float, np.ndarray]:
    preds = np.argmax(in_batches(r.predict, x, bs), axis=1)
    return float(np.mean(preds == y)), preds


@dataclass
class Formats:
    """The runners made so far, and why the others could not be (a runtime that cannot run the
    model is a result, not a crash)."""

    wanted: set[str]  # formats to run (runner names are these, or ``format@threads``)
    runners: list[Runner] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    closers: list[Callable[[], None]] = field(default_factory=list)  # child processes to stop when done

    def wants(self, key: str) -> bool:
        return split_key(key)[0] in self.wanted

    def add(self, name: str, make: Callable[[], Runner | list[Runner]]) -> None:
        if not self.wants(name):
            return
        try:
            made = make()
            self.runners.extend(made if isinstance(made, list) else [made])
        except Exception as e:  # noqa: BLE001
            self.fail(name, e)

    def fail(self, name: str, e: BaseException | str) -> None:
        """``name`` cannot run here: its row says why (an engine's own one-line reason, or the error)."""
        from engine_open import Unavailable

        if isinstance(e, (str, Unavailable)):
            self.errors[name] = str(e)
        else:
            self.errors[name] = f"{type(e).__name__}: {first_line(e, 200)}"
        print(f"warning: {name}: {self.errors[name]}", file=sys.stderr, flush=True)

    def close(self) -> None:
        for close in self.closers:
            close()
        self.closers.clear()

    def score(self, x: np.ndarray, y: np.ndarray, batch: np.ndarray, bs: int) -> dict[str, float]:
        """Accuracy of every runner on ``x``; a runner that fails is dropped, its error kept."""
        acc: dict[str, float] = {}
        for r in list(self.runners):
            try:
                r.predict(batch[:1])  # warm-up, and a check that it runs at all
                acc[r.name], _ = accuracy(r, x, y, bs=bs)
            except Exception as e:  # noqa: BLE001
                self.fail(r.name, e)
                self.runners.remove(r)
        return acc
