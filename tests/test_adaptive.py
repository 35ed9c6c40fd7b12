"""The adaptive thread count (edgeclf.model.adaptive): which session it runs as the machine changes.

The policy is tested on sessions whose run time is set by the test (a fake clock: a real one on
this shared machine would make the test as noisy as a benchmark); the Classifier tests use real
onnxruntime sessions. Its speed is a benchmark (benchmarks/results/compare-cotenant.md)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx_fixtures import make_colour_model

from edgeclf.model import threads as thr
from edgeclf.model.adaptive import SPIN_WITHIN_RUN, AdaptiveSession, FreeCores, thread_arms
from edgeclf.model.classifier import Classifier


@pytest.fixture(scope="module")
def colour_model(tmp_path_factory):
    return make_colour_model(tmp_path_factory.mktemp("models") / "colour.onnx", size=(32, 32))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Timed:
    """A session whose call takes ``seconds_per_image`` x batch on the fake clock."""

    def __init__(self, clock: Clock, seconds_per_image: float) -> None:
        self.clock, self.seconds_per_image, self.calls = clock, seconds_per_image, 0

    def run(self, names, feeds, options=None):
        n = len(next(iter(feeds.values())))
        self.calls += 1
        self.clock.now += self.seconds_per_image * n
        return [np.zeros((n, 2), np.float32)]


def drive(s: AdaptiveSession, seconds: float, n: int = 1) -> None:
    end = s._clock() + seconds
    while s._clock() < end:
        s.run(None, {"x": np.zeros((n, 1))})


def test_thread_arms():
    assert thread_arms(1) == [1]
    assert thread_arms(2) == [2, 1]
    assert thread_arms(4) == [4, 1]


def test_follows_the_faster_session_as_the_load_comes_and_goes():
    clock = Clock()
    wide, narrow = Timed(clock, 0.0015), Timed(clock, 0.0024)
    s = AdaptiveSession([wide, narrow], [2, 1], clock=clock, free_cores=lambda: None)
    drive(s, 3.0)
    assert s.threads_now() == 2  # idle: all cores win
    assert s.calls["2 x 1 thread"] == 0  # single images are never split
    # One probe of the one-thread arm for a figure; then none while all cores run as fast as ever.
    assert narrow.calls == AdaptiveSession.PROBE_CALLS
    drive(s, 10.0)
    assert narrow.calls == AdaptiveSession.PROBE_CALLS

    wide.seconds_per_image = 0.0035  # a co-tenant takes a core: the wide session slows down
    drive(s, 0.1)
    assert s.threads_now() == 1  # noticed from its own calls, without waiting for a probe
    before = wide.calls
    drive(s, 3.0)
    assert s.threads_now() == 1
    # probes: 3 calls every 1 s, then every 2 s while they find nothing better
    assert wide.calls - before <= (3 / AdaptiveSession.PROBE_EVERY_S + 1) * AdaptiveSession.PROBE_CALLS
    drive(s, 10.0)
    before = wide.calls
    drive(s, 10.0)
    assert wide.calls - before <= (10 / AdaptiveSession.PROBE_MAX_S + 1) * AdaptiveSession.PROBE_CALLS

    wide.seconds_per_image = 0.0015  # the co-tenant stops: found by the next probe
    drive(s, AdaptiveSession.PROBE_MAX_S + 0.1)
    assert s.threads_now() == 2


def test_a_probe_does_not_count_its_cold_first_call():
    """A session that sat idle is slow on its first call (caches, sleeping workers): a probe that
    counted it would never leave the current arm."""
    clock = Clock()

    class ColdFirst(Timed):
        def run(self, names, feeds, options=None):
            cold = clock.now - getattr(self, "last", -1.0) > 0.1
            self.warm_calls = 0 if cold else self.warm_calls + 1
            self.seconds_per_image = 0.0034 if cold else (0.0015, 0.0016)[self.warm_calls % 2]
            out = super().run(names, feeds, options)
            self.last = clock.now
            return out

    narrow, wide = Timed(clock, 0.0024), ColdFirst(clock, 0.0015)
    s = AdaptiveSession([narrow, wide], [1, 2], clock=clock, free_cores=lambda: None)  # starts on the slower one
    while wide.calls < AdaptiveSession.PROBE_CALLS:
        s.run(None, {"x": np.zeros((1, 1))})
    # the probe's calls took 3.4, 1.6 and 1.5 ms: its figure is the median of the last two
    assert s._timings[(False, 1)].per_image[1] == pytest.approx(0.00155)
    assert s.arm_now().label == "2 threads"


def test_noise_below_the_hysteresis_does_not_flap():
    clock = Clock()
    spin, other = Timed(clock, 0.0020), Timed(clock, 0.00195)  # as many cores, 2.5% faster: noise
    s = AdaptiveSession([spin, other], [2, 2], clock=clock, free_cores=lambda: None, labels=["a", "b"])
    drive(s, 5.0)
    assert s.arm_now().label == "a"
    assert other.calls <= 4 * AdaptiveSession.PROBE_CALLS  # its probes only (every 1-2 s); a switch would be thousands


def test_an_arm_on_fewer_cores_wins_ties_and_does_not_flap_back():
    """Beside a co-tenant, all cores spinning ran as fast at the median as 1 thread, with a 2.5x
    worse tail and a core held: as fast is reason enough to take fewer cores (and to stay)."""
    clock = Clock()
    wide, narrow = Timed(clock, 0.0020), Timed(clock, 0.0024)
    s = AdaptiveSession([wide, narrow], [2, 1], clock=clock, free_cores=lambda: None)
    drive(s, 2.0)
    assert s.threads_now() == 2
    wide.seconds_per_image = 0.0025  # slowed, but not 10% slower than the other arm's figure
    drive(s, 5.0)
    assert s.threads_now() == 1
    narrow.seconds_per_image = wide.seconds_per_image = 0.0024  # a tie again: no way back
    before = s.calls["2 threads"]
    drive(s, 5.0)
    assert s.threads_now() == 1 and s.calls["2 threads"] - before <= 3 * AdaptiveSession.PROBE_CALLS


def test_a_tail_on_a_third_of_the_calls_counts():
    """A median would hide it: 1.5 ms at the median but 10 ms on 4 calls in 9 is slower than a
    steady 2.0 ms."""
    clock = Clock()

    class Tail(Timed):
        def run(self, names, feeds, options=None):
            self.seconds_per_image = 0.010 if self.calls % 9 < 4 else 0.0015
            return super().run(names, feeds, options)

    wide, narrow = Tail(clock, 0.0015), Timed(clock, 0.0020)
    s = AdaptiveSession([wide, narrow], [2, 1], clock=clock, free_cores=lambda: None)
    drive(s, 5.0)
    assert s.threads_now() == 1


def test_a_stall_of_one_call_does_not_move_it_off_the_faster_arm():
    """Beside a co-tenant 1-2% of calls stall at 4-7x the median (the scheduler gives the core
    away mid-call); whichever arm runs gets them. A running mean read each stall as the arm slowing
    down and moved the classifier to a slower arm; the median of the last calls does not."""
    clock = Clock()

    class Stalling(Timed):
        def run(self, names, feeds, options=None):
            self.seconds_per_image = 0.0150 if self.calls % 50 == 49 else 0.0015
            return super().run(names, feeds, options)

    wide, narrow = Stalling(clock, 0.0015), Timed(clock, 0.0017)
    s = AdaptiveSession([wide, narrow], [2, 1], clock=clock, free_cores=lambda: None)
    for _ in range(2000):
        s.run(None, {"x": np.zeros((1, 1))})
        assert s.threads_now() == 2
    assert narrow.calls == AdaptiveSession.PROBE_CALLS  # its one probe for a figure, no switch

    wide.seconds_per_image = 0.0035  # ... while a lasting slowdown still shows within a few calls
    wide.run = lambda names, feeds, options=None: Timed.run(wide, names, feeds, options)
    for calls in range(1, 20):
        s.run(None, {"x": np.zeros((1, 1))})
        if s.threads_now() == 1:
            break
    assert calls <= AdaptiveSession.WINDOW // 2 + 1


def test_batch_sizes_learn_apart():
    clock = Clock()

    class Batchy(Timed):
        def __init__(self, clock, single, batched):
            super().__init__(clock, single)
            self.single, self.batched = single, batched

        def run(self, names, feeds, options=None):
            self.seconds_per_image = self.single if len(next(iter(feeds.values()))) == 1 else self.batched
            return super().run(names, feeds, options)

    wide, narrow = Batchy(clock, 0.0015, 0.0030), Batchy(clock, 0.0024, 0.0020)
    s = AdaptiveSession([wide, narrow], [2, 1], clock=clock, free_cores=lambda: None)
    for _ in range(10):
        drive(s, 0.5, n=1)
        drive(s, 0.5, n=32)
    assert s.arm_now(1).label == "2 threads"
    # 1 thread wins batches: alone, or on two slices at once (equal here: the fake clock adds them up)
    assert s.arm_now(32).label in ("1 thread", "2 x 1 thread")
    assert s.arm_now(30) == s.arm_now(32)  # 17-32 are one case
    assert s.calls["2 x 1 thread"] > 0  # batches also try the split arm; single images never do


def test_batches_start_on_split_slices_and_leave_them_when_another_arm_is_faster():
    clock = Clock()
    wide, narrow = Timed(clock, 0.0015), Timed(clock, 0.0024)
    s = AdaptiveSession([wide, narrow], [2, 1], clock=clock, free_cores=lambda: None)
    assert s.arm_now(1).label == "2 threads" and s.arm_now(8).label == "2 x 1 thread"  # before any call, as it will run
    s.run(None, {"x": np.zeros((1, 1))})
    s.run(None, {"x": np.zeros((8, 1))})
    assert s.calls == {"2 threads": 1, "1 thread": 0, "2 x 1 thread": 1}
    assert s.arm_now(1).label == "2 threads" and s.arm_now(8).label == "2 x 1 thread"
    # On this fake clock the slices add up (2 x 2.4 ms per image, no parallelism): probes find the
    # all-cores arm faster and the batches move to it.
    drive(s, 5.0, n=8)
    assert s.arm_now(8).label == "2 threads"


def test_passes_the_session_through():
    clock = Clock()
    a, b = Timed(clock, 0.001), Timed(clock, 0.001)
    a.get_inputs = lambda: ["input"]
    s = AdaptiveSession([a, b], [2, 1], clock=clock)
    assert s.get_inputs() == ["input"]
    with pytest.raises(ValueError):
        AdaptiveSession([a], [2, 1])


def test_classifier_adapts_by_default_and_a_number_fixes_it(colour_model, monkeypatch):
    monkeypatch.setattr(thr, "default_threads", lambda cpu_count=None: 2)
    auto = Classifier(colour_model, provider="cpu")
    assert auto.thread_arms == [2, 1] and isinstance(auto.session, AdaptiveSession)
    arms = {a.label: a for a in auto.session.arms}
    assert list(arms) == ["2 threads", "2 threads, no spin", "1 thread", "2 x 1 thread"]
    assert [a.cores for a in arms.values()] == [2, 2, 1, 2]
    for label in ("2 threads", "2 threads, no spin", "1 thread"):
        opts = arms[label].session.get_session_options()
        assert opts.intra_op_num_threads == arms[label].threads
    # workers wait busily inside a run, never between runs (frames); or not at all
    for key, value in SPIN_WITHIN_RUN.items():
        assert arms["2 threads"].session.get_session_options().get_session_config_entry(key) == value
    assert arms["2 threads, no spin"].session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert [label for label, a in arms.items() if a.yields] == ["2 threads, no spin"]
    assert arms["2 x 1 thread"].session is arms["1 thread"].session
    fixed = Classifier(colour_model, provider="cpu", threads=2)
    assert fixed.thread_arms == [2] and fixed.thread_calls() == {}
    assert Classifier(colour_model, provider="cpu", spin=True).thread_arms == [2]

    x = np.random.default_rng(0).integers(0, 256, (5, *auto.size, 3), dtype=np.uint8)
    for i in range(40):
        np.testing.assert_allclose(auto.predict_arrays(x[i % 5:i % 5 + 1]), fixed.predict_arrays(x[i % 5:i % 5 + 1]), atol=1e-6)
    calls = auto.thread_calls()
    assert sum(calls.values()) == 40 and calls["2 x 1 thread"] == 0  # single images are never split
    assert auto.cores_of("2 x 1 thread") == 2


def test_a_split_batch_gives_every_row_in_order(colour_model, monkeypatch):
    """The split arm: slices of the batch on the one-thread session in two threads at once."""
    monkeypatch.setattr(thr, "default_threads", lambda cpu_count=None: 2)
    auto = Classifier(colour_model, provider="cpu")
    fixed = Classifier(colour_model, provider="cpu", threads=1)
    split = next(i for i, a in enumerate(auto.session.arms) if a.split == 2)
    monkeypatch.setattr(auto.session, "_choose", lambda n: split)
    x = np.random.default_rng(1).integers(0, 256, (13, *auto.size, 3), dtype=np.uint8)
    np.testing.assert_allclose(auto.predict_arrays(x), fixed.predict_arrays(x), atol=1e-6)
    assert auto.thread_calls()["2 x 1 thread"] == 1


def test_one_core_is_one_plain_session(colour_model, monkeypatch):
    monkeypatch.setattr(thr, "default_threads", lambda cpu_count=None: 1)
    clf = Classifier(colour_model, provider="cpu")
    assert clf.thread_arms == [1] and not isinstance(clf.session, AdaptiveSession)


def test_no_probe_of_more_cores_than_other_processes_leave_free():
    """Under a long load, probing the all-cores arm gave the slowest calls of all: it waits until
    /proc/stat says the cores are free again."""
    clock = Clock()
    free = {"cores": 2.0}
    wide, narrow = Timed(clock, 0.0015), Timed(clock, 0.0024)
    s = AdaptiveSession([wide, narrow], [2, 1], clock=clock, free_cores=lambda: free["cores"])
    drive(s, 2.0)
    free["cores"], wide.seconds_per_image = 1.05, 0.0040  # a co-tenant takes 95% of a core
    drive(s, 0.2)
    assert s.threads_now() == 1
    before = wide.calls
    drive(s, 10.0)
    assert wide.calls == before  # not one probe while the core is taken
    free["cores"], wide.seconds_per_image = 1.95, 0.0015
    drive(s, AdaptiveSession.PROBE_MAX_S + 0.1)
    assert s.threads_now() == 2


def test_workers_that_sleep_are_probed_per_call_only_while_another_process_holds_a_core():
    """The all-cores arm whose workers sleep between ops is slower alone; timed per call, idle, its
    probes were slow calls (and, on noise, wrong switches). Per cycle (beside this process's own
    reader) and under load it is tried as before."""
    def make(free):
        clock = Clock()
        spin, sleep, one = Timed(clock, 0.0015), Timed(clock, 0.0019), Timed(clock, 0.0024)
        s = AdaptiveSession([spin, sleep, one], [2, 2, 1], clock=clock, free_cores=lambda: free,
                            labels=["2 threads", "2 threads, no spin", "1 thread"], yields=[False, True, False])
        return s, sleep

    s, sleep = make(free=2.0)
    drive(s, 10.0)
    # once, for a figure to switch to when a load comes; then not while the cores are free
    assert sleep.calls == AdaptiveSession.PROBE_CALLS and s.calls["1 thread"] == AdaptiveSession.PROBE_CALLS
    drive(s, 10.0)
    assert sleep.calls == AdaptiveSession.PROBE_CALLS
    s.per_cycle = True
    drive(s, 3.0)
    assert sleep.calls >= AdaptiveSession.PROBE_CALLS
    for free in (1.05, None):  # a co-tenant holds a core; or /proc/stat cannot be read
        s, sleep = make(free)
        drive(s, 3.0)
        assert sleep.calls >= AdaptiveSession.PROBE_CALLS
    with pytest.raises(ValueError):
        AdaptiveSession([sleep], [2], yields=[True, False])


def test_paced_by_a_reader_it_judges_the_stream_not_the_call():
    """Beside a reader thread that decodes the frames (edgeclf predict on a file), the all-cores arm
    is fast itself but takes the reader's core, so the next frame comes late: per cycle, the time
    from one result to the next, one thread wins; per call, all cores would."""
    clock = Clock()
    wide, narrow = Timed(clock, 0.0015), Timed(clock, 0.0024)
    late = {id(wide): 0.0016, id(narrow): 0.0002}  # the wait for the next frame after each arm's call

    def stream(s: AdaptiveSession, seconds: float) -> None:
        end = clock.now + seconds
        while clock.now < end:
            before = {id(a): a.calls for a in (wide, narrow)}
            s.run(None, {"x": np.zeros((1, 1))})
            ran = wide if wide.calls > before[id(wide)] else narrow
            clock.now += late[id(ran)]

    per_call = AdaptiveSession([wide, narrow], [2, 1], clock=clock, free_cores=lambda: None)
    stream(per_call, 3.0)
    assert per_call.threads_now() == 2

    paced = AdaptiveSession([wide, narrow], [2, 1], clock=clock, free_cores=lambda: None)
    paced.per_cycle = True
    stream(paced, 3.0)
    assert paced.threads_now() == 1
    # a long pause between calls is the caller's, not the arm's: it does not count
    paced.run(None, {"x": np.zeros((1, 1))})
    clock.now += 5.0
    paced.run(None, {"x": np.zeros((1, 1))})
    t = paced._timings[(True, 1)]
    assert t.per_image[t.current] < 0.004
    assert (False, 1) not in paced._timings  # per-cycle figures are kept apart from per-call ones


def test_classifier_paced_by_reader_only_while_inside(colour_model, monkeypatch):
    monkeypatch.setattr(thr, "default_threads", lambda cpu_count=None: 2)
    clf = Classifier(colour_model, provider="cpu")
    with clf.paced_by_reader():
        assert clf.session.per_cycle is True
    assert clf.session.per_cycle is False
    with Classifier(colour_model, provider="cpu", threads=1).paced_by_reader():
        pass  # a fixed session: nothing to pace


def test_a_probe_arm_that_fails_is_not_tried_again():
    clock = Clock()
    good = Timed(clock, 0.0024)

    class Broken(Timed):
        def run(self, names, feeds, options=None):
            self.calls += 1
            raise RuntimeError("this arm cannot run the model")

    bad = Broken(clock, 0.001)
    s = AdaptiveSession([good, bad], [1, 2], clock=clock, free_cores=lambda: None)
    with pytest.raises(RuntimeError):
        drive(s, 1.0)  # the probe's error reaches the caller
    drive(s, 10.0)  # and then every call goes to the arm that works
    assert bad.calls == 1 and s.arm_now().label == "1 thread"


def test_cycle_timing_belongs_to_the_thread_that_asked_for_it():
    import threading

    clock = Clock()
    wide, narrow = Timed(clock, 0.0015), Timed(clock, 0.0024)
    s = AdaptiveSession([wide, narrow], [2, 1], clock=clock, free_cores=lambda: None)
    s.per_cycle = True
    seen = []
    other = threading.Thread(target=lambda: seen.append(s.per_cycle))
    other.start()
    other.join()
    assert s.per_cycle is True and seen == [False]


def test_free_cores_counts_only_this_process_cpus_and_not_niced_work(tmp_path):
    import os

    stat = tmp_path / "stat"
    tick = os.sysconf("SC_CLK_TCK")

    def write(busy: int, nice: int, idle: int) -> None:
        # cpu0 and cpu1 are ours; cpu7 is not (its business is not ours), the first line sums all
        stat.write_text(f"cpu  9 9 9 9 9 0 0 0 0 0\n"
                        f"cpu0 {busy} {nice} 0 {idle} 0 0 0 0 0 0\n"
                        f"cpu1 0 0 0 {busy + nice + idle} 0 0 0 0 0 0\n"
                        f"cpu7 {10 * busy} 0 0 0 0 0 0 0 0 0\nintr 1 2 3\n")

    write(0, 0, 0)
    fc = FreeCores(str(stat), cpus={0, 1})
    # one second passes on both CPUs: cpu0 busy with another process half of it, niced work a
    # quarter (the scheduler gives way to us), cpu1 idle; this process slept
    write(tick // 2, tick // 4, tick - tick // 2 - tick // 4)
    assert fc() == pytest.approx(1.5, abs=0.05)
    write(tick // 2, tick // 4, tick - tick // 2 - tick // 4)  # no time passed: the last answer
    assert fc() == pytest.approx(1.5, abs=0.05)
    assert FreeCores(str(tmp_path / "missing"), cpus={0})() is None
    stat.write_text("garbage")
    assert FreeCores(str(stat), cpus={0})() is None
    stat.write_text("cpu0 1 2 3 4 5 6 7 8\n")  # a CPU of ours is missing
    assert FreeCores(str(stat), cpus={0, 1})() is None


def test_the_adaptive_classifier_opens_its_other_sessions_only_when_it_tries_them(tmp_path):
    """A one-image predict never tries another arm: opening them all cost its cold start ~60 ms."""
    from edgeclf.model.session import LazySession

    clf = Classifier(make_colour_model(tmp_path / "m.onnx"))
    arms = [a.session for a in clf.session.arms] if hasattr(clf.session, "arms") else []
    if not arms:
        pytest.skip("one core: the classifier does not adapt")
    lazy = [s for s in arms if isinstance(s, LazySession)]
    assert not isinstance(arms[0], LazySession) and lazy and not any(s.opened for s in lazy)
    clf.classify_arrays(np.zeros((1, *clf.size, 3), np.uint8))
    assert not any(s.opened for s in lazy)
    lazy[0].get_inputs()  # first use opens it
    assert lazy[0].opened
