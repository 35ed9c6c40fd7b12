"""``edgeclf serve CONFIG.toml``: one model, one inference session, several sources, and the world told
when a source's state changes.

Each source has a reader thread (``workers``) that leaves its newest preprocessed frame in a slot;
the inference loop takes every waiting frame, one per source, and classifies them in one call
(batching across sources, when the service has measured that it pays: ``service/batching``), then each
frame goes through its source's smoothing, unknown rule and debounce (``state``). A state change
is handed to every publisher (MQTT, webhooks: ``edgeclf.comms``), which never block the loop. The
live server (``edgeclf.serve``) answers the HTTP API; systemd hears READY=1 once the sources are
open and WATCHDOG=1 only while no source that claims to be connected has gone silent.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import cv2
import numpy as np
import onnxruntime as ort

from edgeclf import __version__
from edgeclf.comms.base import Publisher, StateEvent
from edgeclf.errors import EdgeclfError, safe_text
from edgeclf.model import threads as thr
from edgeclf.model.classifier import Classifier, Prediction
from edgeclf.model.locate import Located, exported_model
from edgeclf.model.providers import CPU, plans_gpu
from edgeclf.model.unknown import UnknownRule
from edgeclf.serve.address import parse_address
from edgeclf.serve.metrics import ServiceMetrics
from edgeclf.service.batching import BatchChooser
from edgeclf.service.config import ConfigError, ServiceConfig, SourceConfig
from edgeclf.service.systemd import Notifier
from edgeclf.service.workers import Item, SourceWorker

UNKNOWN = "unknown"


def _log(msg: str) -> None:
    print(f"edgeclf serve: {safe_text(msg)}", file=sys.stderr, flush=True)


@dataclass
class ServiceStats:
    """What a run did, for the summary line and for tests."""

    frames: int = 0
    calls: int = 0
    changes: list[StateEvent] = field(default_factory=list)
    seconds: float = 0.0


class Service:
    """The service of one config. ``start()`` loads the model, opens the sources and the ways out;
    ``run()`` classifies until ``stop()`` (or SIGTERM/SIGINT with ``run_forever``); ``close()``."""

    def __init__(self, cfg: ServiceConfig, *, log: Callable[[str], None] = _log,
                 publishers: list[Publisher] | None = None, notifier: Notifier | None = None) -> None:
        self.cfg, self.log = cfg, log
        self.publishers = publishers if publishers is not None else []
        self.notifier = notifier or Notifier.from_env()
        self.stop_event = threading.Event()
        self.cond = threading.Condition()
        self.workers: list[SourceWorker] = []
        self.clf: Classifier | None = None
        self.metrics: ServiceMetrics | None = None
        self.server: Any = None
        self.stats = ServiceStats()
        self.started_at = time.monotonic()
        self._next = 0  # the source the next batch starts with: no source is always last
        self.chooser = BatchChooser(cfg.batch)
        self._closed = False

    # ------------------------------------------------------------------ start
    def start(self, ready_timeout: float | None = None) -> "Service":
        """Load the model, start every source's reader, the publishers and the server; then READY=1
        once every source has been opened (or has failed to: it is retried in the background)."""
        self.notifier.status("loading the model")
        self.clf = open_model(self.cfg, self.log)
        self.metrics = ServiceMetrics(model=self.clf.path.name)
        for s in self.cfg.sources:
            self.workers.append(SourceWorker(s, self.clf, self._rule(s), self.cond, self.stop_event, self.log,
                                             self.metrics.source_up, self.metrics.source_reconnect))
        names = [w.name for w in self.workers]
        for pub in self.publishers:
            self.metrics.watch_publisher(pub.name, pub.stats)
            pub.start(names)
        if self.cfg.server is not None:
            self.server = self._start_server()
        for w in self.workers:
            w.start()
        wait = ready_timeout if ready_timeout is not None else max(s.timeout for s in self.cfg.sources) + 1
        deadline = time.monotonic() + wait
        for w in self.workers:  # in short waits: SIGTERM while a camera is opening ends the service at once
            while not (w.opened.is_set() or self.stop_event.is_set()) and time.monotonic() < deadline:
                w.opened.wait(min(0.1, max(0.0, deadline - time.monotonic())))
        if self.stop_event.is_set():
            return self
        up = sum(w.state == "connected" for w in self.workers)
        self.notifier.ready(f"{up} of {len(self.workers)} sources open")
        self.log(f"{self.clf.path.name} on {len(self.workers)} source(s), {up} open"
                 + (f"; HTTP API at {self.server.url}" if self.server is not None else ""))
        if self.server is not None and self.server.auth.required:
            where = (f"the file {self.server.token_file}" if self.server.token_file else
                     self.cfg.server.token_from or "$EDGECLF_TOKEN")
            self.log(f"the HTTP API needs its token, which is in {where} ('Authorization: Bearer <token>', "
                     f"or open {self.server.url}?token=<token> once in a browser)")
        return self

    def _rule(self, s: SourceConfig) -> UnknownRule:
        return source_rule(self.clf, self.cfg, s)

    def _start_server(self) -> Any:
        from edgeclf.model.providers import short_names
        from edgeclf.serve.server import LiveServer

        srv, clf = self.cfg.server, self.clf
        shown = srv.show or self.workers[0].name
        worker = next(w for w in self.workers if w.name == shown)
        info = {"model": clf.path.name, "precision": clf.metadata.get("precision", "fp32"),
                "providers": short_names(clf.providers), "classes": clf.class_names, "source": worker.shown_uri,
                "source_kind": "service", "bars": min(5, len(clf.class_names))}
        check_listen(self.cfg)  # as --check says it, naming the config's key
        server = LiveServer(srv.listen, info=info, top=3, source_state=lambda: worker.source_state,
                            allow_hosts=srv.allow_hosts, token=srv.token, classifier=clf,
                            max_upload_bytes=int(srv.max_upload_mb * 2**20), states=self.states,
                            health_check=self.problems, metrics=self.metrics, source_name=shown)
        self._shown = worker
        return server.start()

    # ------------------------------------------------------------------ the loop
    def run(self, until: Callable[[], bool] | None = None) -> ServiceStats:
        """Classify until ``stop()``, ``until()`` is true, or every source has ended."""
        pet_every = self.notifier.watchdog_interval()
        next_pet = time.monotonic()
        t0 = time.monotonic()
        while not self.stop_event.is_set() and not (until is not None and until()):
            items = self._take(timeout=0.1)
            if items:
                self._classify(items)
            now = time.monotonic()
            if pet_every is not None and now >= next_pet:
                if not any(w.stalled(now) for w in self.workers):
                    self.notifier.watchdog()
                next_pet = now + pet_every
            if not items and all(w.state == "ended" for w in self.workers):
                break
        self.stats.seconds = time.monotonic() - t0
        return self.stats

    def _take(self, timeout: float) -> list[tuple[SourceWorker, Item]]:
        """Every waiting frame, one per source, starting with the source after the last batch's first."""
        with self.cond:
            if not any(w.slot is not None for w in self.workers):
                self.cond.wait(timeout)
            n = len(self.workers)
            order = [self.workers[(self._next + i) % n] for i in range(n)]
            items = [(w, w.slot) for w in order if w.slot is not None]
            for w, _ in items:
                w.slot = None
            if items:
                self._next = (self._next + 1) % n
                self.cond.notify_all()  # file readers waiting for their slot
        return items  # type: ignore[return-value]

    def _classify(self, items: list[tuple[SourceWorker, Item]]) -> None:
        batched = self.chooser.batched(len(items))
        groups = [items] if batched else [[it] for it in items]
        infer_s = 0.0
        for group in groups:
            t0 = time.perf_counter()
            probs, scores = self.clf.classify_arrays(np.stack([it.tensor for _, it in group]))
            took = time.perf_counter() - t0
            infer_s += took
            self.stats.calls += 1
            for i, (w, it) in enumerate(group):
                self._one(w, it, probs[i], None if scores is None else scores[i], took / len(group))
        if self.chooser.record(batched, len(items), infer_s) is not None:
            self.log(self.chooser.describe())

    def _one(self, w: SourceWorker, it: Item, probs: np.ndarray, score: float | None, share_s: float) -> None:
        """One classified frame of source ``w``: smoothing, the unknown rule, the debounce, events."""
        if w.smoother is not None:
            probs, score = w.smoother(probs, score)
        pred = Prediction.from_probs(probs, self.clf.class_names, score, w.rule)
        now = time.monotonic()
        w.last_frame, w.frames = now, w.frames + 1
        self.stats.frames += 1
        latency_s = it.prep_ms / 1000 + share_s
        self.metrics.frame(w.name, latency_s)
        if pred.unknown:
            self.metrics.unknown(w.name)
        wall = time.time() - (now - it.frame.captured_at)  # when the frame was captured, on the wall clock
        change = w.debouncer.update(UNKNOWN if pred.unknown else pred.label, pred.score, wall)
        if change is not None:
            self._changed(w, it, pred, change)
        if self.server is not None and w is self._shown:
            self.server.publish(it.frame.image, pred, w.name, it.frame.index, latency_s * 1000)

    def _changed(self, w: SourceWorker, it: Item, pred: Prediction, change) -> None:  # noqa: ANN001 (state.Change)
        snapshot = None
        if w.cfg.snapshot or any(p.wants_snapshots for p in self.publishers):
            ok, buf = cv2.imencode(".jpg", it.frame.image, [cv2.IMWRITE_JPEG_QUALITY, 85])
            snapshot = buf.tobytes() if ok else None
        event = StateEvent(source=w.name, label=change.label, score=change.score, time=change.at, model=self.clf.path.name,
                           unknown=pred.unknown, previous=change.previous, frame=it.frame.index, snapshot=snapshot,
                           share_snapshot=w.cfg.snapshot)
        for pub in self.publishers:
            pub.publish(event)
        self.metrics.state_change(w.name, change.label, change.at)
        self.stats.changes.append(event)
        was = f" (was {change.previous})" if change.previous is not None else ""
        self.log(f"{w.name}: {change.label} {change.score:.2f}{was}")

    # ------------------------------------------------------------------ the API's side
    def states(self) -> dict[str, Any]:
        """Every source's current state, for ``GET /api/state``."""
        now_m, now_w = time.monotonic(), time.time()
        out = {}
        for w in self.workers:
            d = w.debouncer
            out[w.name] = {
                "state": d.state, "score": round(d.score, 4) if d.state is not None else None,
                "since": None if d.since is None else dt.datetime.fromtimestamp(d.since, dt.timezone.utc).isoformat(timespec="milliseconds"),
                "since_s": None if d.since is None else round(now_w - d.since, 3),
                "source_state": w.source_state, "uri": w.shown_uri, "frames": w.frames, "dropped": w.dropped,
                "last_frame_age_s": None if w.last_frame is None else round(now_m - w.last_frame, 3),
                "error": w.error,
            }
        return {"model": self.clf.path.name if self.clf else None, "version": __version__,
                "uptime_s": round(now_m - self.started_at, 3), "sources": out}

    def problems(self) -> list[str]:
        """Why the service is unhealthy (empty: it is not), for ``GET /healthz``."""
        now = time.monotonic()
        return [p for w in self.workers if (p := w.problem(now)) is not None]

    # ------------------------------------------------------------------ stopping
    def stop(self) -> None:
        """Ask the loop to end (safe from a signal handler: sets an event only)."""
        self.stop_event.set()

    def close(self, timeout: float = 0.8) -> None:
        """Say goodbye within ``timeout`` seconds: STOPPING=1, every publisher closed (MQTT ``offline``),
        the sources and the server released, in parallel so one slow peer does not hold the others."""
        if self._closed:
            return
        self._closed = True
        self.stop_event.set()
        self.notifier.stopping()
        with self.cond:
            self.cond.notify_all()
        deadline = time.monotonic() + timeout
        closers = [threading.Thread(target=p.close, args=(timeout * 0.75,), daemon=True) for p in self.publishers]
        closers += [threading.Thread(target=w.close, daemon=True) for w in self.workers]
        if self.server is not None:
            closers.append(threading.Thread(target=self.server.close, daemon=True))
        for t in closers:
            t.start()
        for t in closers:
            t.join(max(0.0, deadline - time.monotonic()))
        self.notifier.close()


def service_model(cfg: ServiceConfig) -> Located:
    """The file and engine the service runs (and ``--check`` checks): the export's file for the
    device the provider plan puts first, on the engine ``bench --engines`` recorded for this machine."""
    gpu = plans_gpu(cfg.provider, ort.get_available_providers())
    return exported_model(cfg.model, gpu=gpu, needs_unknown=any(s.unknown for s in cfg.sources))


def open_model(cfg: ServiceConfig, log: Callable[[str], None], threads: int | None = None) -> Classifier:
    """The classifier the service runs (``service_model``'s file, saying why where it was chosen);
    where that file was chosen for a GPU that then did not start, the CPU's file and engine."""
    found = service_model(cfg)
    if found.found and found.why:
        log(f"running {found.path}: {found.why}")
    clf = service_classifier(cfg, found, threads)
    if found.found and clf.providers[0] == CPU and plans_gpu(cfg.provider, ort.get_available_providers()):
        cpu = exported_model(cfg.model, gpu=False, needs_unknown=any(s.unknown for s in cfg.sources))
        if (cpu.path, cpu.engine) != (found.path, found.engine):
            log(f"running {cpu.path} instead: no GPU provider started" + (f"; {cpu.why}" if cpu.why else ""))
            clf = service_classifier(dataclasses.replace(cfg, provider="cpu"), cpu, threads)
    return clf


def service_classifier(cfg: ServiceConfig, found: Located, threads: int | None = None) -> Classifier:
    """The classifier on ``found``: ``threads``, else the config's, else the engine record's. The
    config's ``threads`` is checked against this machine's cores (by ``--check`` too)."""
    if cfg.threads is not None:
        try:
            thr.check_threads(cfg.threads)
        except EdgeclfError as e:
            raise ConfigError(f"{safe_text(cfg.path)}: threads: {str(e).removeprefix(f'--threads {cfg.threads}: ')}") from None
    threads = threads or (cfg.threads if cfg.threads is not None else found.threads)
    return Classifier(found.path, provider=cfg.provider, threads=threads, spin=False,
                      engine="openvino" if found.engine == "openvino" else "onnxruntime")


def check_listen(cfg: ServiceConfig) -> None:
    """``server.listen``'s host resolves here (``--check``; the service binds it when it starts)."""
    if cfg.server is None:
        return
    host, port = parse_address(cfg.server.listen)
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise ConfigError(f"{safe_text(cfg.path)}: server: listen {safe_text(cfg.server.listen)!r}: cannot resolve host "
                          f"{safe_text(host)!r} ({getattr(e, 'strerror', None) or e})") from None


def source_rule(clf: Classifier, cfg: ServiceConfig, s: SourceConfig) -> UnknownRule:
    """Source ``s``'s unknown rule, checked against the model; errors name the config and the source."""
    return clf.rule_for(enabled=s.unknown, threshold=s.unknown_threshold, class_thresholds=s.class_thresholds,
                        where=f"{cfg.path}: source {s.name!r}")


def run_forever(service: Service) -> ServiceStats:
    """Run ``service`` until SIGTERM or SIGINT, then close it (within a second)."""
    def handler(signum, frame) -> None:  # noqa: ANN001
        service.stop()

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        service.start()
        return service.run()
    finally:
        service.close()
        for s, h in old.items():
            signal.signal(s, h)


def publishers_for(cfg: ServiceConfig, model: str, log: Callable[[str], None] = _log) -> list[Publisher]:
    """The ways out the config names: MQTT (one broker) and any number of webhooks."""
    from edgeclf.comms.mqtt import MqttPublisher
    from edgeclf.comms.webhook import WebhookPublisher

    pubs: list[Publisher] = []
    if cfg.mqtt is not None:
        pubs.append(MqttPublisher(cfg.mqtt, model=model, log=log))
    hooks = [WebhookPublisher(w, log=log) for w in cfg.webhooks]
    if len(hooks) > 1:
        for i, hook in enumerate(hooks, 1):
            hook.name = f"webhook{i}"
    return pubs + hooks
