"""Reading images robustly, the shared preprocessing, and class-folder scanning (no TensorFlow)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from edgeclf.errors import EdgeclfError, ImageReadError
from edgeclf.image import list_images, read_image, resize_rgb, scan_class_folders
from edgeclf.metrics import classification_report


def _jpeg_bytes(h=40, w=50) -> bytes:
    img = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", img)[1].tobytes()


@pytest.mark.parametrize("ext", [".jpg", ".png", ".bmp", ".webp"])
def test_reads_colour_formats(tmp_path, ext):
    img = np.zeros((30, 40, 3), np.uint8)
    img[:, :, 2] = 255  # red in BGR
    cv2.imwrite(str(tmp_path / f"a{ext}"), img)
    out = read_image(tmp_path / f"a{ext}")
    assert out.shape == (30, 40, 3) and out.dtype == np.uint8
    assert out[15, 20, 2] > 200 and out[15, 20, 0] < 60


def test_reads_grey_16bit_and_alpha(tmp_path):
    cv2.imwrite(str(tmp_path / "grey.png"), np.full((10, 12), 77, np.uint8))
    cv2.imwrite(str(tmp_path / "deep.png"), np.full((10, 12, 3), 65535, np.uint16))
    bgra = np.zeros((10, 12, 4), np.uint8)
    bgra[..., 1] = 200
    bgra[..., 3] = 128
    cv2.imwrite(str(tmp_path / "alpha.png"), bgra)
    grey = read_image(tmp_path / "grey.png")
    assert grey.shape == (10, 12, 3) and (grey == 77).all()
    deep = read_image(tmp_path / "deep.png")
    assert deep.dtype == np.uint8 and (deep == 255).all()
    alpha = read_image(tmp_path / "alpha.png")
    assert alpha.shape == (10, 12, 3) and (alpha[..., 1] == 200).all()


@pytest.mark.parametrize(
    "name,content,reason",
    [
        ("empty.jpg", b"", "empty file"),
        ("text.jpg", b"this is not an image at all", "not a readable image"),
        ("noise.png", bytes(range(256)) * 4, "not a readable image"),
    ],
)
def test_bad_files_raise_with_reason(tmp_path, name, content, reason):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ImageReadError) as e:
        read_image(tmp_path / name)
    assert reason in str(e.value) and name in str(e.value)


def test_truncated_jpeg_is_rejected(tmp_path):
    data = _jpeg_bytes(200, 200)
    (tmp_path / "whole.jpg").write_bytes(data)
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    assert read_image(tmp_path / "whole.jpg").shape == (200, 200, 3)
    with pytest.raises(ImageReadError, match="truncated"):
        read_image(tmp_path / "cut.jpg")


def test_missing_file(tmp_path):
    with pytest.raises(ImageReadError, match="file not found"):
        read_image(tmp_path / "nope.jpg")


def test_resize_rgb_swaps_channels_and_resizes():
    bgr = np.zeros((100, 60, 3), np.uint8)
    bgr[..., 0] = 255  # blue
    out = resize_rgb(bgr, (32, 48))
    assert out.shape == (32, 48, 3)
    assert (out[..., 2] == 255).all() and (out[..., 0] == 0).all()


def test_resize_uses_area_when_shrinking():
    # A one-pixel checkerboard averages to grey with INTER_AREA; nearest-like sampling would not.
    board = (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8)
    out = resize_rgb(cv2.cvtColor(board, cv2.COLOR_GRAY2BGR), (16, 16))
    assert np.abs(out.astype(int) - 127).max() <= 2


def test_resize_halving_is_an_exact_two_pixel_average():
    # The speed of RESIZE rests on this: INTER_LINEAR at exactly half a side gives the rounded mean
    # of each 2x2 (or 2x1) block, the pixels INTER_AREA's fast path gives.
    rng = np.random.default_rng(0)
    bgr = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    blocks = bgr.reshape(24, 2, 32, 2, 3).astype(int).sum((1, 3))
    out = resize_rgb(bgr, (24, 32))
    assert np.array_equal(out, ((blocks + 2) // 4)[..., ::-1].astype(np.uint8))
    wide = resize_rgb(bgr, (48, 32))  # one side only
    assert np.array_equal(wide, ((bgr[:, 0::2].astype(int) + bgr[:, 1::2] + 1) // 2)[..., ::-1].astype(np.uint8))
    odd = np.pad(bgr, ((0, 1), (0, 1), (0, 0)), constant_values=255)  # 49x65: the odd last row and column are left out
    assert np.array_equal(resize_rgb(odd, (24, 32)), out)


def test_resize_does_not_alias_along_a_long_side():
    # Stripes one pixel wide across a panorama: each side is halved on its own until it is less than
    # twice the input size, so they average to grey instead of sampling to stripes.
    stripes = (np.indices((100, 1000))[1] % 2 * 255).astype(np.uint8)
    out = resize_rgb(cv2.cvtColor(stripes, cv2.COLOR_GRAY2BGR), (50, 224))
    assert out.shape == (50, 224, 3) and np.abs(out.astype(int) - 127).max() <= 2


def test_resize_of_older_models_is_exactly_inter_area():
    from edgeclf.image import RESIZE, RESIZE_AREA, resize_of

    rng = np.random.default_rng(1)
    bgr = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    legacy = resize_rgb(bgr, (224, 224), RESIZE_AREA)
    assert np.array_equal(legacy, cv2.cvtColor(cv2.resize(bgr, (224, 224), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB))
    assert not np.array_equal(legacy, resize_rgb(bgr, (224, 224)))  # the rules differ, so which one matters
    assert resize_of(json.dumps({"resize": RESIZE_AREA, "rescale": "inside the model"})) == RESIZE_AREA
    assert resize_of({"resize": RESIZE_AREA}) == RESIZE_AREA
    for other in (None, "", "{not json", json.dumps({"resize": RESIZE}), json.dumps(["x"]), {"resize": "bicubic"}):
        assert resize_of(other) == RESIZE
    with pytest.raises(EdgeclfError, match="unknown resize rule"):
        resize_rgb(bgr, (8, 8), "bicubic")


def test_list_images_recursive_sorted_and_filtered(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / ".hidden").mkdir()
    for p in ["z.jpg", "a.PNG", "b/c.webp", "notes.txt", ".hidden/x.jpg", "b/.y.jpg"]:
        (tmp_path / p).write_bytes(b"x")
    found = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert found == ["a.PNG", "b/c.webp", "z.jpg"]


def test_scan_class_folders(tmp_path):
    for c in ["dogs", "cats"]:
        (tmp_path / c).mkdir()
        (tmp_path / c / "1.jpg").write_bytes(b"x")
    names, files = scan_class_folders(tmp_path)
    assert names == ["cats", "dogs"] and [p.name for p in files["cats"]] == ["1.jpg"]


@pytest.mark.parametrize(
    "layout,message",
    [
        (None, "does not exist"),
        ([], "no class folders"),
        (["cats"], "only one class"),
        (["cats", "dogs:empty"], "has no image files"),
    ],
)
def test_scan_class_folders_errors(tmp_path, layout, message):
    root = tmp_path / "data"
    if layout is not None:
        root.mkdir()
        for entry in layout:
            name, _, flag = entry.partition(":")
            (root / name).mkdir()
            if flag != "empty":
                (root / name / "a.jpg").write_bytes(b"x")
    with pytest.raises(EdgeclfError, match=message):
        scan_class_folders(root)


def test_classification_report():
    rep = classification_report([0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0], ["a", "b", "c"])
    assert rep["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert rep["accuracy"] == pytest.approx(4 / 6)
    b = rep["per_class"]["b"]
    assert {k: b[k] for k in ("precision", "recall", "support", "predicted")} == {
        "precision": pytest.approx(2 / 3), "recall": 1.0, "support": 2, "predicted": 3}
    assert rep["per_class"]["a"]["precision"] == 0.5 and rep["n_images"] == 6
