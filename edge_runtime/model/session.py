"""The one place edgeclf opens an onnxruntime session: the runtime, the export's checks and the
benchmarks all get the same defaults from here (every graph optimisation, the classifier's thread
count, no busy-waiting workers, onnxruntime's own log kept to errors)."""

from __future__ import annotations

import os
import threading
from typing import Any, Callable, Mapping, Sequence

import onnxruntime as ort

from edgeclf.errors import EdgeclfError, first_line
from edgeclf.model import providers as prov, threads as thr

# onnxruntime's process-wide logger, beside each session's own level: graph-level warnings (an
# initializer left unused by the outputs asked for) come through it, and a session opened lazily
# mid-stream (``LazySession``) cannot capture them without silencing the other threads' output.
ort.set_default_logger_severity(3)


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


class LazySession:
    """A session opened on its first use: the arms the adaptive classifier may never try (a
    one-image ``predict`` tries none) cost the start-up nothing. The first call of an arm is left
    out of its timing anyway (``adaptive.AdaptiveSession``), and it is the one that opens it."""

    def __init__(self, opener: Callable[[], Any]) -> None:
        self._opener = opener
        self._session: Any = None
        self._lock = threading.Lock()

    @property
    def opened(self) -> bool:
        return self._session is not None

    def __getattr__(self, name: str) -> Any:  # run, get_inputs, get_session_options, ...
        if name.startswith("_"):
            raise AttributeError(name)
        if self._session is None:
            with self._lock:
                if self._session is None:
                    self._session = self._opener()
        return getattr(self._session, name)


def lazy_session(model: str | os.PathLike, threads: int, providers: Sequence[str | tuple[str, dict]],
                 config: Mapping[str, str]) -> LazySession:
    """``open_session(model, threads, spin=True, ...)`` on first use; its failure then (the file
    opened once already: low memory, the file replaced) is a one-line ``EdgeclfError``."""
    def opener() -> ort.InferenceSession:
        try:
            return open_session(model, threads, spin=True, providers=providers, config=config)
        except Exception as e:  # onnxruntime raises several types
            raise EdgeclfError(f"{model}: cannot open another session ({first_line(e)})") from None
    return LazySession(opener)
