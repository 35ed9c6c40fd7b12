"""What every way out shares: the state event, and a publisher that never blocks the frame loop.

``Publisher.publish`` is called from the inference loop and only swaps the source's pending event
under a lock: the newest state of each source wins and an event replaced before it went out is
counted as dropped, so the queue is bounded by the number of sources. A thread of the publisher's
own delivers what is pending; a subclass says how (``_deliver``) and whether it can deliver now
(``_ready``). The last event of every source is remembered and sent again when a connection comes
back (``_resend_current``), so a subscriber that reconnects sees the current state.
"""

from __future__ import annotations

import datetime as dt
import sys
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable

from edgeclf.errors import first_line, safe_text


@dataclass(frozen=True)
class StateEvent:
    """A source's new state: its debounced label (``unknown`` when the frame is none of the classes)."""

    source: str
    label: str
    score: float
    time: float  # seconds since the epoch (time.time()) of the frame that completed the debounce
    model: str
    unknown: bool = False
    previous: str | None = None  # the state before this one (None: the first since start)
    frame: int | None = None
    snapshot: bytes | None = field(default=None, repr=False, compare=False)  # JPEG of that frame, when asked for
    #: the source's own ``snapshot = true``: every way out sends the JPEG, not only those asking for all
    share_snapshot: bool = field(default=False, compare=False)

    def snapshot_for(self, wants_all: bool) -> bytes | None:
        """The JPEG a way out sends with this event: with its own ``snapshot`` or the source's."""
        return self.snapshot if wants_all or self.share_snapshot else None

    def payload(self) -> dict[str, Any]:
        """The JSON object every way out sends."""
        return {
            "source": self.source, "label": self.label, "score": round(float(self.score), 4),
            "unknown": self.unknown, "previous": self.previous,
            "time": dt.datetime.fromtimestamp(self.time, dt.timezone.utc).isoformat(timespec="milliseconds"),
            "timestamp": round(self.time, 3), "model": self.model, "frame": self.frame,
        }


def _log(msg: str) -> None:
    print(f"edgeclf serve: {safe_text(msg)}", file=sys.stderr, flush=True)


class Publisher(ABC):
    """Delivers state events from a thread of its own; ``publish`` never blocks.

    Subclasses implement ``_deliver`` (raise ``OSError`` or ``DeliveryError`` when it failed,
    ``Superseded`` when it gave up for a newer event of the source: counted as dropped) and may
    override ``_ready`` (False while disconnected: events wait, newest first), ``_open``/``_shut``
    (connect at ``start``, say goodbye at ``close``) and ``_failed`` (how a failure is logged)."""

    kind = "publisher"  # "mqtt", "webhook": names it in logs and metrics
    wants_snapshots = False  # True: events should carry the frame's JPEG (its options' ``snapshot``)

    def __init__(self, log: Callable[[str], None] = _log) -> None:
        self.log = log
        self.name = self.kind  # in metrics; several webhooks are told apart as webhook1, webhook2, ...
        self._lock = threading.Condition()
        self._pending: dict[str, StateEvent] = {}
        self._current: dict[str, StateEvent] = {}
        self._closing = False
        self._thread: threading.Thread | None = None
        self.stats = {"sent": 0, "dropped": 0, "failed": 0, "reconnects": 0}

    # -------------------------------------------------------------- the loop's side
    def publish(self, event: StateEvent) -> None:
        """Queue ``event``; an older event of the same source not yet sent is dropped (and counted)."""
        with self._lock:
            if event.source in self._pending:
                self.stats["dropped"] += 1
            self._pending[event.source] = event
            self._current[event.source] = event
            self._lock.notify()

    def start(self, sources: list[str]) -> "Publisher":
        """Connect (in the background where the protocol allows) and start delivering."""
        self._open(sources)
        self._thread = threading.Thread(target=self._run, name=f"edgeclf {self.kind}", daemon=True)
        self._thread.start()
        return self

    def close(self, timeout: float = 1.0) -> None:
        """Deliver what is pending if it can within ``timeout`` seconds, then disconnect."""
        with self._lock:
            self._closing = True
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        self._shut()

    @property
    def connected(self) -> bool:
        return self._ready()

    # ------------------------------------------------------------ the thread's side
    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._closing and not (self._pending and self._ready()):
                    self._lock.wait(0.5)
                if not self._pending or not self._ready():
                    return  # closing, and nothing (more) can go out
                source, event = next(iter(self._pending.items()))
                del self._pending[source]
            try:
                self._deliver(event)
            except Superseded:
                self.stats["dropped"] += 1  # a newer state of the source is pending and goes out instead
            except Exception as e:  # noqa: BLE001 - whatever a peer makes a client raise: one failure, never the thread's end
                self.stats["failed"] += 1
                self._failed(event, e if isinstance(e, (OSError, DeliveryError)) else DeliveryError(
                    f"{type(e).__name__}: {first_line(e, 120)}"))
            else:
                self.stats["sent"] += 1

    def _resend_current(self) -> None:
        """Queue every source's current state again (after a reconnect); wakes the thread."""
        with self._lock:
            for source, event in self._current.items():
                self._pending.setdefault(source, event)
            self._lock.notify()

    def _wake(self) -> None:
        with self._lock:
            self._lock.notify()

    # ------------------------------------------------------------- for subclasses
    def _open(self, sources: list[str]) -> None:
        """Connect; must not block long (a broker down at start is not an error)."""

    def _shut(self) -> None:
        """Disconnect (MQTT: publish ``offline`` first)."""

    def _ready(self) -> bool:
        return True

    def _failed(self, event: StateEvent, error: Exception) -> None:
        """Say that ``event`` did not go out; a subclass may keep a dead peer to one line per outage."""
        self.log(f"{self.name}: could not deliver {event.source}'s state {event.label!r} ({error})")

    @abstractmethod
    def _deliver(self, event: StateEvent) -> None:
        """Send ``event``; raise OSError or DeliveryError when it did not arrive."""


class DeliveryError(Exception):
    """A peer refused or failed an event (an HTTP 500, an MQTT publish not acknowledged)."""


class Superseded(DeliveryError):
    """``_deliver`` gave up on an event because a newer one of the same source is pending: counted
    as dropped, not failed."""
