"""Issue 26, items 6, 7, 8, 11 and 22: hostile paths and names, runs that do nothing, and skips that
say what to install.

- 6: a file whose path is longer than the system allows (PATH_MAX) is one "skipped" line, counted,
  in predict, eval, bench and train; such a path given on the command line is a one-line error.
- 7: train and predict apply one rule to class names (right-to-left and zero-width characters).
- 8: folders about 1,200 levels deep are walked (folders and ``**`` globs), not a RecursionError.
- 11: an explicit input that gives nothing to classify, or a run that classified nothing, fails.
- 22: every skip names the extra or system package that would run the test.

The deep and long trees are real folders, made one name at a time through directory descriptors
(a path that long cannot be opened in one go).
"""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import cv2
import pytest
from conftest import TRAIN_EXTRA, error_line, run_cli
from onnx_fixtures import make_colour_model, solid

from edgeclf.errors import EdgeclfError
from edgeclf.image import list_images
from edgeclf.model.classifier import parse_class_names
from edgeclf.sources.files import files_matching, files_under
from edgeclf.train.data import unsupported_files
from edgeclf.train.run_record import check_class_names

DEPTH = 1200  # folders: beyond Python's default recursion limit (1000)
PATH_MAX = os.pathconf("/", "PC_PATH_MAX") if hasattr(os, "pathconf") else 4096
LONG_PART = "L" * 250  # one folder name near NAME_MAX (255 bytes)


def png_bytes(colour: str) -> bytes:
    ok, data = cv2.imencode(".png", solid(colour))
    assert ok
    return data.tobytes()


def write_below(top: Path, parts: list[str], name: str, data: bytes) -> Path:
    """Make folders ``parts`` under ``top`` one at a time (relative to the last one opened, so the
    whole path may exceed PATH_MAX) and write ``name`` in the innermost; returns the file's path."""
    fd = os.open(top, os.O_RDONLY)
    try:
        for part in parts:
            os.makedirs(top, exist_ok=True)
            try:
                os.mkdir(part, dir_fd=fd)
            except FileExistsError:
                pass
            fd, parent = os.open(part, os.O_RDONLY, dir_fd=fd), fd
            os.close(parent)
        out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=fd)
        os.write(out, data)
        os.close(out)
    finally:
        os.close(fd)
    _made.append((top, parts))
    return top.joinpath(*parts, name)


_made: list[tuple[Path, list[str]]] = []


@pytest.fixture(autouse=True)
def flatten_made_trees():
    """After each test, move every level of the trees it made up beside their top, so that pytest's
    own clean-up (shutil.rmtree, which recurses) meets neither a deep nor a long path."""
    yield
    while _made:
        top, parts = _made.pop()
        fd = os.open(top, os.O_RDONLY)
        try:
            here = parts[0]
            for i, part in enumerate(parts[1:]):
                os.rename(os.path.join(here, part), f"level{i}", src_dir_fd=fd, dst_dir_fd=fd)
                here = f"level{i}"
        finally:
            os.close(fd)


def deep_image(top: Path, colour: str = "red") -> Path:
    """An image DEPTH folders below ``top`` (path about 2,400 bytes: within PATH_MAX)."""
    top.mkdir(parents=True, exist_ok=True)
    return write_below(top, ["d"] * DEPTH, "deep.png", png_bytes(colour))


def far_image(top: Path, colour: str = "red") -> Path:
    """An image whose path is longer than PATH_MAX, below ``top``."""
    top.mkdir(parents=True, exist_ok=True)
    path = write_below(top, [LONG_PART] * (PATH_MAX // len(LONG_PART) + 1), "far.png", png_bytes(colour))
    assert len(os.fsencode(path)) > PATH_MAX
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_colour_model(tmp_path_factory.mktemp("model") / "colour.onnx")


def labelled(root: Path) -> Path:
    """red/ and green/ class folders, three readable images each."""
    for colour in ("red", "green"):
        (root / colour).mkdir(parents=True, exist_ok=True)
        for i in range(3):
            (root / colour / f"{i}.png").write_bytes(png_bytes(colour))
    return root


def skip_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning: skipped")]


# ------------------------------------------------------------------------ 8: deep folders
def test_folder_walks_reach_a_file_1200_folders_deep(tmp_path):
    deep = deep_image(tmp_path / "top")
    (tmp_path / "top" / "notes.txt").write_text("not an image")
    assert list_images(tmp_path / "top") == [deep]
    assert deep in files_under(tmp_path / "top")
    assert files_matching(str(tmp_path / "top" / "**" / "*.png")) == [deep]
    skipped = unsupported_files([tmp_path / "top"], on_skip=lambda path, reason: None)
    assert [s["path"] for s in skipped] == [str(tmp_path / "top" / "notes.txt")]


@pytest.mark.parametrize("glob", [False, True], ids=["folder", "glob"])
def test_predict_classifies_an_image_1200_folders_deep(tmp_path, model, glob):
    deep_image(tmp_path / "top", "green")
    source = tmp_path / "top" / "**" / "*.png" if glob else tmp_path / "top"
    res = run_cli("predict", model, source, "--json")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    [line] = res.stdout.splitlines()
    assert json.loads(line)["label"] == "green"


def test_eval_counts_an_image_1200_folders_deep(tmp_path, model):
    data = labelled(tmp_path / "data")
    deep_image(data / "red")
    res = run_cli("eval", model, data, "--json")
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout)["n_images"] == 7


# ------------------------------------------------------------------------ 6: paths over PATH_MAX
def test_predict_skips_a_path_longer_than_the_system_allows_in_one_counted_line(tmp_path, model):
    top = tmp_path / "top"
    far_image(top)
    (top / "near.png").write_bytes(png_bytes("blue"))
    for source in (top, top / "**" / "*.png"):
        res = run_cli("predict", model, source)
        assert res.returncode == 0, res.stderr[-2000:]
        assert "Traceback" not in res.stderr
        [skip] = skip_lines(res.stderr)
        assert skip.endswith("far.png: cannot read (File name too long)"), skip[-200:]
        assert "1 processed, 1 skipped" in res.stderr


def test_eval_and_bench_count_a_path_longer_than_the_system_allows(tmp_path, model):
    data = labelled(tmp_path / "data")
    far_image(data / "red")
    res = run_cli("eval", model, data, "--json")
    assert res.returncode == 0, res.stderr[-2000:]
    report = json.loads(res.stdout)
    assert report["n_skipped"] == 1 and report["skipped"][0]["path"].endswith("far.png")
    assert len(skip_lines(res.stderr)) == 1

    res = run_cli("bench", model, "--source", data, "--runs", "10", "--warmup", "1", "--json")
    assert res.returncode == 0, res.stderr[-2000:]
    source = json.loads(res.stdout)["source"]
    assert source["frames"] == 6 and len(source["skipped"]) == 1 and "File name too long" in source["skipped"][0]


@pytest.mark.parametrize("command", ["predict-source", "predict-model", "eval", "bench"])
def test_a_path_argument_longer_than_the_system_allows_is_one_line(tmp_path, model, command):
    long = tmp_path / ("a" * 300 + ".png")
    args = {"predict-source": ["predict", model, long], "predict-model": ["predict", long, model],
            "eval": ["eval", model, long], "bench": ["bench", model, "--source", long, "--runs", "2"]}[command]
    line = error_line(run_cli(*args))
    assert "aaaa.png: path longer than this system allows" in line, line


@pytest.mark.tf
def test_train_skips_a_long_path_and_reads_a_deep_one(tmp_path):
    data = labelled(tmp_path / "data")
    far_image(data / "red")
    deep_image(data / "green", "green")
    res = run_cli("train", data, "--out", tmp_path / "run", "--epochs", "1", "--model", "seed", "--img-size", "32",
                  "--batch-size", "8", "--val-split", "0.3")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    [skip] = skip_lines(res.stderr)
    assert "far.png" in skip and "File name too long" in skip
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert [s["path"].endswith("far.png") for s in run["skipped"]] == [True]
    assert run["n_train"] + run["n_val"] == 7, run  # the deep one was read


def test_train_argument_longer_than_the_system_allows_is_one_line(tmp_path):
    pytest.importorskip("tensorflow", reason=TRAIN_EXTRA)
    line = error_line(run_cli("train", tmp_path / ("a" * 300), "--out", tmp_path / "run"))
    assert "path longer than this system allows" in line, line


# ------------------------------------------------------------------------ 7: one rule for class names
NAMES = {
    "right-to-left override": "gnp.\u202etac",
    "right-to-left mark": "cat\u200f",
    "zero-width space": "ca\u200bt",
    "zero-width joiner": "ca\u200dt",
    "byte order mark": "\ufeffcat",
    "201 characters": "c" * 201,
    "line separator": "a\u2028b",
}
FINE = ["café", "猫", "кошка", "قطة", "cat 🐱", "a\u00a0b"]  # Arabic script itself is right-to-left and fine


def _accepted(check, names: list[str]) -> bool:
    try:
        check(names)
    except EdgeclfError:
        return False
    return True


@pytest.mark.parametrize("name", [*NAMES.values(), *FINE], ids=[*NAMES, *map(ascii, FINE)])
def test_train_and_predict_accept_the_same_class_names(name):
    by_train = _accepted(lambda n: check_class_names(n, "data"), [name, "dogs"])
    by_predict = _accepted(lambda n: parse_class_names(json.dumps(n), "model.onnx"), [name, "dogs"])
    assert by_train == by_predict == (name in FINE)


@pytest.mark.tf
@pytest.mark.parametrize("name", ["gnp.\u202etac", "ca\u200bt"], ids=["right-to-left", "zero-width"])
def test_train_refuses_an_invisible_class_name_before_training(tmp_path, name):
    data = labelled(tmp_path / "data")
    (data / "red").rename(data / name)
    line = error_line(run_cli("train", data, "--out", tmp_path / "run", "--epochs", "1", "--model", "seed",
                              "--img-size", "32"))
    assert "right-to-left" in line and "U+20" in line, line
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------ 11: nothing classified
@pytest.mark.parametrize("what", ["corrupt image", "empty folder", "folder of corrupt images", "corrupt glob"])
def test_predict_fails_when_nothing_was_classified(tmp_path, model, what):
    folder = tmp_path / "in"
    folder.mkdir()
    if what != "empty folder":
        (folder / "a.png").write_bytes(b"not a png")
        (folder / "b.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    source = {"corrupt image": folder / "a.png", "corrupt glob": folder / "*.png"}.get(what, folder)
    res = run_cli("predict", model, source)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    assert res.stderr.splitlines()[-1].startswith(f"edgeclf: error: {source}: nothing was classified"), res.stderr


def test_predict_max_frames_0_still_succeeds(tmp_path, model):
    image = tmp_path / "red.png"
    image.write_bytes(png_bytes("red"))
    assert run_cli("predict", model, image, "--max-frames", "0").returncode == 0
    res = run_cli("predict", model, image)
    assert res.returncode == 0 and "red" in res.stdout


# ------------------------------------------------------------------------ 22: skips say what to install
TESTS = Path(__file__).parent
INSTALL_WORDS = ("pip install", "apt-get install")


def _text(node: ast.AST) -> str:
    """The constant text of a message (f-string parts and conftest's constants included)."""
    import conftest

    if isinstance(node, ast.Name):
        return str(getattr(conftest, node.id, ""))
    return " ".join(str(n.value) for n in ast.walk(node) if isinstance(n, ast.Constant))


def _pytest_calls(name: str):
    for path in sorted(TESTS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            func = node.func if isinstance(node, ast.Call) else None
            if getattr(func, "attr", getattr(func, "id", None)) == name:
                yield f"{path.name}:{node.lineno}", node


def test_every_importorskip_names_what_to_install():
    calls = list(_pytest_calls("importorskip"))
    assert calls
    bad = [where for where, call in calls
           if not any(w in _text(k.value) for k in call.keywords if k.arg == "reason" for w in INSTALL_WORDS)]
    assert not bad, f"pytest.importorskip without a reason= that says what to install: {bad}"


def test_every_skip_for_something_missing_names_what_to_install():
    missing = ("not installed", "is missing", "has no ", "no gstreamer", "could not import", "not the gpu build", "needs ffmpeg")
    bad = []
    for where, call in [*_pytest_calls("skip"), *_pytest_calls("_missing")]:
        text = _text(call.args[0]) if call.args else ""
        if any(m in text.lower() for m in missing) and not any(w in text for w in INSTALL_WORDS):
            bad.append(f"{where}: {text[:80]!r}")
    assert not bad, f"skips for a missing package that do not say how to install it: {bad}"
