"""``edgeclf predict MODEL SOURCE --serve [HOST:]PORT``: watch a headless device's predictions in a browser.

One page (``/``) shows the annotated video as MJPEG (``/stream.mjpg``) beside the label, score,
top-K bars, frames per second, model and provider, kept current by server-sent events
(``/events``). Machines read ``/api/prediction`` (the ``--json`` record of the newest frame),
``/api/health``, ``/snapshot.jpg``, ``/api/state``, ``/healthz`` (200 or 503 with the reasons),
``/metrics`` (Prometheus) and ``POST /api/classify`` (an uploaded image's ``--json`` record).
``LiveServer`` holds the newest result; ``handler`` answers the requests, ``fanout`` sends the
streams, ``address`` checks the addresses, ``auth`` the API token, ``api`` classifies uploads,
``metrics`` keeps the figures. ``edgeclf serve`` uses the same server for several sources.

Viewers never slow the inference loop: ``publish`` only swaps a reference, waking nobody. One
fan-out thread encodes the newest result as a JPEG at most
``stream_fps`` times a second (once for all viewers, and only while someone watches) and sends it
with non-blocking writes to every viewer ready for it: a slow viewer skips frames instead of
queueing them, and one that stops reading is dropped after ``send_timeout`` seconds.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import cv2
import numpy as np

from edgeclf.errors import safe_text
from edgeclf.image import fit_within
from edgeclf.model.classifier import Prediction
from edgeclf.serve.address import LOOPBACK, allowed_hosts, parse_address
from edgeclf.serve.api import MAX_UPLOAD_BYTES, ClassifyApi
from edgeclf.serve.auth import TokenCheck, default_state_dir, resolve_token
from edgeclf.serve.fanout import FanOut
from edgeclf.serve.handler import listen
from edgeclf.sinks.annotation import annotate
from edgeclf.sinks.console import record
from edgeclf.sinks.rate import LIVE_LABEL, FrameRate

if TYPE_CHECKING:
    from edgeclf.model.classifier import Classifier
    from edgeclf.serve.metrics import ServiceMetrics


def _log(msg: str) -> None:
    print(f"edgeclf serve: {msg}", file=sys.stderr, flush=True)


class LiveServer:
    """The live view's web server. Create it (binds the port), ``start()`` it, ``publish()`` every
    result from the inference loop, ``close()`` it (also a context manager).

    ``info``: static facts shown on the page and in ``/api/health`` (model, providers, source...).
    ``source_state``: returns the source's state for ``/api/health`` ("connected", "reconnecting",
    "ended"...); ``mark_ended`` overrides it once the loop has finished.

    The API: ``token`` is required of every request (but ``/healthz``) when given, on loopback
    too; when None, a server listening beyond loopback (``exposed``) requires the one
    ``auth.resolve_token`` finds or makes (``$EDGECLF_TOKEN``, else the file ``state_dir/token``:
    ``token_file`` says which), and one on loopback is open. ``classifier``: the model
    ``/api/classify`` uses (None: 404). ``states``: what ``/api/state`` returns (None: the one
    source's newest result, see ``state``). ``health_check``: the reasons ``/healthz`` is
    unhealthy (None: ``default_health``, which allows ``frame_timeout`` seconds between frames of
    a live source). ``metrics``: what ``/metrics`` shows (None: 404). ``source_name``: the one
    source's name in ``/api/state``.
    """

    def __init__(
        self,
        address: str,
        *,
        info: dict[str, Any] | None = None,
        top: int = 3,
        source_state: Callable[[], str] = lambda: "connected",
        stream_fps: float = 25.0,
        max_width: int = 640,
        jpeg_quality: int = 80,
        send_timeout: float = 10.0,
        events_hz: float = 10.0,
        log: Callable[[str], None] = _log,
        allow_hosts: Sequence[str] = (),
        token: str | None = None,
        state_dir: Path | None = None,
        classifier: Classifier | None = None,
        max_upload_bytes: int = MAX_UPLOAD_BYTES,
        states: Callable[[], dict[str, Any]] | None = None,
        health_check: Callable[[], list[str]] | None = None,
        frame_timeout: float = 10.0,
        metrics: ServiceMetrics | None = None,
        source_name: str = "source",
    ) -> None:
        self.host, port = parse_address(address)
        self.token_file: Path | None = None
        self.auth, self.api = TokenCheck(None), ClassifyApi(classifier, max_upload_bytes, max(1, top))
        self.states, self.health_check, self.metrics = states, health_check, metrics
        self.frame_timeout, self.source_name = frame_timeout, source_name
        self.allowed_hosts = allowed_hosts(self.host, allow_hosts)
        self.info, self.top, self.source_state = dict(info or {}), max(1, top), source_state
        self.stream_fps, self.events_hz, self.send_timeout = stream_fps, events_hz, send_timeout
        self.max_width, self.jpeg_quality = max_width, jpeg_quality
        # Request lines and client addresses come from the network: whatever the log, control
        # sequences must not reach the operator's terminal (the standard library's log_message
        # escapes them; edgeclf's replaces it).
        self.log: Callable[[str], None] = lambda msg: log(safe_text(msg))

        self.started_at, self.frames = time.monotonic(), 0
        self._rate, self._lock = FrameRate(), threading.Lock()
        # The newest result, as published: (image, prediction, source, frame, latency_ms, time).
        self._latest: tuple[np.ndarray, Prediction, str, int | None, float, float] | None = None
        self._closed = threading.Event()
        self._ended = False
        #: The open streams and the thread that sends them (the handler hands it its viewers).
        self.fanout = FanOut(self.snapshot, self.status_event, stream_fps=stream_fps, events_hz=events_hz,
                             send_timeout=send_timeout, log=self.log)
        self._httpd = listen(self, address, self.host, port)
        if token is not None or self.exposed:  # after binding: no token file for a server that cannot start
            self._require_token(token, state_dir)
        self.port = self._httpd.server_address[1]
        self._threads: list[threading.Thread] = []

    def _require_token(self, token: str | None, state_dir: Path | None) -> None:
        try:
            token, self.token_file = resolve_token(token, state_dir or default_state_dir())
        except BaseException:
            self._httpd.server_close()
            raise
        self.auth = TokenCheck(token)

    # ------------------------------------------------------------------ life cycle
    @property
    def url(self) -> str:
        host = self.host
        if host in ("0.0.0.0", "::", ""):
            host = socket.gethostname()
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.port}/"

    @property
    def exposed(self) -> bool:
        """True when the address reaches beyond this machine (anything but loopback)."""
        return self.host not in LOOPBACK and not self.host.startswith("127.")

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def start(self) -> "LiveServer":
        for target, name in ((self._serve, "http"), (self.fanout.run, "fan-out")):
            t = threading.Thread(target=target, name=f"edgeclf serve {name}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _serve(self) -> None:
        self._httpd.serve_forever(poll_interval=0.2)

    def close(self) -> None:
        """Stop serving, end every stream and release the port."""
        if self._closed.is_set():
            return
        self._closed.set()
        self.fanout.stop()
        if self._threads:
            self._httpd.shutdown()
        self._httpd.server_close()
        for t in self._threads:
            t.join(timeout=2)
        self.fanout.end_streams()

    def __enter__(self) -> "LiveServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ the inference side
    def publish(self, image_bgr: np.ndarray, prediction: Prediction, source: str = "", frame: int | None = None,
                latency_ms: float = 0.0) -> None:
        """Hand the newest result to the viewers. Cheap: no copy, no encoding, no I/O, and no
        thread woken, so the inference loop does not wait on the viewers' turn for the GIL."""
        now = time.monotonic()
        with self._lock:
            self._latest = (image_bgr, prediction, source, frame, latency_ms, now)
            self.frames += 1
            self._rate.tick()
        self.fanout.new_frame()

    def mark_ended(self) -> None:
        """The source has no more frames; the last result stays on show."""
        self._ended = True

    # --------------------------------------------------------------------- state
    def fps(self) -> float:
        """Results per second as ``rate.FrameRate`` defines it (the overlay's and the page's figure)."""
        with self._lock:
            return self._rate.value()

    def prediction(self) -> dict[str, Any] | None:
        """The newest result as ``edgeclf predict --json`` prints it, plus its age in seconds."""
        with self._lock:
            latest = self._latest
        if latest is None:
            return None
        _, pred, source, frame, latency_ms, at = latest
        return {**record(source, frame, pred, latency_ms, self.top), "age_s": round(time.monotonic() - at, 3)}

    def health(self) -> dict[str, Any]:
        with self._lock:
            last = self._latest[-1] if self._latest else None
        viewers = self.fanout.counts()
        return {
            "status": "ok",
            "uptime_s": round(time.monotonic() - self.started_at, 3),
            "frames": self.frames,
            "fps": round(self.fps(), 2),
            "fps_measures": LIVE_LABEL,
            "last_frame_age_s": None if last is None else round(time.monotonic() - last, 3),
            "source_state": "ended" if self._ended else self.source_state(),
            "viewers": {"stream": viewers["stream"], "events": viewers["events"]},
            **self.info,
        }

    def unhealthy(self) -> list[str]:
        """Why ``/healthz`` is 503 (empty: healthy)."""
        return list(self.health_check()) if self.health_check is not None else self.default_health()

    def default_health(self) -> list[str]:
        """One source's health: unhealthy while it is not connected (nor ended), or connected but
        without a frame for ``frame_timeout`` seconds (since the server started, before the first)."""
        state = "ended" if self._ended else self.source_state()
        if state == "ended":
            return []
        if state != "connected":
            return [f"source {self.source_name} is {state}"]
        with self._lock:
            last = self._latest[-1] if self._latest else self.started_at
        age = time.monotonic() - last
        if age > self.frame_timeout:
            return [f"source {self.source_name}: no frame for {age:.0f} s (more than {self.frame_timeout:g} s)"]
        return []

    def state(self) -> dict[str, Any] | None:
        """``/api/state``: ``states()`` when given (``edgeclf serve``: every source's), else the one
        source's state and newest result as ``{"sources": {name: {...}}}``; None (404) before the
        first result."""
        if self.states is not None:
            return self.states()
        pred = self.prediction()
        if pred is None:
            return None
        keys = ("label", "score", "unknown", "unknown_score", "top", "age_s")
        return {"sources": {self.source_name: {
            "source_state": "ended" if self._ended else self.source_state(), "frames": self.frames,
            **{k: pred[k] for k in keys if k in pred},
        }}}

    def status_event(self) -> dict[str, Any]:
        """What the page shows, in one server-sent event."""
        h = self.health()
        return {
            "prediction": self.prediction(), "fps": h["fps"], "frames": h["frames"],
            "source_state": h["source_state"], "uptime_s": h["uptime_s"], "viewers": h["viewers"],
        }

    def snapshot(self) -> bytes | None:
        """The newest result as an annotated JPEG (None before the first)."""
        with self._lock:
            latest = self._latest
        if latest is None:
            return None
        image, pred = latest[0], latest[1]
        img = annotate(image, pred, self.fps() or None, self.top)
        img = fit_within(img, self.max_width, img.shape[0])  # bounds the width only (a frame's own height never limits it)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        return buf.tobytes() if ok else None
