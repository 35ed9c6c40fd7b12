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
from edgeclf.classifier import Classifier
from edgeclf.predict import AUTO_BATCH, AUTO_BATCH_BYTES, auto_batch, classify, frames_held
from edgeclf.providers import CPU
from edgeclf.sources import Frame, Source, open_source

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
    for a, b in zip(alone, together):
        assert a.prediction.label == b.prediction.label == COLOURS[a.frame.index % 3]
        assert a.prediction.probs == pytest.approx(b.prediction.probs, abs=1e-6)


def test_a_slow_reader_is_never_waited_for_by_default_but_a_given_batch_is_filled(model, monkeypatch):
    clf = Classifier(model, threads=1)
    sizes = _counting(clf, monkeypatch)
    assert len(list(classify(clf, Frames(delay=0.01)))) == N
    # Frames arrive 10 ms apart and the model takes well under 1 ms: calls of one, now and then two
    # when the machine holds this thread up.
    assert np.mean(sizes) < 1.5
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
