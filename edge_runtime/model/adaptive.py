"""A CPU session that picks how to use the cores while it runs.

A device shares its few cores with capture, decoding, serving and whatever else the owner runs,
and the best onnxruntime setting depends on how many of them are free *now*
(benchmarks/results/ort_session.md, default int8 model, 2 cores):

- idle, 2 threads that busy-wait between the ops of one run: p50 1.44 ms; 1 thread: 2.25 ms;
- beside a process that keeps one core busy, the same 2 threads: p50 3.35 ms and 252 frames/s in
  batches; 1 thread: 2.41 ms and 428 frames/s.

Each part below pays somewhere in benchmarks/results/adaptive.md: adapting at all (loaded p99 3.2
vs 7.1 ms fixed on 2 threads), the no-spin arm (predict's pipeline, idle 643 vs 583 frames/s),
``FreeCores`` (idle p99 1.87 vs 2.38 ms).

``AdaptiveSession`` holds one session per thread count and runs whichever *arm* has been fastest
per image: a session on all or one of the cores, or, for a batch, the one-thread session
on several slices of the batch at once (one per core: no thread waits for another between ops, so
a core taken away costs only its own slices). Every ``PROBE_EVERY_S`` a few calls go to another
arm to see whether the machine changed (the first of them not counted: a session that sat idle
starts cold, 3.4 ms instead of 2.3 ms here); the current arm's own calls show within a few calls
when it slows down (its speed is the mean of its last ``WINDOW`` calls without the slowest
``TRIM``: a plain mean let the co-tenant's rare 10-17 ms stalls of one call push the classifier
off its fastest arm, a median hid a tail that hits a third of the calls). Probes are 3 calls
every 1-2 s at most, and only where they can pay: an arm on more cores than other processes leave
free (``FreeCores``, from /proc/stat) is not tried, nor one on fewer cores while the current arm
runs as fast as it has since it was chosen, nor (timed per call, after its first probe) one whose
workers sleep between ops while no other process wants a core; those probes were the slowest
calls of all, under load and at rest. (Split batches are tried regardless.) Timings are kept per
batch size, and per timing mode (per call, or per cycle beside a reader thread).
"""

from __future__ import annotations

import itertools
import os
import statistics
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from edgeclf import sysinfo

#: Between the ops of one run, workers busy-wait (waking a sleeping thread per op costs more than
#: the op on a small CNN); after the run they stop, so nothing spins between frames.
SPIN_WITHIN_RUN = {"session.intra_op.allow_spinning": "1", "session.force_spinning_stop": "1"}


def threads_label(t: int) -> str:
    """"1 thread", "2 threads": how arms and reports name a thread count."""
    return f"{t} thread{'s' * (t > 1)}"


def thread_arms(threads: int) -> list[int]:
    """Thread counts to keep a session for, on ``threads`` usable cores: all, and one. (A session
    on half the cores was dropped: no machine here could show it paying, benchmarks/results/adaptive.md.)"""
    return sorted({threads, 1}, reverse=True)


def session_plan(threads: int) -> list[tuple[str, int, dict[str, str]]]:
    """(label, threads, session config) of each session ``AdaptiveSession`` keeps: every thread
    count of ``thread_arms`` with workers that spin within a run, and all cores once more without
    spinning, which a stream decoded beside it runs fastest on (its waits leave the reader a core)."""
    plan = [(threads_label(t), t, dict(SPIN_WITHIN_RUN) if t > 1 else {}) for t in thread_arms(threads)]
    if threads > 1:
        plan.insert(1, (f"{threads} threads, no spin", threads, {"session.intra_op.allow_spinning": "0"}))
    return plan


class FreeCores:
    """Of the cores this process may run on, how many other processes left free since the last
    call, from /proc/stat's per-CPU lines (Linux); None where that cannot be read.

    This process's own use counts as free (it is what the arms compete for), and so does niced
    work (the scheduler gives way to the classifier). Windows under ``MIN_WINDOW_S`` return the
    previous answer: a few ticks are too coarse to tell. A CPU quota (cgroup ``cpu.max``) is not
    seen; on other systems there is no answer, and arms are then probed without this check.
    """

    MIN_WINDOW_S = 0.2

    def __init__(self, stat: str = "/proc/stat", cpus: set[int] | None = None) -> None:
        self._stat = stat
        self._tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        if cpus is None:
            cpus = sysinfo.usable_cpus()
        self._cpus = cpus
        self._answer: float | None = None
        self._last = self._sample()

    def _sample(self) -> tuple[int, int, float] | None:
        total = busy = 0
        seen = 0
        try:
            with open(self._stat, "rb") as f:
                for line in f:
                    name, *values = line.split()
                    if not (name.startswith(b"cpu") and name[3:].isdigit() and int(name[3:]) in self._cpus):
                        continue
                    user, _nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in values[:8])
                    cpu_busy = user + system + irq + softirq + steal  # steal: a hypervisor's other guests
                    busy += cpu_busy
                    total += cpu_busy + _nice + idle + iowait
                    seen += 1
        except (OSError, ValueError):
            return None
        if seen != len(self._cpus):
            return None
        own = os.times()
        return total, busy, own.user + own.system

    def __call__(self) -> float | None:
        now, last = self._sample(), self._last
        if now is None or last is None:
            self._last = now
            return None
        wall = (now[0] - last[0]) / self._tick / len(self._cpus)
        if wall < self.MIN_WINDOW_S:
            return self._answer
        self._last = now
        others = max(0.0, (now[1] - last[1]) / self._tick - (now[2] - last[2]))
        self._answer = len(self._cpus) - others / wall
        return self._answer


@dataclass(frozen=True)
class Arm:
    """One way to run: ``session`` on ``threads`` intra-op threads, or (``split`` > 1) a one-thread
    session on ``split`` slices of the batch at once. ``cores``: how many it keeps busy.
    ``yields``: its workers sleep between ops instead of busy-waiting (slower alone, faster when
    something else wants the cores)."""

    label: str
    session: Any
    threads: int
    split: int = 1
    yields: bool = False

    @property
    def cores(self) -> int:
        return self.threads * self.split


@dataclass
class _Timing:
    """What one batch size has learnt: seconds per image for each arm, and when to probe."""

    per_image: dict[int, float] = field(default_factory=dict)
    recent: dict[int, deque] = field(default_factory=dict)  # per arm: its last calls while current
    best: dict[int, float] = field(default_factory=dict)
    current: int = 0
    next_probe: float = 0.0
    interval: float = 0.0
    probing: int | None = None
    probe_samples: list[float] = field(default_factory=list)
    next_other: int = 0


def _bucket(n: int) -> int:
    """Batch sizes learnt together: 1, 2, 3-4, 5-8, ... (a stream's last short batch is no new case)."""
    return 1 << max(0, n - 1).bit_length()


class AdaptiveSession:
    """``run`` like an ``InferenceSession`` over ``sessions[i]`` on ``threads[i]`` threads (first
    the most); a session on 1 thread also runs batches split across ``max(threads)`` cores."""

    #: seconds between probes, doubled up to ``PROBE_MAX_S`` while probes find nothing better
    #: (under a long load, probing the all-cores arm is what stretches the tail); calls per probe
    #: (the first is not counted, the others' median is the arm's estimate); how much faster
    #: another arm on as many cores or more must be before switching to it (hysteresis against
    #: flapping on noise; an arm on fewer cores wins ties: beside a co-tenant, all cores spinning
    #: ran as fast at the median as 1 thread, with a 2.5x worse p99); how many of the current
    #: arm's last calls its speed is taken from, and how many of the slowest of them are left out
    #: (a call that stalls, which beside a co-tenant happens to 1-2% of them at 4-7x the median,
    #: moves it little; a tail on a third of the calls, or a lasting change, shows).
    PROBE_EVERY_S = 1.0
    PROBE_MAX_S = 2.0
    PROBE_CALLS = 3
    SWITCH_BELOW = 0.9
    SLOWED = 1.2
    WINDOW = 9
    TRIM = 2

    def __init__(self, sessions: Sequence[Any], threads: Sequence[int],
                 clock: Callable[[], float] = time.perf_counter,
                 free_cores: Callable[[], float | None] | None = None,
                 labels: Sequence[str] | None = None, yields: Sequence[bool] | None = None) -> None:
        if len(sessions) != len(threads) or not sessions or any(
                v is not None and len(v) != len(sessions) for v in (labels, yields)):
            raise ValueError("one session per thread count")
        labels = labels or [threads_label(t) for t in threads]
        yields = yields or [False] * len(sessions)
        self.arms = [Arm(label, s, t, yields=y) for s, t, label, y in zip(sessions, threads, labels, yields)]
        cores = max(threads)
        one = next((s for s, t in zip(sessions, threads) if t == 1), None)
        if one is not None and cores > 1:
            self.arms.append(Arm(f"{cores} x 1 thread", one, 1, split=cores))
        self._clock = clock
        self._free_cores = free_cores or FreeCores()
        self._lock = threading.Lock()
        self._timings: dict[tuple[bool, int], _Timing] = {}
        self._warm: set[tuple[tuple[bool, int], int]] = set()
        self._pool: ThreadPoolExecutor | None = None
        self._local = threading.local()  # per calling thread: per_cycle and the last call's end
        #: calls so far per arm label, for reports
        self.calls: dict[str, int] = {a.label: 0 for a in self.arms}

    @property
    def per_cycle(self) -> bool:
        """In this thread, time each call from the end of the one before instead of from its
        start: for a caller fed frames as fast as a thread beside it decodes them (``edgeclf
        predict`` on a file), where an arm that takes that thread's core is fast itself but slows
        the stream. Timings learnt this way are kept apart from per-call ones."""
        return getattr(self._local, "per_cycle", False)

    @per_cycle.setter
    def per_cycle(self, on: bool) -> None:
        self._local.per_cycle = bool(on)
        self._local.last_end = None

    @property
    def sessions(self) -> list[Any]:
        return [a.session for a in self.arms if a.split == 1]

    def __getattr__(self, name: str) -> Any:  # get_inputs, get_outputs, get_modelmeta, ...
        if name.startswith("_") or name == "arms":
            raise AttributeError(name)
        return getattr(self.arms[0].session, name)

    def _typical(self, window: deque) -> float:
        """An arm's time per image from its last calls: their mean without the slowest
        ``TRIM / WINDOW`` of them (a call that stalls now and then is not the arm's speed; a tail
        that hits a third of the calls is)."""
        kept = sorted(window)[:len(window) - len(window) * self.TRIM // self.WINDOW]
        return sum(kept) / len(kept)

    def _eligible(self, n: int) -> list[int]:
        return [i for i, a in enumerate(self.arms) if a.split == 1 or n > 1]

    def _first(self, n: int) -> int:
        """The arm a batch size starts on: all cores for single images; for batches the split arm
        where there is one (no worker waits on a core another process or the reader holds: beside
        the co-tenant and in predict's file pipeline it ran batches fastest; idle, probes find
        anything faster within seconds)."""
        return next((i for i, a in enumerate(self.arms) if a.split > 1), 0) if n > 1 else 0

    def _choose(self, key: tuple[bool, int]) -> int:
        with self._lock:
            t = self._timings.get(key)
            if t is None:
                first = self._first(key[1])
                t = self._timings[key] = _Timing(current=first, next_probe=self._clock() + self.PROBE_EVERY_S / 4)
            if t.probing is None and self._clock() >= t.next_probe and len(eligible := self._eligible(key[1])) > 1:
                others = [i for i in eligible if i != t.current and t.per_image.get(i) != float("inf")]
                mine = self.arms[t.current]
                # Fewer cores: worth a try only while the current arm runs slower than it has run
                # (at rest those probes were the idle tail); always once, to have a figure.
                slowed = t.per_image.get(t.current, 0.0) > self.SLOWED * t.best.get(t.current, float("inf"))
                others = [i for i in others if self.arms[i].split > 1 or self.arms[i].cores >= mine.cores
                          or slowed or i not in t.per_image]
                # More threads: only while other processes leave the cores. Split batches are tried
                # regardless: their slices do not wait for each other, so a taken core costs little
                # (beside the co-tenant they were the fastest way to run a batch).
                more = any(self.arms[i].split == 1 and self.arms[i].cores > mine.cores for i in others)
                yielding = not key[0] and any(self.arms[i].yields for i in others)
                free = self._free_cores() if more or yielding else None
                if free is not None:
                    others = [i for i in others if self.arms[i].split > 1 or self.arms[i].cores <= max(mine.cores, free + 0.5)]
                    # Workers that sleep between ops: timed per call they win only while another
                    # process holds a core (idle, their probes were slow calls and wrong switches
                    # on noise). Per cycle they are always tried: the reader is this process.
                    if yielding:
                        others = [i for i in others if not self.arms[i].yields or free < self.arms[i].cores - 0.5
                                  or i not in t.per_image]  # once, to have a figure when a load comes
                if others:
                    t.probing = others[t.next_other % len(others)]
                    t.next_other += 1
                    t.probe_samples = []
                else:  # nothing worth trying while other processes hold the cores
                    t.next_probe = self._clock() + (t.interval or self.PROBE_EVERY_S)
            return t.current if t.probing is None else t.probing

    def _learn(self, key: tuple[bool, int], n: int, arm: int, seconds: float) -> None:
        with self._lock:
            self.calls[self.arms[arm].label] += 1
            t = self._timings.get(key)
            if t is None:
                t = self._timings[key] = _Timing(current=self._first(key[1]))
            per_image = seconds / n
            if arm == t.probing:
                t.probe_samples.append(per_image)
                if len(t.probe_samples) < self.PROBE_CALLS:
                    return
                t.per_image[arm] = statistics.median(t.probe_samples[1:])
                t.probing = None
                t.interval = min(self.PROBE_MAX_S, 2 * t.interval) if t.interval else self.PROBE_EVERY_S
                t.next_probe = self._clock() + t.interval
                if self.arms[arm].cores < self.arms[t.current].cores and t.current in t.per_image:
                    # the slowdown that allowed this probe is the new normal unless a switch follows
                    t.best[t.current] = t.per_image[t.current]
            elif arm == t.current:
                if (key, arm) not in self._warm:  # the first call of a session allocates: not its speed
                    self._warm.add((key, arm))
                    return
                window = t.recent.setdefault(arm, deque(maxlen=self.WINDOW))
                window.append(per_image)
                t.per_image[arm] = self._typical(window)
                if len(window) == self.WINDOW:
                    t.best[arm] = min(t.best.get(arm, float("inf")), t.per_image[arm])
            else:  # a probe another thread's call already finished
                return
            mine = t.per_image.get(t.current)
            best = min(t.per_image, key=t.per_image.__getitem__)
            need = 1.0 if self.arms[best].cores < self.arms[t.current].cores else self.SWITCH_BELOW
            if mine is not None and t.per_image[best] < need * mine:
                t.interval = 0.0  # the machine changed: probe at the first rate again
                t.best.pop(best, None)
                # its calls from when it was last current are stale: start from the probe just
                # made, or from the figure that won the switch
                seed = t.probe_samples[1:] if best == arm and t.probe_samples else [t.per_image[best]]
                t.recent[best] = deque(seed, maxlen=self.WINDOW)
                t.current = best

    def _failed(self, key: tuple[bool, int], arm: int) -> None:
        """A call raised: a probe arm that fails is not tried again for this batch size."""
        with self._lock:
            t = self._timings.get(key)
            if t is not None and arm == t.probing:
                t.probing = None
                t.per_image[arm] = float("inf")
                t.next_probe = self._clock() + self.PROBE_MAX_S

    def run(self, output_names: Sequence[str] | None, feeds: dict, run_options: Any = None) -> list:
        """``InferenceSession.run`` on the arm chosen for this batch size."""
        n = max(1, len(next(iter(feeds.values()))))
        per_cycle = self.per_cycle
        key = (per_cycle, _bucket(n))
        i = self._choose(key)
        arm = self.arms[i]
        start = self._clock()
        try:
            if arm.split > 1 and n > 1:
                out = self._run_split(arm, output_names, feeds, run_options, n)
            else:
                out = arm.session.run(output_names, feeds, run_options)
        except BaseException:
            self._failed(key, i)
            raise
        end = self._clock()
        seconds = end - start
        if per_cycle:
            last, self._local.last_end = getattr(self._local, "last_end", None), end
            # A long gap is the caller's own business (a pause, a slow sink), not this arm's doing.
            if last is not None and 0 <= start - last < max(0.05, 10 * seconds):
                seconds = end - last
        self._learn(key, n, i, seconds)
        return out

    def _run_split(self, arm: Arm, output_names, feeds: dict, run_options: Any, n: int) -> list:
        """The batch in slices, ``arm.split`` at a time: the caller and ``split - 1`` pool threads
        take the next slice as they finish (small slices, so a core that is taken away holds up
        little), onnxruntime releasing the GIL inside each run."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=arm.split - 1, thread_name_prefix="edgeclf-split")
        step = max(1, -(-n // (4 * arm.split)))
        starts = list(range(0, n, step))
        results: list[list | None] = [None] * len(starts)
        counter = itertools.count()
        lock = threading.Lock()

        def work() -> None:
            while True:
                with lock:
                    k = next(counter)
                if k >= len(starts):
                    return
                s = starts[k]
                results[k] = arm.session.run(output_names, {name: v[s:s + step] for name, v in feeds.items()}, run_options)

        helpers = [self._pool.submit(work) for _ in range(arm.split - 1)]
        work()
        for h in helpers:
            h.result()  # re-raises a helper's error
        return [np.concatenate([r[j] for r in results]) for j in range(len(results[0]))]

    def arm_now(self, n: int = 1) -> Arm:
        """The arm this batch size runs on at the moment (in this thread's timing mode)."""
        with self._lock:
            t = self._timings.get((self.per_cycle, _bucket(n)))
            return self.arms[t.current if t else self._first(n)]

    def threads_now(self, n: int = 1) -> int:
        """The cores this batch size keeps busy at the moment."""
        return self.arm_now(n).cores
