"""Where frames come from: one ``open_source(spec)`` for files, folders, videos, cameras and streams.

Like jetson-inference's input URIs, the spec says what to open:

- ``photo.jpg`` an image; ``photos/`` a folder (recursive, sorted); ``"shots/*.png"`` a glob;
- ``clip.mp4`` a video file (``loop``: from the start again at its end; ``realtime``: at its own
  frame rate, read like a camera, so a file can stand in for one in demos and tests);
- ``0`` a camera index, ``/dev/video0`` a V4L2 camera;
- ``rtsp://...``, ``http(s)://...`` (MJPEG) a network stream;
- ``"nvarguscamerasrc ! ... ! appsink"`` a GStreamer pipeline, when OpenCV was built with GStreamer;
- ``csi://0`` a camera module on the CSI connector (``csi://0?width=1280&height=720&fps=30&flip=2``):
  on a Raspberry Pi through picamera2 (libcamera: OpenCV cannot open these cameras), on a Jetson
  through the ``nvarguscamerasrc`` GStreamer pipeline of JetPack's OpenCV.

File sources give every frame, in order. Live sources (cameras, streams) read in a capture thread
that keeps only the newest frame, so a slow model always labels the present instead of working
through a growing backlog of buffered frames (opencv/opencv#13145); when the stream drops, the
thread reconnects with exponential back-off.
"""

from __future__ import annotations

import glob
import math
import os
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import cv2
import numpy as np

from edgeclf.limits import PIXEL_LIMIT
from edgeclf.errors import EdgeclfError, ImageReadError, warn, warn_skip
from edgeclf.image import is_image_file, read_image

VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".mjpeg", ".mjpg", ".gif")
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
_GLOB_CHARS = re.compile(r"[*?\[]")

SkipHandler = Callable[[str, str], None]
#: ``capture_factory(target, api_preference, params)`` -> an object like ``cv2.VideoCapture``.
CaptureFactory = Callable[[Any, int, Sequence[int]], Any]


_warn = warn


def check_timeout(timeout: float) -> float:
    """``--timeout``: a finite number of seconds above 0 (at most a day), else a one-line error."""
    if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and 0 < timeout <= 86400):
        raise EdgeclfError(f"--timeout {timeout}: must be a number of seconds above 0 and at most 86400")
    return float(timeout)


def cv2_capture(target: Any, api: int, params: Sequence[int]) -> cv2.VideoCapture:
    return cv2.VideoCapture(target, api, list(params))


def quiet_opencv() -> None:
    """Keep OpenCV's and FFmpeg's own log lines off stderr: edgeclf reports problems in one line."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # read when FFmpeg is first used
    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    except AttributeError:  # older OpenCV builds
        pass


def has_gstreamer() -> bool:
    return bool(re.search(r"GStreamer:\s*YES", cv2.getBuildInformation()))


@dataclass
class Frame:
    """One image to classify. ``index``: position in the file list, or frame number in a video or
    stream (for live sources it counts every captured frame, so gaps show the frames skipped to
    stay current). ``captured_at``: ``time.monotonic()`` when it was read."""

    image: np.ndarray
    source: str
    index: int
    captured_at: float


class Source:
    """An iterable of ``Frame``; close it (or use ``with``) to release files, devices and threads."""

    kind = "source"
    live = False
    fps: float | None = None
    total: int | None = None  # frames it will give, when known in advance
    #: "connecting", "connected", "reconnecting" or "ended" (shown by ``--serve``'s health endpoint).
    state = "connected"

    def __init__(self, spec: str, every: int = 1, max_frames: int | None = None) -> None:
        if every < 1:
            raise EdgeclfError(f"--every must be at least 1 (got {every})")
        if max_frames is not None and max_frames < 0:
            raise EdgeclfError(f"--max-frames must be 0 or more (got {max_frames})")
        self.spec = spec
        self.every = every
        self.max_frames = max_frames
        self.skipped: list[dict] = []
        self.dropped = 0  # live sources: captured frames replaced by a newer one before use

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _limit(self, total: int) -> int:
        n = -(-total // self.every)
        return n if self.max_frames is None else min(n, self.max_frames)


class ImageFiles(Source):
    """Image files in order; unreadable ones are reported to ``on_skip``, counted, and skipped."""

    def __init__(self, spec: str, paths: Sequence[Path], kind: str, every: int = 1, max_frames: int | None = None,
                 on_skip: SkipHandler = warn_skip) -> None:
        super().__init__(spec, every, max_frames)
        self.kind = kind
        self.paths = list(paths)
        self.on_skip = on_skip
        self.total = self._limit(len(self.paths))

    def __iter__(self) -> Iterator[Frame]:
        given = 0
        for i in range(0, len(self.paths), self.every):
            if self.max_frames is not None and given >= self.max_frames:
                return
            path = self.paths[i]
            try:
                if not is_image_file(path):
                    raise ImageReadError(path, f"not an image file ({path.suffix or 'no extension'})")
                image = read_image(path, max_pixels=PIXEL_LIMIT)
            except ImageReadError as e:
                self.skipped.append({"path": e.path, "reason": e.reason})
                self.on_skip(e.path, e.reason)
                continue
            given += 1
            yield Frame(image, str(path), i, time.monotonic())


def _open_video(spec: str, capture_factory: CaptureFactory) -> Any:
    cap = capture_factory(spec, cv2.CAP_ANY, [])
    if not cap.isOpened():
        raise EdgeclfError(f"{spec}: not an image or a video OpenCV can read")
    try:
        check_frame_size(cap, spec)
    except EdgeclfError:
        cap.release()
        raise
    return cap


def check_frame_size(cap: Any, spec: str) -> None:
    """Refuse a video or stream whose frames are above edgeclf's pixel limit, before one is decoded:
    the file or peer chooses the frame size, and every frame held costs width x height x 3 bytes."""
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
    if w * h > PIXEL_LIMIT:
        raise EdgeclfError(f"{spec}: {w}x{h} frames, above edgeclf's limit of {PIXEL_LIMIT / 1e6:g} megapixels")


def _video_fps(cap: Any) -> float | None:
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0)
    return fps if 0 < fps < 1000 else None


class VideoCapture:
    """A video file's capture that can start again from its first frame: ``rewind()`` reopens the
    file (which works for every container, where seeking does not) and counts frames per pass."""

    def __init__(self, spec: str, capture_factory: CaptureFactory = cv2_capture) -> None:
        self.spec = spec
        self._factory = capture_factory
        self.cap = _open_video(spec, capture_factory)
        self.taken = 0  # frames read or grabbed since the file was last opened

    def read(self) -> tuple[bool, np.ndarray | None]:
        ok, image = self.cap.read()
        self.taken += bool(ok and image is not None)
        return ok, image

    def grab(self) -> bool:
        ok = self.cap.grab()
        self.taken += bool(ok)
        return ok

    def rewind(self) -> bool:
        """Start again from the first frame; False when this pass gave no frame (an empty video
        would loop for ever). Raises EdgeclfError when the file can no longer be opened."""
        if self.taken == 0:
            return False
        self.cap.release()
        self.cap = _open_video(self.spec, self._factory)
        self.taken = 0
        return True

    def isOpened(self) -> bool:  # noqa: N802 (cv2.VideoCapture's interface)
        return self.cap.isOpened()

    def get(self, prop: int) -> float:
        return self.cap.get(prop)

    def release(self) -> None:
        self.cap.release()


class VideoFile(Source):
    """Every frame of a video file, in order (``every`` N-th one); with ``loop``, from the start
    again at the end (frame numbers restart too)."""

    kind = "video"

    def __init__(self, spec: str, every: int = 1, max_frames: int | None = None, loop: bool = False,
                 capture_factory: CaptureFactory = cv2_capture) -> None:
        super().__init__(spec, every, max_frames)
        self.loop = loop
        self.cap = VideoCapture(spec, capture_factory)
        self.fps = _video_fps(self.cap)
        count = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.total = self._limit(count) if count > 0 and not loop else None

    def __iter__(self) -> Iterator[Frame]:
        given = 0
        i = 0
        while self.max_frames is None or given < self.max_frames:
            if i % self.every:
                ok = self.cap.grab()  # skipped frames are not converted, only demuxed/decoded
                image = None
            else:
                ok, image = self.cap.read()
            if not ok or (image is None and not i % self.every):
                if self.loop and self.cap.rewind():
                    i = 0
                    continue
                self.state = "ended"
                return
            if image is not None:
                yield Frame(image, self.spec, i, time.monotonic())
                given += 1
            i += 1
        self.state = "ended"

    def close(self) -> None:
        self.cap.release()


class PacedCapture:
    """A video file read like a camera: ``read()`` returns each frame at its time in the video
    (``fps``), and with ``loop`` starts again at the end. Give it to ``LiveSource`` so a slow model
    skips frames, as it would on a camera, instead of slowing the video down."""

    def __init__(self, cap: VideoCapture, fps: float, loop: bool = False) -> None:
        self.cap = cap
        self.fps = fps
        self.loop = loop
        self._start: float | None = None
        self._n = 0  # frames read since _start

    def isOpened(self) -> bool:  # noqa: N802 (cv2.VideoCapture's interface)
        return self.cap.isOpened()

    def get(self, prop: int) -> float:
        return self.fps if prop == cv2.CAP_PROP_FPS else self.cap.get(prop)

    def read(self) -> tuple[bool, np.ndarray | None]:
        now = time.monotonic()
        if self._start is None:
            self._start = now
        due = self._start + self._n / self.fps
        if due > now:
            time.sleep(due - now)
        elif now - due > 1.0:  # far behind (the process was paused): restart the clock, don't race
            self._start, self._n = now, 0
        ok, image = self.cap.read()
        if (not ok or image is None) and self.loop:
            try:
                if self.cap.rewind():
                    ok, image = self.cap.read()
            except EdgeclfError:  # the file went away: the source ends
                return False, None
        if ok and image is not None:
            self._n += 1
        return ok, image

    def release(self) -> None:
        self.cap.release()


class LiveSource(Source):
    """A camera or network stream read by a capture thread that keeps only the newest frame.

    Iterating waits for a frame newer than the last one given and yields it; frames captured in
    between are dropped (counted in ``dropped``). When reading fails, the thread reopens the
    capture with exponential back-off (``backoff`` seconds, doubling up to ``max_backoff``), for
    ``reconnect_for`` seconds (None: for ever); then iteration ends. With ``reconnect=False`` (a
    video file read in real time) the end of the input is the end of the source.
    """

    live = True

    def __init__(self, spec: str, kind: str, open_capture: Callable[[], Any], every: int = 1,
                 max_frames: int | None = None, timeout: float = 10.0, reconnect_for: float | None = None,
                 backoff: float = 0.25, max_backoff: float = 4.0, warn: Callable[[str], None] = _warn,
                 reconnect: bool = True) -> None:
        super().__init__(spec, every, max_frames)
        self.kind = kind
        self.state = "connecting"
        self._open_capture = open_capture
        self.reconnect = reconnect
        self.reconnect_for = reconnect_for
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.warn = warn
        self.reconnects = 0
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._latest: tuple[np.ndarray, int, float] | None = None
        self._seq = -1
        self._ended = False

        what = "camera" if kind == "camera" else "stream"
        cap = self._try_open()
        if cap is None:
            raise EdgeclfError(f"{spec}: cannot open {what}" + ("" if kind == "camera" else f" (no answer within {timeout:g} s)"))
        try:
            check_frame_size(cap, spec)
        except EdgeclfError:
            cap.release()
            raise
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0)
        self.fps = fps if 0 < fps < 1000 else None
        self._thread = threading.Thread(target=self._run, args=(cap,), name=f"capture {spec}", daemon=True)
        self._thread.start()
        with self._cond:
            self._cond.wait_for(lambda: self._seq >= 0 or self._ended, timeout=timeout)
            got_frame = self._seq >= 0
        if not got_frame:
            self.close()
            raise EdgeclfError(f"{spec}: {what} opened but gave no frame within {timeout:g} s")

    def _try_open(self) -> Any | None:
        try:
            cap = self._open_capture()
        except Exception:  # a backend that raises instead of returning a closed capture
            return None
        if cap is None or not cap.isOpened():
            if cap is not None:
                cap.release()
            return None
        return cap

    def _run(self, cap: Any) -> None:
        delay = self.backoff
        lost_at: float | None = None
        reopened = False
        try:
            while not self._stop.is_set():
                if cap is None:
                    if self.reconnect_for is not None and lost_at is not None and time.monotonic() - lost_at > self.reconnect_for:
                        self.warn(f"{self.spec}: gave up reconnecting after {self.reconnect_for:g} s")
                        return
                    cap = self._try_open()
                    if cap is None:
                        self._stop.wait(delay)
                        delay = min(delay * 2, self.max_backoff)
                        continue
                    reopened = True
                ok, image = cap.read()
                if not ok or image is None:
                    cap.release()
                    cap = None
                    if self._stop.is_set() or not self.reconnect:
                        break
                    self.state = "reconnecting"
                    if lost_at is None:  # a new loss: reconnect at once
                        lost_at = time.monotonic()
                        delay = self.backoff
                        if self._seq >= 0:  # before the first frame, open_source reports the failure
                            self.warn(f"{self.spec}: stream lost; reconnecting")
                    else:  # reopened but failed again: back off
                        self._stop.wait(delay)
                        delay = min(delay * 2, self.max_backoff)
                    continue
                if reopened:
                    self.reconnects += 1
                    self.warn(f"{self.spec}: reconnected")
                    reopened = False
                lost_at = None
                self.state = "connected"
                with self._cond:
                    self._seq += 1
                    self._latest = (image, self._seq, time.monotonic())
                    self._cond.notify_all()
        finally:
            if cap is not None:
                cap.release()
            self.state = "ended"
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    def __iter__(self) -> Iterator[Frame]:
        last = -1
        delivered = 0
        given = 0
        while self.max_frames is None or given < self.max_frames:
            with self._cond:
                while not (self._seq > last or self._ended or self._stop.is_set()):
                    self._cond.wait(0.5)
                if self._seq <= last:  # ended or closed with nothing new
                    return
                image, seq, captured_at = self._latest
            self.dropped += seq - last - 1
            last = seq
            delivered += 1
            if (delivered - 1) % self.every:
                continue
            given += 1
            yield Frame(image, self.spec, seq, captured_at)

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        thread = getattr(self, "_thread", None)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)


# ---------------------------------------------------------------------------------------- CSI cameras
CSI_DEFAULTS = {"width": 640, "height": 480, "fps": 30, "flip": 0}


def parse_csi(spec: str) -> tuple[int, dict[str, int]]:
    """``csi://N?width=W&height=H&fps=F&flip=M`` -> (N, options); EdgeclfError in one line if bad."""
    parts = urllib.parse.urlsplit(spec)
    if not parts.netloc.isdigit() or parts.path not in ("", "/"):
        raise EdgeclfError(f"{spec}: expected csi://N (the camera number), e.g. csi://0?width=1280&height=720&fps=30")
    options = dict(CSI_DEFAULTS)
    for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        if key not in options:
            raise EdgeclfError(f"{spec}: unknown option {key!r} (expected {', '.join(CSI_DEFAULTS)})")
        if not value.isdigit() or (key != "flip" and int(value) == 0) or (key == "flip" and int(value) > 7):
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


def _files_under(folder: Path) -> list[Path]:
    """Every non-hidden file under ``folder``, recursively, sorted (non-images are skipped later,
    with a warning, so nothing is silently ignored)."""
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(Path(root) / f for f in files if not f.startswith("."))
    return sorted(found)


def open_source(
    spec: str | os.PathLike,
    every: int = 1,
    max_frames: int | None = None,
    timeout: float = 10.0,
    reconnect_for: float | None = None,
    on_skip: SkipHandler = warn_skip,
    capture_factory: CaptureFactory = cv2_capture,
    warn: Callable[[str], None] = _warn,
    loop: bool = False,
    realtime: bool = False,
) -> Source:
    """Open what ``spec`` names (see the module docstring). Raises EdgeclfError in one line when it
    does not exist or cannot be opened (a camera, or a URL that does not answer within ``timeout``).

    ``loop`` and ``realtime`` apply to video files: play again from the start at the end; read at
    the video's own frame rate (25 when it states none), as a live source."""
    spec = str(spec)
    path = Path(spec)
    check_timeout(timeout)
    quiet_opencv()
    common = dict(every=every, max_frames=max_frames)
    ms = int(timeout * 1000)

    def live(kind: str, target: Any, api: int, params: Sequence[int] = ()) -> LiveSource:
        def opener() -> Any:
            cap = capture_factory(target, api, params)
            if kind == "camera" and cap is not None and cap.isOpened():
                cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # ask the driver for a short queue, where it listens
            return cap

        return LiveSource(spec, kind, opener, timeout=timeout, reconnect_for=reconnect_for, warn=warn, **common)

    if re.fullmatch(r"\d+", spec) and not path.exists():
        return live("camera", int(spec), cv2.CAP_ANY)
    if re.fullmatch(r"/dev/video\d+", spec):
        if not path.exists():
            raise EdgeclfError(f"{spec}: camera device does not exist")
        return live("camera", spec, cv2.CAP_V4L2)
    if spec.lower().startswith("csi://"):
        opener, kind = open_csi(spec, capture_factory)
        return LiveSource(spec, kind, opener, timeout=timeout, reconnect_for=reconnect_for, warn=warn, **common)
    if spec.lower().startswith(STREAM_SCHEMES):
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
        return live("stream", spec, cv2.CAP_FFMPEG, params)
    if "!" in spec and not path.exists():
        if not has_gstreamer():
            raise EdgeclfError("GStreamer pipeline given, but this OpenCV was built without GStreamer")
        return live("gstreamer", spec, cv2.CAP_GSTREAMER)
    if path.is_dir():
        return ImageFiles(spec, _files_under(path), "folder", on_skip=on_skip, **common)
    if path.is_file():
        if is_image_file(path):
            return ImageFiles(spec, [path], "image", on_skip=on_skip, **common)
        if path.stat().st_size == 0:
            raise EdgeclfError(f"{spec}: empty file (0 bytes)")
        if not realtime:
            return VideoFile(spec, loop=loop, capture_factory=capture_factory, **common)
        cap = VideoCapture(spec, capture_factory)  # fails here, in one line, if unreadable
        paced = PacedCapture(cap, _video_fps(cap) or 25.0, loop)
        return LiveSource(spec, "video", lambda: paced, timeout=timeout, warn=warn, reconnect=False, **common)
    if _GLOB_CHARS.search(spec):
        matches = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
        if not matches:
            raise EdgeclfError(f"{spec}: no files match this pattern")
        return ImageFiles(spec, matches, "glob", on_skip=on_skip, **common)
    if path.is_symlink() and not path.exists():
        raise EdgeclfError(f"{spec}: broken link (its target does not exist)")
    if path.exists():
        raise EdgeclfError(f"{spec}: not a file, folder, camera or stream (a pipe or a device)")
    raise EdgeclfError(f"{spec}: no such file or folder")
