"""``csi://N`` camera modules on the CSI connector (``csi://0?width=1280&height=720&fps=30&flip=2``):
on a Raspberry Pi through picamera2 (libcamera: OpenCV cannot open these cameras), on a Jetson
through the ``nvarguscamerasrc`` GStreamer pipeline of JetPack's OpenCV.

``open_csi`` looks up ``picamera2_module``, ``is_jetson`` and ``has_gstreamer`` in this module when
it is called (tests replace them here to stand in for a board)."""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from edgeclf.errors import EdgeclfError
from edgeclf.sources.capture import CaptureFactory, has_gstreamer

CSI_DEFAULTS = {"width": 640, "height": 480, "fps": 30, "flip": 0}


def parse_csi(spec: str) -> tuple[int, dict[str, int]]:
    """``csi://N?width=W&height=H&fps=F&flip=M`` -> (N, options); EdgeclfError in one line if bad."""
    parts = urllib.parse.urlsplit(spec)
    if not (parts.netloc.isascii() and parts.netloc.isdigit()) or parts.path not in ("", "/"):
        raise EdgeclfError(f"{spec}: expected csi://N (the camera number), e.g. csi://0?width=1280&height=720&fps=30")
    options = dict(CSI_DEFAULTS)
    for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        if key not in options:
            raise EdgeclfError(f"{spec}: unknown option {key!r} (expected {', '.join(CSI_DEFAULTS)})")
        if not (value.isascii() and value.isdigit()) or (key != "flip" and int(value) == 0) or (key == "flip" and int(value) > 7):
            raise EdgeclfError(f"{spec}: {key}={value!r} is not valid ({'0-7' if key == 'flip' else 'a positive whole number'})")
        options[key] = int(value)
    return int(parts.netloc), options


def jetson_pipeline(index: int, width: int, height: int, fps: int, flip: int = 0) -> str:
    """The standard GStreamer pipeline for a Jetson CSI camera: Argus capture in NVMM memory,
    nvvidconv (hardware colour conversion and flip-method) to BGRx, then BGR for OpenCV; the
    appsink keeps one buffer and drops the rest, so frames never queue up."""
    return (
        f"nvarguscamerasrc sensor-id={index} ! "
        f"video/x-raw(memory:NVMM), width={width}, height={height}, framerate={fps}/1, format=NV12 ! "
        f"nvvidconv flip-method={flip} ! video/x-raw, width={width}, height={height}, format=BGRx ! "
        "videoconvert ! video/x-raw, format=BGR ! appsink drop=true max-buffers=1 sync=false"
    )


def is_jetson() -> bool:
    """An NVIDIA Jetson (L4T): where nvarguscamerasrc can exist."""
    if Path("/etc/nv_tegra_release").exists():
        return True
    try:
        return b"nvidia,tegra" in Path("/proc/device-tree/compatible").read_bytes()
    except OSError:
        return False


def picamera2_module() -> Any | None:
    """The picamera2 package (Raspberry Pi OS: ``apt install python3-picamera2``), if importable."""
    try:
        import picamera2
    except ImportError:
        return None
    return picamera2


def picamera2_to_bgr(array: np.ndarray, fmt: str) -> np.ndarray:
    """A picamera2 frame as BGR. Its format names give the order of a 32-bit little-endian word,
    so in memory "RGB888" is B, G, R (OpenCV's order as is), "BGR888" is R, G, B, "XRGB8888"
    is B, G, R, X and "XBGR8888" (the default of many set-ups) R, G, B, X."""
    fmt = fmt.upper()
    if array.ndim == 3 and array.shape[2] == 4:
        array = array[..., :3]
        return np.ascontiguousarray(array[..., ::-1]) if fmt.startswith("XBGR") else np.ascontiguousarray(array)
    if fmt == "BGR888":
        return np.ascontiguousarray(array[..., ::-1])
    return array


class Picamera2Capture:
    """A Raspberry Pi camera module read through picamera2, with ``cv2.VideoCapture``'s interface
    (``read``, ``get``, ``isOpened``, ``release``) so that ``LiveSource``'s capture thread reads it
    like any camera. It asks for BGR ("RGB888") at the given size and frame rate and converts
    whatever format the camera was configured with."""

    def __init__(self, module: Any, index: int, width: int, height: int, fps: int) -> None:
        self.fps = float(fps)
        self.cam = module.Picamera2(index)
        try:
            config = self.cam.create_video_configuration(
                main={"size": (width, height), "format": "RGB888"},
                controls={"FrameRate": float(fps)},
                buffer_count=2,  # the capture thread keeps the newest frame itself
            )
            self.cam.configure(config)
            self.format = str(self.cam.camera_config["main"]["format"])
            self.cam.start()
        except Exception:
            self.cam.close()
            raise
        self._open = True

    def isOpened(self) -> bool:  # noqa: N802 (cv2.VideoCapture's interface)
        return self._open

    def get(self, prop: int) -> float:
        return self.fps if prop == cv2.CAP_PROP_FPS else 0.0

    def read(self) -> tuple[bool, np.ndarray | None]:
        try:
            array = self.cam.capture_array("main")
        except Exception:  # the camera went away: LiveSource reopens it
            return False, None
        return True, picamera2_to_bgr(array, self.format)

    def release(self) -> None:
        if self._open:
            self._open = False
            try:
                self.cam.stop()
            finally:
                self.cam.close()


def open_csi(spec: str, capture_factory: CaptureFactory) -> tuple[Callable[[], Any], str]:
    """How to open the camera ``spec`` names on this board: (opener, kind). Raises EdgeclfError in
    one line where there is neither picamera2 nor a Jetson with a GStreamer-enabled OpenCV."""
    index, o = parse_csi(spec)
    module = picamera2_module()
    if module is not None:
        if o["flip"]:
            raise EdgeclfError(f"{spec}: flip is the Jetson's nvvidconv flip-method; edgeclf does not flip Raspberry Pi cameras")
        return (lambda: Picamera2Capture(module, index, o["width"], o["height"], o["fps"])), "camera"
    if is_jetson():
        if not has_gstreamer():
            raise EdgeclfError(f"{spec}: a Jetson CSI camera needs an OpenCV built with GStreamer (JetPack's python3-opencv), not the pip wheel")
        pipeline = jetson_pipeline(index, o["width"], o["height"], o["fps"], o["flip"])
        return (lambda: capture_factory(pipeline, cv2.CAP_GSTREAMER, [])), "camera"
    raise EdgeclfError(
        f"{spec}: no CSI camera stack here: on a Raspberry Pi install picamera2 (apt install python3-picamera2; "
        "a venv made with --system-site-packages sees it), on a Jetson use JetPack's OpenCV"
    )
