"""Classifier: an exported edgeclf model in an onnxruntime session (or, for a .tflite file, LiteRT's).

Loads the model and its metadata (class names, input size, colour order), picks the execution
providers (TensorRT, CUDA or CPU), and classifies BGR images as OpenCV reads them, with the same
preprocessing as training. ``predict`` and ``predict_batch`` are safe to call from several threads
at once: onnxruntime's ``InferenceSession.run`` is thread-safe and preprocessing keeps no state.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from edgeclf import sysinfo
from edgeclf.errors import EdgeclfError, first_line, warn
from edgeclf.image import resize_of, resize_rgb, to_bgr8
from edgeclf.model import litert, metadata as md, openvino_engine, providers as prov, threads as thr
from edgeclf.model.adaptive import AdaptiveSession, session_plan, thread_arms
from edgeclf.model.batching import in_batches
from edgeclf.model.declared import MAX_INPUT_SIDE, int8_cpu_warning, metadata_side, parse_class_names
from edgeclf.model.exported import check_export_member
from edgeclf.model.outputs import as_probabilities, output_kind
from edgeclf.model.prediction import Prediction
from edgeclf.model.unknown import Calibration, UnknownRule, parse_calibration, rule_for
from edgeclf.quiet import captured_output


def open_session(*args: Any, **kwargs: Any) -> Any:
    """``session.open_session``: onnxruntime is imported on the first ONNX model, never for a .tflite."""
    from edgeclf.model import session

    return session.open_session(*args, **kwargs)


def lazy_session(*args: Any, **kwargs: Any) -> Any:
    from edgeclf.model import session

    return session.lazy_session(*args, **kwargs)


_DTYPES = {"tensor(uint8)": np.uint8, "tensor(float)": np.float32, "tensor(float16)": np.float16}


#: Bytes per image onnxruntime may need beyond the input, as a multiple of the input as float32: a
#: rough, generous allowance for a small CNN's activations (edgenet at 128x128 needs about 5x).
ACTIVATION_FACTOR = 16

_warn = warn


def _model_file(model_path: str | os.PathLike) -> Path:
    """``model_path`` as a Path, or a one-line error when it is missing, not a file, or not the
    file its folder's export.json records."""
    path = Path(model_path)
    if not path.exists():
        raise EdgeclfError(f"{path}: model file does not exist")
    if not path.is_file():
        raise EdgeclfError(f"{path}: not a file (expected an .onnx or .tflite model)")
    check_export_member(path)  # a file of an export folder must be the one its export.json records
    return path


class Classifier:
    """An image classifier exported by ``edgeclf export``.

    ``provider``: "auto" (TensorRT, then CUDA, then CPU, whichever is installed), "cpu", "cuda" or
    "tensorrt"; a missing one falls back to CPU with a warning, or raises with ``strict``.
    ``threads``: CPU intra-op threads. By default (None) on the CPU the classifier adapts: it keeps
    sessions on the usable cores (at most 4; with and without workers that busy-wait inside a run),
    on half of them and on a single thread, and runs whichever has been fastest lately
    (``edgeclf.model.adaptive``): all cores on an idle device, one when capture, decoding or another
    process holds the rest. A number fixes it. ``device_id``: the GPU.
    ``spin``: let idle worker threads busy-wait between runs too (onnxruntime's default); off by
    default, as a device shares its cores with capture, decoding and serving
    (benchmarks/results/ort_session.md). With ``spin`` the thread count is fixed.
    ``labels`` and ``size`` (height, width) are only needed for models without edgeclf metadata.
    ``unknown``: label a frame ``unknown`` when the model's unknown score is above the threshold
    export calibrated (``unknown_threshold`` overrides it) or its top class's probability is below
    ``class_thresholds[class]`` (``edgeclf.model.unknown``); False: always a class.
    ``engine``: "onnxruntime", or "openvino" for an .onnx model on OpenVINO (the ``openvino``
    extra); a .tflite model runs on LiteRT (the ``litert`` extra). ``self.providers`` lists what
    actually runs.
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        provider: str = "auto",
        threads: int | None = None,
        labels: Sequence[str] | None = None,
        size: tuple[int, int] | None = None,
        device_id: int = 0,
        strict: bool = False,
        fp16: bool = True,
        spin: bool = False,
        warn: Callable[[str], None] = _warn,
        unknown: bool = True,
        unknown_threshold: float | None = None,
        class_thresholds: Mapping[str, float] | None = None,
        engine: str = "onnxruntime",
    ) -> None:
        self.path = _model_file(model_path)
        if threads is not None:
            thr.check_threads(threads)
        if litert.is_tflite(self.path):
            self._start_cpu_engine(litert.LiteRTSession, provider, threads, strict, warn)
        elif engine == "openvino":
            self._start_cpu_engine(openvino_engine.OpenVINOSession, provider, threads, strict, warn)
        elif engine != "onnxruntime":
            raise EdgeclfError(f"engine {engine!r}: expected onnxruntime or openvino (a .tflite model runs on LiteRT)")
        else:
            self._start_onnxruntime(provider, threads, device_id, fp16, strict, spin, warn)
        self.providers: list[str] = self.session.get_providers()
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        inp, out = self._read_signature()
        self.class_names, self.size = self._labels_and_size(labels, size, inp, out)
        self.output_kind = output_kind(self.metadata, self.path)  # probabilities, or logits that predict_arrays softmaxes
        #: the resize rule the model was trained with (``edgeclf.image.RESIZES``), from its metadata
        self.resize: str = resize_of(self.metadata.get(md.PREPROCESSING))
        #: what export calibrated for the unknown score (None: the model has none)
        self.calibration: Calibration | None = (parse_calibration(self.metadata[md.UNKNOWN], self.path)
                                                if self.unknown_output and md.UNKNOWN in self.metadata else None)
        #: the rule that makes a prediction ``unknown`` (inactive: never)
        self.unknown_rule: UnknownRule = self.rule_for(enabled=unknown, threshold=unknown_threshold,
                                                       class_thresholds=class_thresholds)
        # The int8 kernels that differ by CPU family: onnxruntime's and OpenVINO's (oneDNN's u8 x s8
        # pairs saturate the same way on x86 without VNNI). LiteRT's widen to 16 bits first.
        if self.providers[0] in (prov.CPU, openvino_engine.ENGINE):
            cpu_warning = int8_cpu_warning(self.metadata, sysinfo.cpu_family())
            if cpu_warning:
                warn(f"{self.path}: {cpu_warning}")

    def rule_for(self, *, enabled: bool = True, threshold: float | None = None,
                 class_thresholds: Mapping[str, float] | None = None, where: str | None = None) -> UnknownRule:
        """The unknown rule for these settings, checked against this model's classes and calibration.
        ``where`` names the place in a config file for the errors (None: ``predict``'s options)."""
        for name in class_thresholds or {}:
            if name in self.class_names:
                continue
            if where is None:
                raise EdgeclfError(f"--threshold {name}: {self.path} has no class {name!r}")
            raise EdgeclfError(f"{where}: class_thresholds: {name!r} is not a class of {self.path.name} "
                               f"({', '.join(self.class_names)})")
        return rule_for(self.calibration, enabled=enabled, threshold=threshold, class_thresholds=class_thresholds,
                        path=where or self.path)

    # ------------------------------------------------------------------ the steps of __init__
    def _start_onnxruntime(self, provider: str, threads: int | None, device_id: int, fp16: bool, strict: bool,
                           spin: bool, warn: Callable[[str], None]) -> None:
        """The onnxruntime session on the planned providers; warns (or, ``strict``, raises) when
        what runs is not what was asked for."""
        import onnxruntime as ort

        plan = prov.plan_providers(provider, ort.get_available_providers(), self.path, device_id, fp16, strict)
        if plan.warning:
            warn(plan.warning)
        adaptive = self._plan_threads(threads, spin, plan)
        self.session, ort_log = self._open_session(plan, adaptive, spin)
        warning, note = prov.start_problems(provider, plan.names, self.session.get_providers(), ort_log[0] if ort_log else "")
        if warning and strict:
            raise EdgeclfError(warning)
        if warning:
            warn(warning)
        #: a GPU provider listed but not started while another GPU runs (``auto``): said only where asked (bench)
        self.provider_note: str | None = note

    def _start_cpu_engine(self, session: Callable[[Path, int], Any], provider: str, threads: int | None, strict: bool,
                          warn: Callable[[str], None]) -> None:
        """LiteRT (a .tflite model) or OpenVINO on the CPU, at a fixed thread count: neither has a
        GPU provider here, so asking for one falls back (or, ``strict``, fails) as onnxruntime's do."""
        name = "LiteRT" if litert.is_tflite(self.path) else "OpenVINO"
        if provider not in ("auto", "cpu"):
            message = f"{self.path}: {name} runs on the CPU here; --provider {provider} needs onnxruntime"
            if strict:
                raise EdgeclfError(message)
            warn(f"{message}; running on the CPU")
        self.threads = threads or thr.default_threads()
        self.thread_arms = [self.threads]
        self.session = session(self.path, self.threads)
        self.provider_note = None

    def _plan_threads(self, threads: int | None, spin: bool, plan: prov.ProviderPlan) -> bool:
        """Set ``threads`` and ``thread_arms``; True when the session adapts its threads (the
        default on the CPU, unless spinning workers or a single core leave nothing to choose)."""
        self.threads = threads or thr.default_threads()
        adaptive = threads is None and not spin and plan.names == [prov.CPU] and self.threads > 1
        #: the thread counts the session adapts between (``[self.threads]`` when fixed)
        self.thread_arms = thread_arms(self.threads) if adaptive else [self.threads]
        return adaptive

    def _open_session(self, plan: prov.ProviderPlan, adaptive: bool, spin: bool) -> tuple[Any, list[str]]:
        """The session (adaptive or plain) and what onnxruntime printed while opening it."""
        if any(name == prov.TENSORRT for name in plan.names):
            prov.tensorrt_cache_dir(self.path).mkdir(parents=True, exist_ok=True)
        try:
            with captured_output() as ort_log:  # a GPU provider that fails prints many lines
                if adaptive:
                    session = self._adaptive_session(plan)
                else:
                    session = open_session(self.path, self.threads, spin, plan.providers)
        except Exception as e:  # onnxruntime raises several types for a bad file
            raise EdgeclfError(f"{self.path}: not a loadable ONNX model ({first_line(e)})") from None
        return session, ort_log

    def _adaptive_session(self, plan: prov.ProviderPlan) -> AdaptiveSession:
        """One session per way of running in ``session_plan``, for ``AdaptiveSession`` to choose from:
        the first opened now (a bad file fails here), the others when first tried (``LazySession``)."""
        arms = session_plan(self.threads)

        sessions = [open_session(self.path, t, spin=True, providers=plan.providers, config=config) if i == 0 else
                    lazy_session(self.path, t, plan.providers, config) for i, (_, t, config) in enumerate(arms)]
        return AdaptiveSession(sessions, [t for _, t, _ in arms], labels=[label for label, _, _ in arms],
                               yields=[config.get("session.intra_op.allow_spinning") == "0" for _, _, config in arms])

    def _read_signature(self) -> tuple[Any, Any]:
        """The graph's one image input and its probabilities output, checked; sets ``input_name``,
        ``input_dtype``, ``output_name`` and ``max_batch``."""
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise EdgeclfError(f"{self.path}: model has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); "
                               "edgeclf models take one image input")
        inp = inputs[0]
        self.input_name = inp.name
        if inp.type not in _DTYPES:
            raise EdgeclfError(f"{self.path}: model input {inp.name!r} has type {inp.type}, not an image tensor (uint8 or float)")
        self.input_dtype = _DTYPES[inp.type]
        if len(inp.shape) != 4 or inp.shape[3] != 3:
            raise EdgeclfError(f"{self.path}: model input {inp.name!r} {inp.shape} is not an NHWC RGB image tensor [N, H, W, 3]")
        outputs = {o.name: o for o in self.session.get_outputs()}
        out = outputs.get(md.OUTPUT_NAME, self.session.get_outputs()[0])
        self.output_name = out.name
        score = outputs.get(md.UNKNOWN_NAME)
        #: the unknown score's output name, when the model has one ([N] float)
        self.unknown_output: str | None = score.name if score is not None and len(score.shape) == 1 else None
        if len(out.shape) != 2:
            raise EdgeclfError(f"{self.path}: model output {out.name!r} {out.shape} is not [N, classes] probabilities")
        batch_dim = inp.shape[0]
        if isinstance(batch_dim, int) and batch_dim != 1:
            raise EdgeclfError(f"{self.path}: model input {inp.name!r} fixes the batch at {batch_dim}; "
                               "edgeclf needs a dynamic batch or 1")
        #: 1 when the graph takes one image per call (``predict_arrays`` then runs a batch image by image).
        self.max_batch: int | None = 1 if batch_dim == 1 else None
        return inp, out

    def _labels_and_size(self, labels: Sequence[str] | None, size: tuple[int, int] | None,
                         inp: Any, out: Any) -> tuple[list[str], tuple[int, int]]:
        """Class names and input size (height, width): as given, else from the metadata, else (the
        size) from the graph; checked against the graph and the colour order."""
        if labels is None and md.CLASS_NAMES in self.metadata:
            labels = parse_class_names(self.metadata[md.CLASS_NAMES], self.path)
        if size is None:
            size = self._declared_size(tuple(inp.shape[1:3]))
        if labels is None or size is None:
            missing = " and ".join(n for n, v in (("class names", labels), ("input size", size)) if v is None)
            raise EdgeclfError(f"{self.path}: model has no edgeclf metadata ({missing}); pass labels and size")
        if isinstance(out.shape[1], int) and out.shape[1] != len(labels):
            raise EdgeclfError(f"{self.path}: model has {out.shape[1]} outputs but {len(labels)} class names")
        colour = self.metadata.get(md.COLOR_ORDER, "RGB").upper()
        if colour != "RGB":
            raise EdgeclfError(f"{self.path}: colour order {colour!r} is not supported (edgeclf models take RGB)")
        return list(labels), (int(size[0]), int(size[1]))

    def _declared_size(self, graph_size: tuple) -> tuple[int, int] | None:
        """The input size the metadata gives (which must match the graph's fixed sides), else the
        graph's own when both sides are fixed, else None."""
        if md.INPUT_HEIGHT in self.metadata or md.INPUT_WIDTH in self.metadata:
            size = (metadata_side(self.metadata, md.INPUT_HEIGHT, self.path), metadata_side(self.metadata, md.INPUT_WIDTH, self.path))
            for key, meta, graph in zip((md.INPUT_HEIGHT, md.INPUT_WIDTH), size, graph_size):
                if isinstance(graph, int) and graph != meta:
                    raise EdgeclfError(f"{self.path}: metadata {key} {meta} differs from the graph's input size "
                                       f"{graph_size[0]}x{graph_size[1]}")
            return size
        if all(isinstance(d, int) and d > 0 for d in graph_size):
            size = (int(graph_size[0]), int(graph_size[1]))
            if max(size) > MAX_INPUT_SIDE:
                raise EdgeclfError(f"{self.path}: input size {size[0]}x{size[1]} is above edgeclf's limit of "
                                   f"{MAX_INPUT_SIDE} pixels a side")
            return size
        return None

    # ------------------------------------------------------------------------------ the API
    def __repr__(self) -> str:
        return f"Classifier({str(self.path)!r}, providers={prov.short_names(self.providers)}, size={self.size}, classes={len(self.class_names)})"

    def thread_calls(self) -> dict[str, int]:
        """Calls so far per way of running ("2 threads", "1 thread", "2 x 1 thread") when the
        classifier adapts its threads, else {}."""
        return dict(self.session.calls) if isinstance(self.session, AdaptiveSession) else {}

    @contextmanager
    def paced_by_reader(self) -> Iterator[None]:
        """While a thread beside the caller decodes the frames it classifies: the adaptive threads
        are judged by frames per second of the whole stream (time from one result to the next),
        not by the call alone, so inference does not win its own speed by taking the reader's core."""
        adaptive = isinstance(self.session, AdaptiveSession)
        if adaptive:
            self.session.per_cycle = True
        try:
            yield
        finally:
            if adaptive:
                self.session.per_cycle = False

    def cores_of(self, way: str) -> int:
        """Cores kept busy by a way of running named in ``thread_calls``."""
        return next(a.cores for a in self.session.arms if a.label == way)

    def check_batch(self, batch: int, option: str = "--batch") -> None:
        """A one-line error when ``batch`` images per call cannot run: above 1 for a graph that
        fixes the batch at 1, or more than half the available memory by a rough estimate
        (``run_bytes_per_image`` per image)."""
        if self.max_batch == 1 and batch > 1:
            raise EdgeclfError(f"{option} {batch}: {self.path} takes one image per call (its graph fixes the batch at 1); use {option} 1")
        h, w = self.size
        per_frame = self.run_bytes_per_image()
        budget = sysinfo.available_memory_bytes() // 2
        if batch * per_frame > budget:
            raise EdgeclfError(f"{option} {batch}: needs about {batch * per_frame / 2**30:.1f} GiB for a {h}x{w} model, "
                               f"more than half of the {2 * budget / 2**30:.1f} GiB of memory available; "
                               f"use {option} {max(1, budget // per_frame)} or less")

    def run_bytes_per_image(self) -> int:
        """Memory one more image in a call costs, roughly: the input, its float copy, and
        ``ACTIVATION_FACTOR`` x the float input for activations."""
        h, w = self.size
        return h * w * 3 * (1 + np.dtype(self.input_dtype).itemsize + 4 * ACTIVATION_FACTOR)

    def preprocess(self, image_bgr: np.ndarray) -> np.ndarray:
        """BGR image as OpenCV reads it -> RGB uint8 at the model's input size (training's resize)."""
        return resize_rgb(image_bgr, self.size, self.resize)

    def predict_arrays(self, batch_rgb: np.ndarray) -> np.ndarray:
        """Probabilities [N, classes] for preprocessed RGB uint8 images [N, H, W, 3]."""
        if self.max_batch == 1 and len(batch_rgb) > 1:  # the graph takes one image per call
            return in_batches(self.predict_arrays, batch_rgb, 1)
        probs = self.session.run([self.output_name], {self.input_name: batch_rgb.astype(self.input_dtype, copy=False)})[0]
        return self._checked(probs, len(batch_rgb))

    def _checked(self, probs: np.ndarray, n: int) -> np.ndarray:
        """The model's output rows for ``n`` images as probabilities, or a one-line error."""
        if probs.shape != (n, len(self.class_names)):  # a graph whose declared shape lied
            raise EdgeclfError(f"{self.path}: model gave output of shape {list(probs.shape)} for {n} "
                               f"image(s); expected [{n}, {len(self.class_names)}] (one per class)")
        if not np.isfinite(probs).all():  # would print as bare NaN: invalid JSON, and no real answer
            raise EdgeclfError(f"{self.path}: model gave probabilities that are not finite numbers (NaN or infinity)")
        return as_probabilities(probs, self.output_kind, self.path)  # every call: a few operations per row

    def predict(self, image_bgr: np.ndarray) -> Prediction:
        """Classify one BGR image (any size; grey, alpha and 16-bit are converted first)."""
        return self.predict_batch([image_bgr])[0]

    def classify_arrays(self, batch_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(probabilities [N, classes], unknown scores [N] or None) for preprocessed RGB uint8
        images, in one inference call; the scores only when the rule uses them."""
        if self.unknown_output is None or self.unknown_rule.threshold is None:
            return self.predict_arrays(batch_rgb), None
        if self.max_batch == 1 and len(batch_rgb) > 1:
            parts = [self.classify_arrays(batch_rgb[i:i + 1]) for i in range(len(batch_rgb))]
            return np.concatenate([p for p, _ in parts]), np.concatenate([s for _, s in parts])
        probs, scores = self.session.run([self.output_name, self.unknown_output],
                                         {self.input_name: batch_rgb.astype(self.input_dtype, copy=False)})
        if scores.shape != (len(batch_rgb),) or not np.isfinite(scores).all():
            raise EdgeclfError(f"{self.path}: model gave unknown scores of shape {list(scores.shape)} (or not finite) "
                               f"for {len(batch_rgb)} image(s)")
        return self._checked(probs, len(batch_rgb)), scores

    def predict_batch(self, images_bgr: Sequence[np.ndarray]) -> list[Prediction]:
        """Classify several BGR images in one inference call."""
        if len(images_bgr) == 0:
            return []
        batch = np.stack([self.preprocess(to_bgr8(img)) for img in images_bgr])
        return self.predictions(*self.classify_arrays(batch))

    def predictions(self, probs: np.ndarray, scores: np.ndarray | None = None) -> list[Prediction]:
        """``Prediction`` objects for rows of probabilities (and unknown scores) from ``classify_arrays``."""
        if scores is None:
            return [Prediction.from_probs(p, self.class_names, rule=self.unknown_rule) for p in probs]
        return [Prediction.from_probs(p, self.class_names, s, self.unknown_rule) for p, s in zip(probs, scores)]
