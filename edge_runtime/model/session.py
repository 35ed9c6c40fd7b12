"""The one place edgeclf opens an onnxruntime session: the runtime, the export's checks and the
benchmarks all get the same defaults from here (every graph optimisation, the classifier's thread
count, no busy-waiting workers, onnxruntime's own log kept to errors)."""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import onnxruntime as ort

from edgeclf.model import providers as prov, threads as thr


def session_options(
    threads: int | None = None,
    spin: bool = False,
    config: Mapping[str, str] | None = None,
    **overrides: Any,
) -> ort.SessionOptions:
    """``SessionOptions`` with edgeclf's defaults.

    ``threads``: intra-op threads (default ``threads.default_threads()``, as ``Classifier``).
    ``spin``: let idle workers busy-wait (see ``providers.cpu_session_config``). ``config``: more
    session config entries, applied after (so overriding) the spinning one. ``overrides``: any
    other ``SessionOptions`` attribute, e.g. ``graph_optimization_level`` or ``enable_profiling``.
    """
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads or thr.default_threads()
    for key, value in {**prov.cpu_session_config(spin), **(config or {})}.items():
        opts.add_session_config_entry(key, value)
    for name, value in overrides.items():
        if not hasattr(opts, name):  # setattr would fail silently on a typo
            raise TypeError(f"onnxruntime SessionOptions has no attribute {name!r}")
        setattr(opts, name, value)
    return opts


def open_session(
    model: str | os.PathLike | bytes,
    threads: int | None = None,
    spin: bool = False,
    providers: Sequence[str | tuple[str, dict]] = (prov.CPU,),
    config: Mapping[str, str] | None = None,
    **overrides: Any,
) -> ort.InferenceSession:
    """An onnxruntime session on ``model`` (a path or the model's bytes) with ``session_options``'
    defaults, on the CPU provider unless ``providers`` says otherwise. Errors are onnxruntime's own:
    callers that take untrusted files turn them into one-line messages (see ``Classifier``)."""
    src = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(src, session_options(threads, spin, config, **overrides), providers=list(providers))
