"""How ``edgeclf predict`` groups file frames into inference calls: by default the frames already
decoded, up to ``AUTO_BATCH``, never waiting for more; a given ``--batch`` is filled. Real
onnxruntime sessions and real files; a stage is made slow by sleeping around the real call."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import pytest
from onnx_fixtures import COLOURS, make_colour_model, solid

from edgeclf import sysinfo
from edgeclf.model.classifier import Classifier
from edgeclf.model.providers import CPU
from edgeclf.predict.loop import AUTO_BATCH, AUTO_BATCH_BYTES, auto_batch, classify, frames_held
from edgeclf.sources.base import Frame, Source
from edgeclf.sources.open import open_source

N = 40


class Frames(Source):
    """``N`` solid-colour frames, ``delay`` seconds apart (a slow decoder when above 0)."""

    kind = "video"

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__("frames")
        self.delay = delay
        self.total = N

    def __iter__(self) -> Iterator[Frame]:
        for i in range(N):
            time.sleep(self.delay)
            yield Frame(solid(COLOURS[i % 3]), self.spec, i, time.monotonic())

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_colour_model(tmp_path_factory.mktemp("batching") / "colour.onnx")


def _counting(clf: Classifier, monkeypatch, sleep: float = 0.0) -> list[int]:
    """Record the size of every inference call (and make each take ``sleep`` seconds more)."""
    sizes: list[int] = []
    real = clf.predict_arrays

    def call(batch: np.ndarray) -> np.ndarray:
        sizes.append(len(batch))
        time.sleep(sleep)
        return real(batch)

    monkeypatch.setattr(clf, "predict_arrays", call)
    return sizes


def test_slow_inference_takes_the_waiting_frames_together_and_gives_the_same_results(model, monkeypatch):
    alone = list(classify(Classifier(model, threads=1), Frames(), batch=1))
    clf = Classifier(model, threads=1)
    sizes = _counting(clf, monkeypatch, sleep=0.03)
    together = list(classify(clf, Frames()))
    assert sum(sizes) == N and max(sizes) > 1 and max(sizes) <= AUTO_BATCH
    assert [r.frame.index for r in together] == list(range(N)) == [r.frame.index for r in alone]
    assert [r.batch for r in together] == [s for s in sizes for _ in range(s)]
    # Each frame's latency_ms is its preprocessing plus its share of the call (30 ms or more).
    assert all(r.latency_ms >= 0.9 * 30 / r.batch for r in together)
    for a, b in zip(alone, together):
        assert a.prediction.label == b.prediction.label == COLOURS[a.frame.index % 3]
        assert a.prediction.probs == pytest.approx(b.prediction.probs, abs=1e-6)


def test_a_slow_reader_is_never_waited_for_by_default_but_a_given_batch_is_filled(model, monkeypatch):
    clf = Classifier(model, threads=1)
    sizes = _counting(clf, monkeypatch)
    wall, cpu = time.perf_counter(), time.thread_time()
    assert len(list(classify(clf, Frames(delay=0.01)))) == N
    wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    # Frames arrive 10 ms apart and the model takes well under 1 ms: calls of one, now and then two
    # when the machine holds this thread up; and between frames this thread sleeps on the queue
    # (polling it would burn the core the reader decodes on).
    assert np.mean(sizes) < 1.5
    assert cpu < 0.25 * wall, (cpu, wall)
    sizes.clear()
    assert len(list(classify(clf, Frames(delay=0.002), batch=6))) == N
    assert sizes == [6] * (N // 6) + [N % 6]


def test_automatic_batches_only_on_the_cpu_with_a_batch_axis_and_within_memory(model, tmp_path):
    clf = Classifier(model, threads=1)
    assert clf.providers[0] == CPU
    assert auto_batch(clf, Frames(), keep_images=False) == AUTO_BATCH
    one = Classifier(make_colour_model(tmp_path / "one.onnx", batch=1), threads=1)
    assert auto_batch(one, Frames(), keep_images=False) == 1
    # A GPU provider (faked: this machine has none): TensorRT would build an engine per new range of sizes.
    clf.providers = ["TensorrtExecutionProvider", CPU]
    assert auto_batch(clf, Frames(), keep_images=False) == 1
    # A 4K video whose frames are kept for --save: the held frames stay under the bound.
    clf.providers = [CPU]
    video = tmp_path / "uhd.mp4"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (3840, 2160))
    w.write(np.zeros((2160, 3840, 3), np.uint8))
    w.release()
    with open_source(str(video)) as src:
        kept = auto_batch(clf, src, keep_images=True)
        per_frame = 3840 * 2160 * 3 + 32 * 32 * 3
        budget = min(AUTO_BATCH_BYTES, sysinfo.available_memory_bytes() // 8)
        assert 1 <= kept < AUTO_BATCH and frames_held(kept + 1) * per_frame > budget
        assert kept == 1 or frames_held(kept) * per_frame <= budget
        assert auto_batch(clf, src, keep_images=False) == AUTO_BATCH


def test_automatic_batches_fit_an_eighth_of_the_free_memory_and_the_runs_own_estimate(model, monkeypatch):
    clf = Classifier(model, threads=1)
    folder = Frames()
    # 1.2 GB free: 150 MB for batches. 1080p frames kept for --save (6.2 MB + the input): at most 24
    # held, so batches of 6 (12 queued, 6 gathered, 6 stacked); the 256 MB cap alone allows 8.
    monkeypatch.setattr(sysinfo, "available_memory_bytes", lambda: 1_200_000_000)
    monkeypatch.setattr("edgeclf.predict.loop._frame_bytes", lambda clf, src, keep: 1920 * 1080 * 3 + 32 * 32 * 3 if keep else 32 * 32 * 3)
    assert frames_held(6) == 24 and frames_held(7) == 28
    assert auto_batch(clf, folder, keep_images=True) == 6
    assert auto_batch(clf, folder, keep_images=False) == AUTO_BATCH
    # A model whose run needs 30 MB per image (check_batch's estimate): 5 fit in 150 MB.
    monkeypatch.setattr(clf, "run_bytes_per_image", lambda: 30_000_000)
    assert auto_batch(clf, folder, keep_images=False) == 5


class Failing(Frames):
    """Gives 16 frames, then its reader fails (a stream that breaks, a disk that goes away)."""

    def __iter__(self) -> Iterator[Frame]:
        for i, frame in enumerate(super().__iter__()):
            if i == 16:
                raise OSError("the disk went away")
            yield frame


def test_a_reader_error_comes_after_every_frame_read_before_it(model, monkeypatch):
    clf = Classifier(model, threads=1)
    sizes = _counting(clf, monkeypatch, sleep=0.02)  # the reader is ahead: batches are gathered
    got = []
    with pytest.raises(OSError, match="went away"):
        for r in classify(clf, Failing()):
            got.append(r.frame.index)
    assert got == list(range(16)) and max(sizes) > 1
