"""``csi://N`` camera modules.

picamera2 (a Raspberry Pi's camera stack) and a Jetson cannot exist on this machine, so only they
are faked: a stand-in ``picamera2`` package with picamera2's interface (``Picamera2``,
``create_video_configuration``, ``configure``, ``camera_config``, ``start``, ``capture_array``,
``stop``, ``close``) that returns frames in picamera2's memory layouts, and for the Jetson
``is_jetson`` and the GStreamer capture. The capture thread, the colour conversion, the classifier
and the CLI are the real ones.
"""

from __future__ import annotations

import sys
import textwrap
import time

import cv2
import numpy as np
import pytest
from conftest import error_line, run_cli
from onnx_fixtures import make_colour_model

from edgeclf.errors import EdgeclfError
from edgeclf.model.classifier import Classifier
from edgeclf.sources import csi
from edgeclf.sources.csi import jetson_pipeline, parse_csi, picamera2_to_bgr
from edgeclf.sources.open import open_source

STAND_IN = textwrap.dedent('''
    """Stand-in for picamera2 (tests only): solid frames of RGB colour COLOUR in the configured
    format and size, at the configured frame rate."""
    import time

    import numpy as np

    COLOUR = (255, 0, 0)  # RGB: red
    FORCE_FORMAT = None   # the format the "camera" configures, whatever was asked (e.g. XBGR8888)
    CONFIGS = []
    CLOSED = []


    class Picamera2:
        def __init__(self, camera_num=0):
            self.camera_num = camera_num
            self.camera_config = None
            self.started = False
            self.n = 0

        def create_video_configuration(self, main=None, controls=None, buffer_count=6):
            return {"main": dict(main or {}), "controls": dict(controls or {}), "buffer_count": buffer_count}

        def configure(self, config):
            config = {**config, "main": dict(config["main"])}
            if FORCE_FORMAT:
                config["main"]["format"] = FORCE_FORMAT
            CONFIGS.append(config)
            self.camera_config = config

        def start(self):
            self.started = True
            self.t0 = time.monotonic()

        def capture_array(self, name="main"):
            assert self.started and name == "main"
            fps = self.camera_config["controls"]["FrameRate"]
            due = self.t0 + self.n / fps
            time.sleep(max(0.0, due - time.monotonic()))
            self.n += 1
            w, h = self.camera_config["main"]["size"]
            fmt = self.camera_config["main"]["format"]
            r, g, b = COLOUR
            # picamera2's memory layouts: format names give the order of a little-endian word.
            pixel = {"RGB888": (b, g, r), "BGR888": (r, g, b), "XBGR8888": (r, g, b, 255), "XRGB8888": (b, g, r, 255)}[fmt]
            return np.tile(np.array(pixel, np.uint8), (h, w, 1))

        def stop(self):
            self.started = False

        def close(self):
            CLOSED.append(self.camera_num)
''')


@pytest.fixture
def picamera2(tmp_path, monkeypatch):
    pkg = tmp_path / "standin" / "picamera2"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(STAND_IN)
    monkeypatch.syspath_prepend(str(pkg.parent))
    monkeypatch.delitem(sys.modules, "picamera2", raising=False)
    import picamera2 as module

    yield module
    sys.modules.pop("picamera2", None)


@pytest.fixture(scope="module")
def colour_model(tmp_path_factory):
    return make_colour_model(tmp_path_factory.mktemp("csi") / "colour.onnx")


@pytest.mark.parametrize("fmt", ["RGB888", "BGR888", "XBGR8888", "XRGB8888"])
def test_picamera2_frames_are_bgr_whatever_the_format(fmt, picamera2, colour_model):
    picamera2.FORCE_FORMAT = fmt
    with open_source("csi://0?width=96&height=64&fps=50", timeout=5) as src:
        assert src.live and src.kind == "camera" and src.fps == 50
        frame = next(iter(src))
    assert frame.image.shape == (64, 96, 3) and frame.image.dtype == np.uint8
    assert tuple(frame.image[0, 0]) == (0, 0, 255)  # red, in OpenCV's BGR
    assert Classifier(colour_model).predict(frame.image).label == "red"
    config = picamera2.CONFIGS[-1]
    assert config["main"]["size"] == (96, 64) and config["controls"]["FrameRate"] == 50
    assert config["main"]["format"] == fmt


def test_picamera2_asks_for_bgr_and_closes_the_camera(picamera2):
    with open_source("csi://1", timeout=5) as src:
        next(iter(src))
    config = picamera2.CONFIGS[-1]
    assert config["main"] == {"size": (640, 480), "format": "RGB888"}  # defaults; RGB888 is BGR in memory
    assert picamera2.CLOSED == [1]


def test_picamera2_refuses_the_jetson_only_flip(picamera2):
    with pytest.raises(EdgeclfError, match="flip is the Jetson's nvvidconv flip-method"):
        open_source("csi://0?flip=2")
    assert picamera2.CONFIGS == []  # refused before the camera was touched


def test_picamera2_slow_model_gets_the_newest_frame(picamera2):
    with open_source("csi://0?width=64&height=48&fps=50", timeout=5) as src:
        indices = []
        for frame in src:
            indices.append(frame.index)
            if len(indices) == 6:
                break
            time.sleep(0.1)  # five frame intervals
    assert all(b - a >= 3 for a, b in zip(indices[1:], indices[2:])), indices
    assert src.dropped >= 10


def test_picamera2_layouts():
    rgb = np.array([[[10, 20, 30]]], np.uint8)  # R, G, B
    assert picamera2_to_bgr(rgb[..., ::-1], "RGB888").tolist() == [[[30, 20, 10]]]
    assert picamera2_to_bgr(rgb, "BGR888").tolist() == [[[30, 20, 10]]]
    assert picamera2_to_bgr(np.dstack([rgb, [[[255]]]]).astype(np.uint8), "XBGR8888").tolist() == [[[30, 20, 10]]]
    assert picamera2_to_bgr(np.dstack([rgb[..., ::-1], [[[255]]]]).astype(np.uint8), "XRGB8888").tolist() == [[[30, 20, 10]]]


class FakeJetsonCamera:
    """The Jetson's CSI camera behind its GStreamer pipeline (cannot exist here)."""

    def __init__(self) -> None:
        self.n = 0

    def isOpened(self) -> bool:  # noqa: N802
        return True

    def get(self, prop: int) -> float:
        return 60.0 if prop == cv2.CAP_PROP_FPS else 0.0

    def read(self):
        time.sleep(0.01)
        self.n += 1
        return True, np.full((72, 128, 3), (0, 255, 0), np.uint8)

    def release(self) -> None:
        pass


def test_jetson_opens_the_nvargus_pipeline(monkeypatch):
    monkeypatch.setattr(csi, "picamera2_module", lambda: None)
    monkeypatch.setattr(csi, "is_jetson", lambda: True)
    monkeypatch.setattr(csi, "has_gstreamer", lambda: True)
    opened = []

    def factory(target, api, params):
        opened.append((target, api))
        return FakeJetsonCamera()

    with open_source("csi://1?width=1280&height=720&fps=60&flip=2", timeout=5, capture_factory=factory) as src:
        frame = next(iter(src))
    assert frame.image.shape == (72, 128, 3) and src.fps == 60
    pipeline, api = opened[0]
    assert api == cv2.CAP_GSTREAMER
    assert pipeline == jetson_pipeline(1, 1280, 720, 60, 2)
    assert pipeline.startswith("nvarguscamerasrc sensor-id=1 ! video/x-raw(memory:NVMM), width=1280, height=720, framerate=60/1")
    assert "nvvidconv flip-method=2" in pipeline and pipeline.endswith("appsink drop=true max-buffers=1 sync=false")


def test_jetson_without_gstreamer_opencv_is_one_line(monkeypatch):
    monkeypatch.setattr(csi, "picamera2_module", lambda: None)
    monkeypatch.setattr(csi, "is_jetson", lambda: True)
    monkeypatch.setattr(csi, "has_gstreamer", lambda: False)
    with pytest.raises(EdgeclfError, match="csi://0: a Jetson CSI camera needs an OpenCV built with GStreamer"):
        open_source("csi://0")


def test_no_camera_stack_is_one_line_error(colour_model):
    """Here there is neither picamera2 nor a Jetson: the real CLI says so."""
    line = error_line(run_cli("predict", colour_model, "csi://0"))
    assert line.startswith("edgeclf: error: csi://0: no CSI camera stack here") and "picamera2" in line


@pytest.mark.parametrize("spec, problem", [
    ("csi://cam", "expected csi://N"), ("csi://0?zoom=2", "unknown option 'zoom'"),
    ("csi://0?width=-1", "width='-1' is not valid"), ("csi://0?fps=0", "fps='0' is not valid"),
    ("csi://0?flip=8", "flip='8' is not valid"),
])
def test_bad_csi_options(spec, problem):
    with pytest.raises(EdgeclfError, match=problem.replace("?", r"\?")):
        parse_csi(spec)
