"""GStreamer pipelines for real, through an OpenCV built with GStreamer (Debian's python3-opencv:
the pip wheels have none). CI runs this file in a venv made with --system-site-packages that sees
it (see .ci/run) and sets EDGECLF_REQUIRE_GSTREAMER=1; elsewhere it skips without GStreamer.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from edgeclf.errors import EdgeclfError
from edgeclf.sources.capture import has_gstreamer
from edgeclf.sources.open import open_source

if not has_gstreamer():
    if os.environ.get("EDGECLF_REQUIRE_GSTREAMER") == "1":
        raise RuntimeError("EDGECLF_REQUIRE_GSTREAMER=1 but this OpenCV was built without GStreamer")
    pytest.skip("needs an OpenCV built with GStreamer: Debian's (apt-get install python3-opencv gstreamer1.0-plugins-good) "
                "in a venv made with --system-site-packages", allow_module_level=True)

CAPS = "video/x-raw,format=BGR,width=160,height=120,framerate=25/1"


def test_videotestsrc_pipeline_gives_live_bgr_frames():
    # pattern=red: a red frame must come out as OpenCV's BGR (0, 0, 255).
    src = open_source(f"videotestsrc is-live=true pattern=red ! videoconvert ! {CAPS} ! appsink", timeout=10)
    assert src.live and src.kind == "gstreamer"
    frames = []
    for frame in src:
        frames.append(frame)
        if len(frames) == 5:
            break
        time.sleep(0.1)  # slower than the pipeline: the capture thread drops the frames between
    src.close()
    assert all(f.image.shape == (120, 160, 3) for f in frames)
    b, g, r = np.median(frames[-1].image.reshape(-1, 3), axis=0)
    assert r > 200 and g < 40 and b < 40, (b, g, r)
    assert frames[-1].index > frames[0].index + 4 and src.dropped > 0


def test_broken_pipeline_is_a_one_line_error():
    with pytest.raises(EdgeclfError, match="cannot open|gave no frame"):
        open_source("videotestsrc ! no_such_element_here ! appsink", timeout=3)
