"""RTSP for real: GStreamer's RTSP server (see rtsp_server.py) streams a live 25 fps pattern on
loopback and edgeclf reads it through OpenCV's FFmpeg backend, as it reads an IP camera.

Frames arrive; a slow consumer gets the newest frame, not a backlog; the source reconnects when the
server is restarted. Skipped where the system Python has no GStreamer RTSP server; CI installs it
and sets EDGECLF_REQUIRE_RTSP=1, so there it runs.
"""

from __future__ import annotations

import os
import time

import pytest
from mjpeg_server import check_reconnects, free_port
from rtsp_server import RtspServer, available

from edgeclf.sources.open import open_source

if not available():
    if os.environ.get("EDGECLF_REQUIRE_RTSP") == "1":
        raise RuntimeError("EDGECLF_REQUIRE_RTSP=1 but the system Python has no GStreamer RTSP server "
                           "(apt install python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good)")
    pytest.skip("needs a GStreamer RTSP server in the system Python (apt-get install python3-gi gir1.2-gst-rtsp-server-1.0 "
                "gstreamer1.0-plugins-good)", allow_module_level=True)

FPS = 25
SLOW_MODEL_S = 0.2  # five frame intervals per label


def test_frames_arrive_and_a_slow_model_gets_the_newest():
    with RtspServer(free_port(), FPS) as server:
        src = open_source(server.url, timeout=10)
        assert src.live and src.kind == "stream"
        ages, indices = [], []
        for frame in src:
            assert frame.image.shape == (120, 160, 3)
            ages.append(time.monotonic() - frame.captured_at)
            indices.append(frame.index)
            if len(indices) == 12:
                break
            time.sleep(SLOW_MODEL_S)
        src.close()
    print(f"RTSP: frame ages (s) max {max(ages):.3f}; indices {indices}; dropped {src.dropped}")
    # Each frame given was captured within about a frame interval of being used, while the
    # frames in between were dropped, not queued.
    assert max(ages[1:]) < 0.2, ages
    assert src.dropped >= 20 and all(b - a >= 2 for a, b in zip(indices[1:], indices[2:])), indices


def test_reconnects_when_the_server_restarts():
    server = RtspServer(free_port(), FPS).start()
    warnings: list[str] = []
    # The read timeout is how long a silent stream is taken for alive.
    src = open_source(server.url, timeout=3, warn=warnings.append)
    check_reconnects(server, src, warnings, first_within=10, back_within=30)
