"""Load on the live view: 20 viewers at once (each with the video and the figures open, as the
page does) must not slow the inference loop, and viewers that stall must not hold up the others.

The server is a real ``edgeclf predict --serve`` process classifying a 640x480 video as fast as it
can (``--no-realtime``) with a model of a real edge classifier's cost. Machine noise is larger
than the effect measured, so windows with and without viewers alternate and their paired ratios
are compared by the median. On a shared machine another process can take a core for seconds: a
round whose two viewer-less windows (before and after) disagree by more than ``STABLE`` measured
the neighbours, not the viewers, so it is set aside and another round is run instead (the
viewers cannot cause that disagreement: neither window has any). The threshold is unchanged. The viewers would be on other machines; here they share the two
cores with the server, so their threads run at the lowest priority (measured: at normal priority
the test's own reading costs the server another 3-7%)."""

from __future__ import annotations

import signal
import socket
import statistics
import time

import pytest
from live_helpers import ServeProcess, StreamCounter, make_colour_video, stalled_viewer
from onnx_fixtures import make_conv_model

VIEWERS = 20
ROUNDS = 9  # stable rounds the median is taken over
MAX_ROUNDS = 24
STABLE = 0.12  # largest relative difference between the viewer-less windows around a round
WINDOW_S = 1.5


@pytest.fixture(scope="module")
def load_setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("serve_load")
    # Camera-like noise: about 30 KB per 640x480 JPEG, as a webcam gives (stronger white noise
    # would make them 95 KB).
    video = make_colour_video(d / "load.mp4", frames=100, fps=25, hold=10, size=(640, 480), noise=12)
    return make_conv_model(d / "conv.onnx"), video


def test_twenty_viewers_do_not_slow_inference(load_setup):
    model, video = load_setup
    with ServeProcess(model, video, "--loop", "--no-realtime") as sp:
        sp.wait_frames(100)
        time.sleep(1.0)
        base, loaded, per_viewer = [sp.frame_rate(WINDOW_S)], [], []

        def stable(i: int) -> bool:
            return abs(base[i] - base[i + 1]) <= STABLE * max(base[i], base[i + 1])

        while len(loaded) < MAX_ROUNDS and sum(map(stable, range(len(loaded)))) < ROUNDS:
            video_viewers = [StreamCounter(sp.port, "/stream.mjpg", b"--frame", nice=19) for _ in range(VIEWERS)]
            event_viewers = [StreamCounter(sp.port, "/events", b"data: ", nice=19) for _ in range(VIEWERS)]
            stalled = [stalled_viewer(sp.port) for _ in range(2)] + [stalled_viewer(sp.port, "/events")]
            idle = socket.create_connection(("127.0.0.1", sp.port))  # never sends a request
            for v in video_viewers + event_viewers:
                v.start()
            time.sleep(0.5)
            t0 = time.monotonic()
            loaded.append(sp.frame_rate(WINDOW_S))
            seconds = time.monotonic() - t0
            per_viewer.append(([v.parts_since(t0) / seconds for v in video_viewers],
                               [v.parts_since(t0) / seconds for v in event_viewers]))
            assert sp.health()["viewers"] == {"stream": VIEWERS + 2, "events": VIEWERS + 1}
            for v in video_viewers + event_viewers:
                v.close()
            for s in (*stalled, idle):
                s.close()
            base.append(sp.frame_rate(WINDOW_S))

        kept = [i for i in range(len(loaded)) if stable(i)]
        n_stable = len(kept)
        if n_stable < ROUNDS:  # too noisy throughout: judge on every round rather than on a few
            kept = list(range(len(loaded)))
        paired = [loaded[i] / ((base[i] + base[i + 1]) / 2) for i in kept]
        ratio = statistics.median(paired)
        summary = (f"frames/s without viewers {[round(x) for x in base]}, with {VIEWERS} {[round(x) for x in loaded]}, "
                   f"{n_stable} of {len(loaded)} rounds stable, median over {len(kept)}: {ratio:.3f}")
        print(summary)
        assert ratio >= 0.90, f"{VIEWERS} viewers slowed inference by more than 10%: {summary}"

        for video_fps, event_hz in per_viewer:
            # The stream runs at the video's 25 fps and the figures at 10 Hz, for every reading
            # viewer alike, while three others stall.
            assert min(video_fps) >= 12, f"a viewer was held up: {sorted(video_fps)[:3]} frames/s"
            assert min(video_fps) >= 0.6 * statistics.median(video_fps)
            assert min(event_hz) >= 5, f"an events viewer was held up: {sorted(event_hz)[:3]} events/s"

        assert sp.stop(signal.SIGINT) == 130
    assert "Traceback" not in sp.stderr
