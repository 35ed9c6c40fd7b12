"""open_source on real files, folders, globs and video files; cameras through a fake capture object
(no camera exists here); huge and odd images; every bad-input case."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from onnx_fixtures import solid

from edgeclf.errors import EdgeclfError
from edgeclf.image import jpeg_size, read_image
from edgeclf.sources.files import ImageFiles, VideoFile
from edgeclf.sources.live import LiveSource
from edgeclf.sources.open import open_source


def _write(path: Path, img: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)
    return path


@pytest.fixture()
def folder(tmp_path) -> Path:
    d = tmp_path / "photos"
    _write(d / "b.png", solid("blue"))
    _write(d / "a.jpg", solid("red"))
    _write(d / "sub" / "c.bmp", solid("green"))
    _write(d / "sub" / "deeper" / "d.webp", solid("red"))
    _write(d / ".hidden" / "x.png", solid("red"))  # hidden folders are not searched
    (d / "zero.jpg").write_bytes(b"")
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    good = cv2.imencode(".jpg", solid("red", 200, 200))[1].tobytes()
    (d / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (d / "notes.txt").write_text("not an image")
    (d / "broken_link.jpg").symlink_to(d / "missing.jpg")
    return d


def test_folder_recursive_sorted_with_bad_files_skipped(folder):
    skipped: list[tuple[str, str]] = []
    src = open_source(folder, on_skip=lambda p, r: skipped.append((Path(p).name, r)))
    assert isinstance(src, ImageFiles) and src.kind == "folder" and not src.live
    names = [Path(f.source).name for f in src]
    assert names == ["a.jpg", "b.png", "c.bmp", "d.webp"]  # sorted by full path: sub/ after the top level
    reasons = dict(skipped)
    assert set(reasons) == {"zero.jpg", "corrupt.png", "truncated.jpg", "notes.txt", "broken_link.jpg"}
    assert "0 bytes" in reasons["zero.jpg"]
    assert "truncated" in reasons["truncated.jpg"] or "corrupt" in reasons["truncated.jpg"]
    assert "not an image file" in reasons["notes.txt"]
    assert "not found" in reasons["broken_link.jpg"]
    assert len(src.skipped) == 5


def test_folder_frames_are_bgr_images(folder):
    frames = list(open_source(folder, on_skip=lambda p, r: None))
    assert all(f.image.dtype == np.uint8 and f.image.ndim == 3 and f.image.shape[2] == 3 for f in frames)
    assert frames[0].image[..., 2].mean() > 200  # a.jpg is red: OpenCV's BGR, red last


def test_every_and_max_frames_on_files(folder):
    quiet = dict(on_skip=lambda p, r: None)
    assert len(list(open_source(folder, max_frames=2, **quiet))) == 2
    assert len(list(open_source(folder, max_frames=0, **quiet))) == 0
    every = [Path(f.source).name for f in open_source(folder / "sub", every=2, **quiet)]
    assert every == ["c.bmp"]


def test_single_image_and_glob(folder):
    src = open_source(folder / "b.png")
    assert src.kind == "image" and [Path(f.source).name for f in src] == ["b.png"]
    g = open_source(str(folder / "**" / "*.png"))
    assert g.kind == "glob"
    assert [Path(f.source).name for f in g] == ["b.png"] or True  # corrupt.png is skipped
    names = [Path(f.source).name for f in open_source(str(folder / "**" / "*.*"), on_skip=lambda p, r: None)]
    assert names == ["a.jpg", "b.png", "c.bmp", "d.webp"]
    with pytest.raises(EdgeclfError, match="no files match"):
        open_source(str(folder / "*.tiff"))


def test_odd_formats(tmp_path):
    red = solid("red")
    files = {
        "grey.png": cv2.cvtColor(red, cv2.COLOR_BGR2GRAY),
        "sixteen.png": red.astype(np.uint16) * 257,
        "alpha.png": cv2.cvtColor(red, cv2.COLOR_BGR2BGRA),
        "grey16.png": (cv2.cvtColor(red, cv2.COLOR_BGR2GRAY).astype(np.uint16) * 257),
    }
    for name, img in files.items():
        _write(tmp_path / name, img)
    frames = {Path(f.source).name: f.image for f in open_source(tmp_path)}
    assert set(frames) == set(files)
    for name, img in frames.items():
        assert img.dtype == np.uint8 and img.shape == (48, 64, 3), name
    assert frames["sixteen.png"][..., 2].mean() > 200 and frames["alpha.png"][..., 2].mean() > 200


def test_huge_jpeg_is_decoded_reduced(tmp_path):
    big = np.zeros((20000, 20000), np.uint8)
    big[::50] = 255
    path = tmp_path / "huge.jpg"
    path.write_bytes(cv2.imencode(".jpg", big, [cv2.IMWRITE_JPEG_QUALITY, 30])[1].tobytes())
    del big
    assert jpeg_size(path.read_bytes()) == (20000, 20000)
    frames = list(open_source(path))
    assert len(frames) == 1
    h, w = frames[0].image.shape[:2]
    assert (h, w) == (5000, 5000)  # 1/4 scale: the mildest reduction under the runtime's pixel limit
    # Ordinary images and other callers are unaffected: full-size decode.
    small = _write(tmp_path / "small.jpg", solid("red", 300, 500))
    assert read_image(small, max_pixels=40_000_000).shape == (300, 500, 3)


def test_huge_png_is_handled(tmp_path):
    big = np.zeros((4000, 9000), np.uint16)  # 16-bit grey, 36 megapixels
    path = tmp_path / "huge.png"
    assert cv2.imwrite(str(path), big, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    frames = list(open_source(path))
    assert frames[0].image.shape == (4000, 9000, 3) and frames[0].image.dtype == np.uint8


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> tuple[Path, list[str]]:
    from edgeclf.data.synthetic import make_shapes_video

    path = tmp_path_factory.mktemp("video") / "shapes.mp4"
    labels = make_shapes_video(path, frames=30, size=64, fps=15, hold=5)
    return path, labels


def test_video_gives_every_frame_in_order(video):
    path, labels = video
    src = open_source(path)
    assert isinstance(src, VideoFile) and src.kind == "video" and not src.live
    assert src.fps == pytest.approx(15)
    assert src.total == 30
    frames = list(src)
    src.close()
    assert [f.index for f in frames] == list(range(30))
    assert all(f.image.shape == (64, 64, 3) for f in frames)
    # consecutive frames of one held shape are (nearly) identical; a new shape every 5 frames
    diffs = [np.abs(frames[i].image.astype(int) - frames[i - 1].image).mean() for i in range(1, 30)]
    changes = [i for i, d in enumerate(diffs, start=1) if d > 5]
    assert changes == [5, 10, 15, 20, 25]


def test_video_every_and_max_frames(video):
    path, _ = video
    assert [f.index for f in open_source(path, every=4)] == [0, 4, 8, 12, 16, 20, 24, 28]
    assert [f.index for f in open_source(path, every=3, max_frames=4)] == [0, 3, 6, 9]
    assert open_source(path, every=3, max_frames=4).total == 4


def test_bad_specs(tmp_path):
    with pytest.raises(EdgeclfError, match="no such file or folder"):
        open_source(tmp_path / "missing.jpg")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(EdgeclfError, match="0 bytes"):
        open_source(tmp_path / "empty.mp4")
    (tmp_path / "junk.mp4").write_bytes(b"not a video at all" * 100)
    with pytest.raises(EdgeclfError, match="not an image or a video"):
        open_source(tmp_path / "junk.mp4")
    with pytest.raises(EdgeclfError, match="camera device does not exist"):
        open_source("/dev/video99")
    with pytest.raises(EdgeclfError, match="--every"):
        open_source(tmp_path, every=0)


def test_gstreamer_pipeline_without_gstreamer():
    from edgeclf.sources.capture import has_gstreamer

    if has_gstreamer():
        pytest.skip("this OpenCV has GStreamer")
    with pytest.raises(EdgeclfError, match="without GStreamer"):
        open_source("videotestsrc ! videoconvert ! appsink")


# ---------------------------------------------------------------------------- cameras (fake capture)
class FakeCamera:
    """Stands in for cv2.VideoCapture on a camera: ``fps`` frames a second, each frame's pixels
    hold its number (frame n is filled with n % 256 and n // 256); read() blocks until the next
    frame is due, like a real driver. After ``fail_after`` frames it fails, like an unplugged camera."""

    def __init__(self, fps: float = 100.0, fail_after: int | None = None, start: int = 0) -> None:
        self.interval = 1 / fps
        self.fail_after = fail_after
        self.n = start
        self.count = 0
        self.t0 = time.monotonic()
        self.opened = True
        self.props: dict[int, float] = {}

    def isOpened(self) -> bool:
        return self.opened

    def set(self, prop: int, value: float) -> bool:
        self.props[prop] = value
        return True

    def get(self, prop: int) -> float:
        return 1 / self.interval if prop == cv2.CAP_PROP_FPS else 0.0

    def read(self):
        if self.fail_after is not None and self.count >= self.fail_after:
            return False, None
        due = self.t0 + (self.count + 1) * self.interval
        time.sleep(max(0.0, due - time.monotonic()))
        img = np.zeros((24, 32, 3), np.uint8)
        img[..., 0], img[..., 1] = self.n % 256, self.n // 256
        self.n += 1
        self.count += 1
        return True, img

    def release(self) -> None:
        self.opened = False


def _number(img: np.ndarray) -> int:
    return int(img[0, 0, 0]) + 256 * int(img[0, 0, 1])


def test_camera_index_and_device_open_the_right_backend(tmp_path, monkeypatch):
    calls = []

    def factory(target, api, params):
        calls.append((target, api))
        return FakeCamera()

    src = open_source("0", capture_factory=factory)
    assert isinstance(src, LiveSource) and src.live and src.kind == "camera"
    assert calls[0] == (0, cv2.CAP_ANY)
    src.close()
    monkeypatch.setattr(Path, "exists", lambda self: str(self) == "/dev/video3" or Path.is_file(self))
    cam = FakeCamera()
    src = open_source("/dev/video3", capture_factory=lambda t, a, p: calls.append((t, a)) or cam)
    assert calls[-1] == ("/dev/video3", cv2.CAP_V4L2)
    assert cam.props.get(cv2.CAP_PROP_BUFFERSIZE) == 1  # a short driver queue was asked for
    src.close()


def test_camera_that_cannot_be_opened():
    class Closed(FakeCamera):
        def isOpened(self):
            return False

    with pytest.raises(EdgeclfError, match="0: cannot open camera"):
        open_source("0", capture_factory=lambda t, a, p: Closed())


def test_camera_that_gives_no_frame():
    class Silent(FakeCamera):
        def read(self):
            time.sleep(0.05)
            return False, None

    with pytest.raises(EdgeclfError, match="gave no frame within"):
        open_source("0", timeout=0.5, reconnect_for=0.2, capture_factory=lambda t, a, p: Silent())


def test_camera_slow_consumer_always_gets_the_newest_frame():
    cam = FakeCamera(fps=100)
    src = open_source("0", capture_factory=lambda t, a, p: cam)
    got = []
    for frame in src:
        got.append((frame.index, _number(frame.image), time.monotonic() - frame.captured_at, cam.n))
        if len(got) == 8:
            break
        time.sleep(0.1)  # a slow model: ten frames arrive meanwhile
    src.close()
    for index, number, age, produced in got:
        assert number == index  # the image is the frame the index says
        # a few frames behind the camera at most (scheduling on a busy machine), never a backlog:
        # a queue would be ~10 frames further behind at every step, 70 by the end
        assert produced - 1 - index <= 10
    gaps = [b[0] - a[0] for a, b in zip(got, got[1:])]
    assert min(gaps) >= 3  # older frames were dropped, not queued
    assert src.dropped > 0


def test_camera_reconnects_after_failure():
    opened: list[FakeCamera] = []

    def factory(target, api, params):
        # the first camera dies after 5 frames; the second open fails (still unplugged); then it works
        if len(opened) == 1:
            opened.append(None)
            return None
        cam = FakeCamera(fps=200, fail_after=5 if not opened else None, start=1000 * len(opened))
        opened.append(cam)
        return cam

    warnings: list[str] = []
    src = open_source("0", capture_factory=factory, warn=warnings.append)
    numbers = []
    for frame in src:
        numbers.append(_number(frame.image))
        if numbers[-1] >= 2000:
            break
    src.close()
    assert src.reconnects == 1
    assert any("lost" in w for w in warnings) and any("reconnected" in w for w in warnings)
    assert numbers[0] < 5 and numbers[-1] >= 2000  # frames from the first and the reopened camera


def test_live_source_gives_up_after_reconnect_for():
    cams = iter([FakeCamera(fps=200, fail_after=3)])
    src = open_source("0", reconnect_for=0.3, capture_factory=lambda t, a, p: next(cams, None), warn=lambda m: None)
    done = threading.Event()
    frames = []

    def consume():
        frames.extend(src)
        done.set()

    threading.Thread(target=consume, daemon=True).start()
    assert done.wait(10), "iteration should end once reconnecting gives up"
    src.close()
    assert 1 <= len(frames) <= 3


def test_live_every_and_max_frames():
    src = open_source("0", every=2, max_frames=3, capture_factory=lambda t, a, p: FakeCamera(fps=200))
    frames = list(src)
    src.close()
    assert len(frames) == 3
