"""A CPU session that picks how to use the cores while it runs.

A device shares its few cores with capture, decoding, serving and whatever else the owner runs,
and the best onnxruntime setting depends on how many of them are free *now*
(benchmarks/results/ort_session.md, default int8 model, 2 cores):

- idle, 2 threads that busy-wait between the ops of one run: p50 1.44 ms; 1 thread: 2.25 ms;
- beside a process that keeps one core busy, the same 2 threads: p50 3.35 ms and 252 frames/s in
  batches; 1 thread: 2.41 ms and 428 frames/s.

``AdaptiveSession`` holds one session per thread count and runs whichever *arm* has been fastest
per image: a session on all, half or one of the cores, or, for a batch, the one-thread session
on several slices of the batch at once (one per core: no thread waits for another between ops, so
a core taken away costs only its own slices). Every ``PROBE_EVERY_S`` a few calls go to another
arm to see whether the machine changed (the first of them not counted: a session that sat idle
starts cold, 3.4 ms instead of 2.3 ms here); the current arm's own calls show at once when it
slows down. Probes are 3 calls every 1-2 s at most, and only where they can pay: an arm on more
threads than other processes leave cores for (``FreeCores``, from /proc/stat) is not tried, nor
one on fewer threads while the current arm runs as fast as it ever has; those probes were the
slowest calls of all, under load and at rest. Timings are kept per batch size.
"""

from __future__ import annotations

import itertools
import os
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

#: Between the ops of one run, workers busy-wait (waking a sleeping thread per op costs more than
#: the op on a small CNN); after the run they stop, so nothing spins between frames.
SPIN_WITHIN_RUN = {"session.intra_op.allow_spinning": "1", "session.force_spinning_stop": "1"}


def thread_arms(threads: int) -> list[int]:
    """Thread counts to keep a session for, on ``threads`` usable cores: all, half, one."""
    return sorted({threads, max(1, threads // 2), 1}, reverse=True)


def session_plan(threads: int) -> list[tuple[str, int, dict[str, str]]]:
    """(label, threads, session config) of each session ``AdaptiveSession`` keeps: every thread
    count of ``thread_arms`` with workers that spin within a run, and all cores once more without
    spinning, which a stream decoded beside it runs fastest on (its waits leave the reader a core)."""
    plan = [(f"{t} thread{'s' * (t > 1)}", t, dict(SPIN_WITHIN_RUN) if t > 1 else {}) for t in thread_arms(threads)]
    if threads > 1:
        plan.insert(1, (f"{threads} threads, no spin", threads, {"session.intra_op.allow_spinning": "0"}))
    return plan


class FreeCores:
    """Cores that other processes left free since the last call (this process's own use counts as
    free: it is what the arms compete for), from /proc/stat; None where that cannot be read."""

    def __init__(self, stat: str = "/proc/stat") -> None:
        self._stat = stat
        self._tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._cpus = os.cpu_count() or 1
        self._last = self._sample()

    def _sample(self) -> tuple[int, int, float] | None:
        try:
            with open(self._stat, "rb") as f:
                fields = [int(v) for v in f.readline().split()[1:9]]
        except (OSError, ValueError):
            return None
        if len(fields) < 8:
            return None
        user, nice, system, idle, iowait, irq, softirq, steal = fields
        busy = user + nice + system + irq + softirq + steal  # steal: a hypervisor's other guests
        own = os.times()
        return busy + idle + iowait, busy, own.user + own.system

    def __call__(self) -> float | None:
        now, last = self._sample(), self._last
        self._last = now
        if now is None or last is None or now[0] <= last[0]:
            return None
        wall = (now[0] - last[0]) / self._tick / self._cpus
        others = max(0.0, (now[1] - last[1]) / self._tick - (now[2] - last[2]))
        return self._cpus - others / wall


@dataclass(frozen=True)
class Arm:
    """One way to run: ``session`` on ``threads`` intra-op threads, or (``split`` > 1) a one-thread
    session on ``split`` slices of the batch at once. ``cores``: how many it keeps busy."""

    label: str
    session: Any
    threads: int
    split: int = 1

    @property
    def cores(self) -> int:
        return self.threads * self.split


@dataclass
class _Timing:
    """What one batch size has learnt: seconds per image for each arm, and when to probe."""

    per_image: dict[int, float] = field(default_factory=dict)
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
    #: another arm must be before switching (hysteresis against flapping on noise); weight of the
    #: newest call in the current arm's running mean.
    PROBE_EVERY_S = 1.0
    PROBE_MAX_S = 2.0
    PROBE_CALLS = 3
    SWITCH_BELOW = 0.9
    SLOWED = 1.2
    EWMA = 0.3

    def __init__(self, sessions: Sequence[Any], threads: Sequence[int],
                 clock: Callable[[], float] = time.perf_counter,
                 free_cores: Callable[[], float | None] | None = None,
                 labels: Sequence[str] | None = None) -> None:
        if len(sessions) != len(threads) or not sessions or (labels is not None and len(labels) != len(sessions)):
            raise ValueError("one session per thread count")
        labels = labels or [f"{t} thread{'s' * (t > 1)}" for t in threads]
        self.arms = [Arm(label, s, t) for s, t, label in zip(sessions, threads, labels)]
        cores = max(threads)
        one = next((s for s, t in zip(sessions, threads) if t == 1), None)
        if one is not None and cores > 1:
            self.arms.append(Arm(f"{cores} x 1 thread", one, 1, split=cores))
        self._clock = clock
        self._free_cores = free_cores or FreeCores()
        self._lock = threading.Lock()
        self._timings: dict[int, _Timing] = {}
        self._warm: set[tuple[int, int]] = set()
        self._pool: ThreadPoolExecutor | None = None
        #: Time each call from the end of the one before instead of from its start: for a caller
        #: that feeds frames as fast as a thread beside it decodes them (``edgeclf predict`` on a
        #: file), where an arm that takes that thread's core is fast itself but slows the stream.
        self.per_cycle = False
        self._last_end: float | None = None
        #: calls so far per arm label, for reports
        self.calls: dict[str, int] = {a.label: 0 for a in self.arms}

    @property
    def sessions(self) -> list[Any]:
        return [a.session for a in self.arms if a.split == 1]

    def __getattr__(self, name: str) -> Any:  # get_inputs, get_outputs, get_modelmeta, ...
        if name.startswith("_") or name == "arms":
            raise AttributeError(name)
        return getattr(self.arms[0].session, name)

    def _eligible(self, n: int) -> list[int]:
        return [i for i, a in enumerate(self.arms) if a.split == 1 or n > 1]

    def _choose(self, n: int) -> int:
        with self._lock:
            t = self._timings.setdefault(n, _Timing(next_probe=self._clock() + self.PROBE_EVERY_S / 4))
            eligible = self._eligible(n)
            if t.probing is None and len(eligible) > 1 and self._clock() >= t.next_probe:
                others = [i for i in eligible if i != t.current]
                mine = self.arms[t.current]
                # Fewer threads: worth a try only while the current arm runs slower than it has run
                # (at rest those probes were the idle tail); always once, to have a figure.
                slowed = t.per_image.get(t.current, 0.0) > self.SLOWED * t.best.get(t.current, float("inf"))
                others = [i for i in others if self.arms[i].split > 1 or self.arms[i].threads >= mine.threads
                          or slowed or i not in t.per_image]
                if any(self.arms[i].split == 1 and self.arms[i].threads > mine.threads for i in others):
                    free = self._free_cores()
                    if free is not None:  # more threads: only when other processes leave the cores
                        others = [i for i in others if self.arms[i].split > 1 or self.arms[i].threads <= max(mine.threads, free + 0.5)]
                if others:
                    t.probing = others[t.next_other % len(others)]
                    t.next_other += 1
                    t.probe_samples = []
                else:  # nothing worth trying while other processes hold the cores
                    t.next_probe = self._clock() + (t.interval or self.PROBE_EVERY_S)
            return t.current if t.probing is None else t.probing

    def _learn(self, n: int, arm: int, seconds: float) -> None:
        with self._lock:
            self.calls[self.arms[arm].label] += 1
            t = self._timings.setdefault(n, _Timing())
            per_image = seconds / n
            if arm == t.probing:
                t.probe_samples.append(per_image)
                if len(t.probe_samples) < self.PROBE_CALLS:
                    return
                t.per_image[arm] = statistics.median(t.probe_samples[1:])
                t.probing = None
                t.interval = min(self.PROBE_MAX_S, 2 * t.interval) if t.interval else self.PROBE_EVERY_S
                t.next_probe = self._clock() + t.interval
            elif arm == t.current:
                if (n, arm) not in self._warm:  # the first call of a session allocates: not its speed
                    self._warm.add((n, arm))
                    return
                old = t.per_image.get(arm)
                t.per_image[arm] = per_image if old is None else old + self.EWMA * (per_image - old)
                if old is not None:
                    t.best[arm] = min(t.best.get(arm, float("inf")), t.per_image[arm])
            else:  # a probe another thread's call already finished
                return
            mine = t.per_image.get(t.current)
            best = min(t.per_image, key=t.per_image.__getitem__)
            if mine is None or t.per_image[best] < self.SWITCH_BELOW * mine:
                if best != t.current:
                    t.interval = 0.0  # the machine changed: probe at the first rate again
                t.current = best

    def run(self, output_names: Sequence[str] | None, feeds: dict, run_options: Any = None) -> list:
        """``InferenceSession.run`` on the arm chosen for this batch size."""
        n = len(next(iter(feeds.values())))
        key = _bucket(n)
        i = self._choose(key)
        arm = self.arms[i]
        start = self._clock()
        if arm.split > 1 and n > 1:
            out = self._run_split(arm, output_names, feeds, run_options, n)
        else:
            out = arm.session.run(output_names, feeds, run_options)
        end = self._clock()
        last, self._last_end = self._last_end, end
        # A long gap is the caller's own business (a pause, a slow sink), not this arm's doing.
        cycle = self.per_cycle and last is not None and start - last < max(0.05, 10 * (end - start))
        self._learn(key, i, end - (last if cycle else start))
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
        """The arm this batch size runs on at the moment."""
        with self._lock:
            t = self._timings.get(_bucket(n))
            return self.arms[t.current if t else 0]

    def threads_now(self, n: int = 1) -> int:
        """The cores this batch size keeps busy at the moment."""
        return self.arm_now(n).cores
