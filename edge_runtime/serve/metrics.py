"""``/metrics``: a device's figures in Prometheus' text format (prometheus-client, with a registry
of its own: the process-wide default would mix in whatever else registered there, and two servers
in one process would collide).

The inference loop calls ``ServiceMetrics``' methods once per frame or event: each is a few dict
look-ups and additions under a lock, no I/O. What depends on "now" (frames per second, the time
spent in the current state) and the publishers' counters are read when Prometheus scrapes, by a
custom collector. Labels are the user's source and publisher names only: never stream URLs (they
may hold passwords) or file paths (one label set per photo would grow without bound).
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from edgeclf import __version__
from edgeclf.sinks.rate import FrameRate

#: The exposition format ``render`` writes (the classic text format every Prometheus reads).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Inference latency buckets (seconds): 1 ms to 200 ms, where a device's models fall, and beyond.
LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.5, 1.0)
#: The most distinct source names kept; more (a bug, or names from the network) count as "other".
MAX_SOURCES = 256
#: A publisher's counters: stats key -> metric name.
PUBLISHER_COUNTERS = {
    "sent": "edgeclf_events_sent", "dropped": "edgeclf_events_dropped", "failed": "edgeclf_events_failed",
    "reconnects": "edgeclf_publisher_reconnects",
}

Stats = Mapping[str, float] | Callable[[], Mapping[str, float]]


class ServiceMetrics:
    """A device's metrics: call ``frame``, ``unknown``, ``state_change``, ``source_up``,
    ``source_reconnect`` as things happen and ``watch_publisher`` once per publisher; ``render()``
    is the ``/metrics`` page. Thread-safe."""

    content_type = CONTENT_TYPE

    def __init__(self, model: str = "", version: str = __version__) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._frames = Counter("edgeclf_frames", "Frames classified", ["source"], registry=r)
        self._latency = Histogram("edgeclf_inference_seconds", "Inference latency per frame (preprocessing included)",
                                  ["source"], buckets=LATENCY_BUCKETS, registry=r)
        self._unknown = Counter("edgeclf_unknown", "Frames labelled unknown", ["source"], registry=r)
        self._changes = Counter("edgeclf_state_changes", "Changes of a source's state", ["source"], registry=r)
        self._up = Gauge("edgeclf_source_up", "1 while the source delivers frames, else 0", ["source"], registry=r)
        self._reconnects = Counter("edgeclf_source_reconnects", "Reconnections of a source", ["source"], registry=r)
        Info("edgeclf", "The model served and edgeclf's version", registry=r).info({"model": model, "version": version})
        self._lock = threading.Lock()
        self._children: dict[str, tuple] = {}  # source -> (frames, latency) children: labels() once per source
        self._rates: dict[str, FrameRate] = {}
        self._states: dict[str, tuple[str, float]] = {}  # source -> (state, since: monotonic)
        self._state_totals: dict[tuple[str, str], float] = {}
        self._publishers: dict[str, Stats] = {}
        r.register(_ScrapeTime(self))

    # ------------------------------------------------------------ from the inference loop
    def _name(self, source: str) -> str:
        """``source``, or "other" beyond ``MAX_SOURCES`` names (caller holds the lock)."""
        if source in self._rates or len(self._rates) < MAX_SOURCES:
            return source
        return "other"

    def frame(self, source: str, latency_s: float) -> None:
        """One frame of ``source`` classified in ``latency_s`` seconds."""
        with self._lock:
            source = self._name(source)
            children = self._children.get(source)
            if children is None:
                children = self._children[source] = (self._frames.labels(source), self._latency.labels(source))
                self._rates[source] = FrameRate()
            self._rates[source].tick()
        children[0].inc()
        children[1].observe(max(0.0, latency_s))

    def unknown(self, source: str) -> None:
        """One frame of ``source`` labelled unknown."""
        self._unknown.labels(source).inc()

    def state_change(self, source: str, new: str, at: float | None = None) -> None:
        """``source`` entered state ``new`` at ``at`` (``time.monotonic()`` or ``time.time()``
        seconds; None: now). The first state of a source is not counted as a change, nor a
        "change" to the state it is in."""
        now = time.monotonic()
        at = now if at is None else _monotonic(at, now)
        with self._lock:
            old = self._states.get(source)
            if old is not None and old[0] == new:
                return
            if old is not None:
                key = (source, old[0])
                self._state_totals[key] = self._state_totals.get(key, 0.0) + max(0.0, at - old[1])
            self._states[source] = (new, at)
        if old is not None:
            self._changes.labels(source).inc()

    def source_up(self, source: str, up: bool) -> None:
        self._up.labels(source).set(1 if up else 0)

    def source_reconnect(self, source: str) -> None:
        self._reconnects.labels(source).inc()

    def watch_publisher(self, name: str, stats: Stats) -> None:
        """Report publisher ``name``'s counters (keys sent, dropped, failed, reconnects; missing
        ones are 0), read from ``stats`` (a dict it keeps current, or a function returning one)
        at every scrape."""
        with self._lock:
            self._publishers[name] = stats

    # ------------------------------------------------------------------- at scrape time
    def render(self) -> bytes:
        """The ``/metrics`` page (``CONTENT_TYPE``)."""
        return generate_latest(self.registry)

    def fps(self) -> dict[str, float]:
        with self._lock:
            return {s: r.value() for s, r in self._rates.items()}

    def state_seconds(self) -> dict[tuple[str, str], float]:
        """Seconds each source has spent in each state, the current one up to now."""
        now = time.monotonic()
        with self._lock:
            totals = dict(self._state_totals)
            for source, (state, since) in self._states.items():
                totals[(source, state)] = totals.get((source, state), 0.0) + max(0.0, now - since)
        return totals

    def publishers(self) -> dict[str, Mapping[str, float]]:
        with self._lock:
            watched = dict(self._publishers)
        return {name: dict(stats() if callable(stats) else stats) for name, stats in watched.items()}


def _monotonic(at: float, now: float) -> float:
    """``at`` on the monotonic clock: a wall-clock time (``time.time()``) is converted."""
    wall = time.time()
    return now - (wall - at) if abs(wall - at) < abs(now - at) else at


class _ScrapeTime:
    """The figures computed when scraped: frames per second, time per state, publishers' counters."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Metric]:
        return []  # nothing to check for name clashes up front: the names are fixed and distinct

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        fps = GaugeMetricFamily("edgeclf_fps", "Frames classified per second, over the last second", labels=["source"])
        for source, value in sorted(m.fps().items()):
            fps.add_metric([source], value)
        yield fps
        seconds = CounterMetricFamily("edgeclf_state_seconds", "Seconds spent in each state", labels=["source", "state"])
        for (source, state), value in sorted(m.state_seconds().items()):
            seconds.add_metric([source, state], value)
        yield seconds
        families = {key: CounterMetricFamily(name, f"Publisher's {key} count", labels=["publisher"])
                    for key, name in PUBLISHER_COUNTERS.items()}
        for name, stats in sorted(m.publishers().items()):
            for key, family in families.items():
                value = stats.get(key, 0)
                family.add_metric([name], float(value) if isinstance(value, (int, float)) else 0.0)
        yield from families.values()
