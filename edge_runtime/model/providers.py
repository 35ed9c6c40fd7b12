"""Which onnxruntime execution providers to ask for, and with which options.

Pure logic over a list of provider names, so it is tested with faked lists on machines without a
GPU. ``Classifier`` passes ``onnxruntime.get_available_providers()`` in.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from importlib import metadata as dist_metadata
from pathlib import Path
from typing import Sequence

from edgeclf.errors import EdgeclfError

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"

#: What ``--provider`` accepts, and the onnxruntime provider each short name means.
PROVIDERS = {"cpu": CPU, "cuda": CUDA, "tensorrt": TENSORRT}
CHOICES = ("auto", *PROVIDERS)
#: ``auto`` prefers the fastest provider that is installed.
AUTO_ORDER = (TENSORRT, CUDA, CPU)
#: The providers that run the model on a GPU (what picks an export's fp16 model, and drops bench's CPU figures).
GPU_PROVIDERS = (TENSORRT, CUDA)


@dataclass
class ProviderPlan:
    """The providers to pass to ``InferenceSession`` (in priority order, with options) and the
    warning to show when what was asked for is not what will run."""

    providers: list[tuple[str, dict]]
    warning: str | None = None
    names: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.names = [name for name, _ in self.providers]


def cpu_session_config(spin: bool = False) -> dict[str, str]:
    """onnxruntime session config entries for the CPU thread pool.

    Worker threads do not busy-wait unless ``spin``: on a device the classifier shares the cores
    with capture/decoding/serving, and spinning workers steal their CPU (and, preempted, stretch
    the tail). Evidence: benchmarks/results/ort_session.md (spinning variants, idle and beside a
    video-decoding co-tenant, on the default int8 model).
    """
    return {} if spin else {"session.intra_op.allow_spinning": "0"}


def tensorrt_cache_dir(model_path: str | os.PathLike) -> Path:
    """TensorRT engine cache folder next to the model: engines take minutes to build on a Jetson,
    so they are kept and reused across runs (TensorRT rebuilds only when the model changes)."""
    model_path = Path(model_path)
    return model_path.parent / f"{model_path.stem}.trt_cache"


def provider_options(name: str, model_path: str | os.PathLike, device_id: int = 0, fp16: bool = True) -> dict:
    """onnxruntime options for one provider."""
    if name == TENSORRT:
        cache = tensorrt_cache_dir(model_path)
        return {
            "device_id": device_id,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(cache),
            # onnxruntime falls back to FP32 by itself where the GPU has no fast FP16.
            "trt_fp16_enable": fp16,
        }
    if name == CUDA:
        return {"device_id": device_id}
    return {}


def plan_providers(
    requested: str,
    available: Sequence[str],
    model_path: str | os.PathLike = "model.onnx",
    device_id: int = 0,
    fp16: bool = True,
    strict: bool = False,
) -> ProviderPlan:
    """Providers for ``requested`` ("auto", "cpu", "cuda" or "tensorrt") given the ``available`` ones.

    A provider that was asked for but is missing gives a warning and CPU (``strict``: an error).
    GPU providers are followed by the ones below them, so onnxruntime can place the nodes a GPU
    provider cannot run (TensorRT -> CUDA -> CPU).
    """
    requested = requested.lower()
    if requested not in CHOICES:
        raise EdgeclfError(f"unknown provider {requested!r} (choose from {', '.join(CHOICES)})")
    available = list(available)
    warning = None
    if requested == "auto":
        chosen = [p for p in AUTO_ORDER if p in available]
        clash = install_clash() if chosen == [CPU] else ""
        if clash:  # a GPU was meant, and the CPU would run without a word
            warning = f"provider 'auto': no GPU provider in this onnxruntime{clash}; running on cpu"
    else:
        wanted = PROVIDERS[requested]
        if wanted in available:
            chosen = [p for p in AUTO_ORDER[AUTO_ORDER.index(wanted):] if p in available]
        else:
            short = {v: k for k, v in PROVIDERS.items()}
            have = ", ".join(short.get(p, p) for p in available if p in short) or "none"
            msg = f"provider {requested!r} is not available in this onnxruntime (available: {have}){install_clash()}"
            if strict:
                raise EdgeclfError(msg)
            warning = f"{msg}; falling back to cpu"
            chosen = []
    if CPU not in chosen:
        chosen.append(CPU)  # onnxruntime always has it, even if a build forgets to list it
    return ProviderPlan([(p, provider_options(p, model_path, device_id, fp16)) for p in chosen], warning)


def plans_gpu(requested: str, available: Sequence[str]) -> bool:
    """True when ``requested`` ("auto", "cuda", ...) with these ``available`` providers puts a GPU
    provider first: the device ``predict`` chooses an export folder's model file for. Whether the
    GPU then starts is known only once a session opens (``start_problems``)."""
    return plan_providers(requested, available).names[0] in GPU_PROVIDERS


def start_problems(requested: str, planned: Sequence[str], started: Sequence[str], log: str = "") -> tuple[str | None, str | None]:
    """``(warning, note)`` on the GPU providers ``planned`` that did not start (no GPU, missing
    CUDA/cuDNN/TensorRT libraries), given what the session ``started`` and onnxruntime's ``log``.

    A warning (``strict``: an error) when the provider asked for by name did not start, or when
    ``auto`` ends on the CPU. Only a note when ``auto`` runs on another GPU provider: auto means
    the fastest that works, so TensorRT listed by the package but without its libraries is no
    news on every run while CUDA runs (``bench`` shows the note; the summary names what ran)."""
    failed = [p for p in planned if p != CPU and p not in started]
    if not failed:
        return None, None
    wanted = PROVIDERS.get(requested.lower())
    named = [p for p in failed if p == wanted] if wanted is not None else failed
    msg = (f"provider {requested!r}: {', '.join(short_names(named or failed))} failed to start"
           f"{failure_hint(log)}; running on {', '.join(short_names(started))}")
    if named and (wanted is not None or not started or started[0] == CPU):
        return msg, None
    return None, msg


def short_names(providers: Sequence[str]) -> list[str]:
    """``["CUDAExecutionProvider", "CPUExecutionProvider"]`` -> ``["cuda", "cpu"]`` for messages."""
    short = {v: k for k, v in PROVIDERS.items()}
    return [short.get(p, p.removesuffix("ExecutionProvider").lower()) for p in providers]


def failure_hint(log: str) -> str:
    """A few words on why a GPU provider failed, from onnxruntime's own log lines (which edgeclf
    keeps off the terminal): the libraries it wants, e.g. " (needs cuDNN 9.* and CUDA 13.*)"."""
    needs = []
    if "TensorRT libraries" in log:
        needs.append("TensorRT")
    found = re.search(r"Require ([^.]*\.\*[^.]*?\.\*)", log)
    if found:
        needs.append(found.group(1))
    return f" (needs {' and '.join(needs)})" if needs else ""


#: The GPU build's distribution, which ships the same ``onnxruntime`` package folder as the CPU one.
GPU_DISTRIBUTION = "onnxruntime-gpu"
#: The one command that leaves only the GPU build (uninstalling either removes the files both share).
GPU_REINSTALL = f"pip uninstall -y onnxruntime && pip install --force-reinstall --no-deps {GPU_DISTRIBUTION}"


def install_clash() -> str:
    """Why a GPU provider is missing when both ``onnxruntime`` and ``onnxruntime-gpu`` are installed,
    with the fix (": both ... installed ..."), else "". pip puts both in one folder, and the CPU
    build's files win when it is installed last, as ``pip install edgeclf[gpu]`` does (onnxruntime
    is a base dependency)."""
    if not all(_installed(name) for name in ("onnxruntime", GPU_DISTRIBUTION)):
        return ""
    return (f": both onnxruntime (CPU) and {GPU_DISTRIBUTION} are installed and share one folder, so the GPU "
            f"build is shadowed; keep only the GPU one: {GPU_REINSTALL}")


def _installed(name: str) -> bool:
    try:
        dist_metadata.distribution(name)
    except dist_metadata.PackageNotFoundError:
        return False
    return True
