"""What ``edgeclf predict`` does before its first frame: choose the model file (an export folder's
fp16 model where a GPU runs it), then load the classifier and warm it up.

The warm-up is one inference on a blank image: a session's first run is its slowest (a GPU
provider picks its kernels there: seconds for fp16 on CUDA), and it belongs to the start-up the
summary reports apart, not to the first frame's latency or to the frames per second.
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np

from edgeclf.errors import safe_text
from edgeclf.model import litert
from edgeclf.model.classifier import Classifier
from edgeclf.model.locate import exported_model
from edgeclf.model.providers import CPU, plans_gpu
from edgeclf.predict.options import PredictOptions


def _available_providers() -> list[str]:
    import onnxruntime as ort  # here: a .tflite model runs without it

    return ort.get_available_providers()


def _say(text: str) -> None:
    print(f"edgeclf: {text}", file=sys.stderr)


def choose_model(opts: PredictOptions) -> tuple[PredictOptions, bool]:
    """``opts`` with the model file to run, and whether it was chosen for a GPU. A file named is
    run as given; a run or export folder (or a ``.keras`` file) gives its export's file for the
    device the provider plan puts first (fp16 on a GPU, int8 on the CPU) and the engine
    (``--engine``: on the CPU ``auto`` follows ``bench --engines``' record), said in one line."""
    # LiteRT and OpenVINO run on the CPU: only onnxruntime's plan can put a GPU first
    gpu = (opts.engine in ("auto", "onnxruntime") and not litert.is_tflite(opts.model)
           and plans_gpu(opts.provider, _available_providers()))
    found = exported_model(opts.model, gpu=gpu, engine=opts.engine, needs_unknown=opts.unknown)
    if not found.found:
        return dataclasses.replace(opts, engine=found.engine), False
    _say(f"running {safe_text(str(found.path))}" + (f": {found.why}" if found.why else ""))
    threads = opts.threads if opts.threads is not None else found.threads
    return dataclasses.replace(opts, model=found.path, threads=threads, engine=found.engine), gpu


def load_classifier(opts: PredictOptions, asked: PredictOptions, for_gpu: bool) -> tuple[Classifier, PredictOptions]:
    """The classifier, warmed up, and the options it runs with. When the file was chosen for a GPU
    that then did not start (the warning said so), the file and engine the CPU would have had for
    what was ``asked`` (``bench --engines``' record included) are loaded instead."""
    clf = _classifier(opts)
    if for_gpu and clf.providers[0] == CPU:
        found = exported_model(asked.model, gpu=False, engine=asked.engine, needs_unknown=asked.unknown)
        threads = asked.threads if asked.threads is not None else found.threads
        if (found.path, found.engine, threads) != (opts.model, opts.engine, opts.threads):
            _say(f"running {safe_text(str(found.path))} instead: no GPU provider started"
                 + (f"; {found.why}" if found.why else ""))
            opts = dataclasses.replace(opts, model=found.path, engine=found.engine, threads=threads)
            opts.validate()  # the outputs against the new input file
            clf = _classifier(dataclasses.replace(opts, provider="cpu"))  # the GPU's failure is said already
    warm_up(clf)
    return clf, opts


def warm_up(clf: Classifier) -> None:
    """One inference on a blank image, so that the first frame runs on a warm session."""
    clf.classify_arrays(np.zeros((1, *clf.size, 3), np.uint8))


def _classifier(opts: PredictOptions) -> Classifier:
    """The model, loaded, once it can take the ``--batch`` asked for."""
    # No workers that busy-wait between frames: they would take the core the reader/capture thread
    # decodes on (measured: int8, 2 threads, video pipeline 690 frames/s without spinning, 525 with).
    # By default the thread count adapts (edgeclf.model.adaptive), judged on a file by the stream's rate.
    clf = Classifier(opts.model, provider=opts.provider, threads=opts.threads, device_id=opts.device_id,
                     strict=opts.strict, spin=False, unknown=opts.unknown, unknown_threshold=opts.unknown_threshold,
                     class_thresholds=opts.class_thresholds,
                     engine="openvino" if opts.engine == "openvino" else "onnxruntime")  # a .tflite file runs on LiteRT
    if opts.batch is not None:
        clf.check_batch(opts.batch)
    return clf
