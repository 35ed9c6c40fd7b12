"""A CPU session that picks how to use the cores while it runs.

A device shares its few cores with capture, decoding, serving and whatever else the owner runs, and
the best onnxruntime setting depends on how many are free *now* (benchmarks/results/ort_session.md,
int8 model, 2 cores: 2 threads spinning within a run take 1.44 ms at p50 idle but 3.35 ms beside a
process that keeps one core busy, 1 thread 2.25 and 2.41 ms). ``AdaptiveSession`` keeps a few ways
to run (*arms*), runs the one that has been fastest per image and now and then probes another. Each
part pays in benchmarks/results/adaptive.md; each rule is written next to the code that applies it.
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
    call, from /proc/stat's per-CPU lines (Linux); None where that cannot be read (other systems).
    This process's own use counts as free (it is what the arms compete for), and so does niced
    work (the scheduler gives way to the classifier). Windows under ``MIN_WINDOW_S`` return the
    previous answer: a few ticks are too coarse to tell. A CPU quota (cgroup ``cpu.max``) is not seen."""

    MIN_WINDOW_S = 0.2

    def __init__(self, stat: str = "/proc/stat", cpus: set[int] | None = None) -> None:
        self._stat = stat
        self._tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._cpus = sysinfo.usable_cpus() if cpus is None else cpus
        self._answer: float | None = None
        self._last = self._sample()

    def _sample(self) -> tuple[int, int, float] | None:
        total = busy = seen = 0
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
        own = os.times()
        return (total, busy, own.user + own.system) if seen == len(self._cpus) else None

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
    session on ``split`` slices of the batch at once, keeping ``cores`` busy. ``yields``: its workers
    sleep between ops instead of busy-waiting (slower alone, faster when something else wants a core)."""

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
    the most); a session on 1 thread also runs batches split across ``max(threads)`` cores.
    Timings are kept per batch size (``_bucket``) and per timing mode (``per_cycle``)."""

    PROBE_EVERY_S, PROBE_MAX_S = 1.0, 2.0  # seconds between probes: at first, and at most (``_learn_probe``)
    PROBE_CALLS = 3  # calls per probe
    SWITCH_BELOW = 0.9  # how much faster another arm must be to switch to it (``_better_arm``)
    SLOWED = 1.2  # how much slower than its best the current arm may run before fewer cores are tried
    WINDOW, TRIM = 9, 2  # the current arm's speed: its last WINDOW calls without the slowest TRIM (``_typical``)

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
        self.calls: dict[str, int] = {a.label: 0 for a in self.arms}  # per arm label, for reports

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
        ``TRIM / WINDOW`` of them. A plain mean let the co-tenant's rare 10-17 ms stalls of one call
        push the classifier off its fastest arm; a median hid a tail that hits a third of the calls."""
        kept = sorted(window)[:len(window) - len(window) * self.TRIM // self.WINDOW]
        return sum(kept) / len(kept)

    def _eligible(self, n: int) -> list[int]:
        return [i for i, a in enumerate(self.arms) if a.split == 1 or n > 1]

    def _first(self, n: int) -> int:
        """The arm a batch size starts on: all cores for single images; for batches the split arm
        where there is one (no worker waits on a core another process or the reader holds: it ran
        batches fastest beside the co-tenant and in predict's pipeline; idle, probes do better)."""
        return next((i for i, a in enumerate(self.arms) if a.split > 1), 0) if n > 1 else 0

    def _timing(self, key: tuple[bool, int], first_probe_in: float) -> _Timing:
        """What ``key`` has learnt; a new one starts on its first arm, probing in ``first_probe_in`` s."""
        t = self._timings.get(key)
        if t is None:
            t = self._timings[key] = _Timing(current=self._first(key[1]), next_probe=self._clock() + first_probe_in)
        return t

    def _choose(self, key: tuple[bool, int]) -> int:
        """The arm for the next call: the current one, or the one being probed."""
        with self._lock:
            t = self._timing(key, first_probe_in=self.PROBE_EVERY_S / 4)
            if t.probing is None and self._clock() >= t.next_probe and len(self._eligible(key[1])) > 1:
                self._start_probe(t, key)
            return t.current if t.probing is None else t.probing

    def _start_probe(self, t: _Timing, key: tuple[bool, int]) -> None:
        """Send the next ``PROBE_CALLS`` calls to the arms worth trying, in turn; while none is,
        look again after the probe interval."""
        others = self._worth_probing(t, key)
        if others:
            t.probing = others[t.next_other % len(others)]
            t.next_other += 1
            t.probe_samples = []
        else:
            t.next_probe = self._clock() + (t.interval or self.PROBE_EVERY_S)

    def _worth_probing(self, t: _Timing, key: tuple[bool, int]) -> list[int]:
        """Arms a probe may try now, never one that failed. Probes only where they can pay: at rest
        and under a long load they were the slowest calls of all. Split arms always may: their
        slices do not wait for each other, so a core taken away costs little."""
        per_cycle, mine = key[0], self.arms[t.current]
        others = [i for i in self._eligible(key[1]) if i != t.current and t.per_image.get(i) != float("inf")]
        plain = [i for i in others if self.arms[i].split == 1 and self._fewer_cores_ok(t, i)]
        # /proc/stat is read only where its answer can rule an arm out
        asks = any(self.arms[i].cores > mine.cores or (self.arms[i].yields and not per_cycle) for i in plain)
        free = self._free_cores() if asks else None
        return [i for i in others if self.arms[i].split > 1 or (
            i in plain and self._more_cores_ok(t, i, free) and self._no_spin_ok(t, i, free, per_cycle))]

    def _fewer_cores_ok(self, t: _Timing, i: int) -> bool:
        """Fewer cores: only while the current arm runs ``SLOWED`` times slower than it has since it
        was chosen (at rest those probes were the idle tail), and once, to have a figure."""
        fewer = self.arms[i].cores < self.arms[t.current].cores
        slowed = t.per_image.get(t.current, 0.0) > self.SLOWED * t.best.get(t.current, float("inf"))
        return not fewer or slowed or i not in t.per_image

    def _more_cores_ok(self, t: _Timing, i: int, free: float | None) -> bool:
        """More cores: only while other processes leave them free (``FreeCores``; None: can't tell)."""
        return free is None or self.arms[i].cores <= max(self.arms[t.current].cores, free + 0.5)

    def _no_spin_ok(self, t: _Timing, i: int, free: float | None, per_cycle: bool) -> bool:
        """Workers that sleep between ops, timed per call: only while another process holds a core
        (idle, their probes were slow calls and wrong switches on noise), and once, for a figure
        when a load comes. Per cycle always: the reader that wants a core is this process."""
        arm = self.arms[i]
        return not arm.yields or per_cycle or free is None or free < arm.cores - 0.5 or i not in t.per_image

    def _learn(self, key: tuple[bool, int], n: int, arm: int, seconds: float) -> None:
        """Count the call, add its time per image to its arm's figure, switch if another arm wins."""
        with self._lock:
            self.calls[self.arms[arm].label] += 1
            t = self._timing(key, first_probe_in=0.0)  # new only for a call _choose did not pick
            learnt = False  # a probe another thread's call already finished teaches nothing
            if arm == t.probing:
                learnt = self._learn_probe(t, arm, seconds / n)
            elif arm == t.current:
                learnt = self._learn_current(t, key, arm, seconds / n)
            best = self._better_arm(t) if learnt else None
            if best is not None:
                self._switch(t, best, probed=arm)

    def _learn_probe(self, t: _Timing, arm: int, per_image: float) -> bool:
        """One call of a probe; True after its last. The arm's figure is the median of its calls but
        the first (a session that sat idle starts cold: 3.4 ms instead of 2.3 ms here). The interval
        to the next probe doubles up to ``PROBE_MAX_S`` while probes find nothing better (under a
        long load, probing the all-cores arm is what stretches the tail)."""
        t.probe_samples.append(per_image)
        if len(t.probe_samples) < self.PROBE_CALLS:
            return False
        t.per_image[arm] = statistics.median(t.probe_samples[1:])
        t.probing = None
        t.interval = min(self.PROBE_MAX_S, 2 * t.interval) if t.interval else self.PROBE_EVERY_S
        t.next_probe = self._clock() + t.interval
        if self.arms[arm].cores < self.arms[t.current].cores and t.current in t.per_image:
            # the slowdown that allowed this probe is the new normal unless a switch follows
            t.best[t.current] = t.per_image[t.current]
        return True

    def _learn_current(self, t: _Timing, key: tuple[bool, int], arm: int, per_image: float) -> bool:
        """One call of the current arm, whose own calls show within a few calls when it slows
        down. The first call of a session allocates: not its speed (False)."""
        if (key, arm) not in self._warm:
            self._warm.add((key, arm))
            return False
        window = t.recent.setdefault(arm, deque(maxlen=self.WINDOW))
        window.append(per_image)
        t.per_image[arm] = self._typical(window)
        if len(window) == self.WINDOW:
            t.best[arm] = min(t.best.get(arm, float("inf")), t.per_image[arm])
        return True

    def _better_arm(self, t: _Timing) -> int | None:
        """The fastest arm, if ``SWITCH_BELOW`` times faster than the current one (against flapping
        on noise) or, on fewer cores, as fast (beside a co-tenant, all cores spinning ran as fast at
        the median as 1 thread, with a 2.5x worse p99)."""
        mine = t.per_image.get(t.current)
        best = min(t.per_image, key=t.per_image.__getitem__)
        need = 1.0 if self.arms[best].cores < self.arms[t.current].cores else self.SWITCH_BELOW
        return best if mine is not None and t.per_image[best] < need * mine else None

    def _switch(self, t: _Timing, best: int, probed: int) -> None:
        """Make ``best`` current, probing at the first rate again: the machine changed. Its calls from
        when it was last current are stale: it starts from the probe just made or its figure."""
        t.interval = 0.0
        t.best.pop(best, None)
        seed = t.probe_samples[1:] if best == probed and t.probe_samples else [t.per_image[best]]
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
        counter, lock = itertools.count(), threading.Lock()

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
