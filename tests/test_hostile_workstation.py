"""Hostile and careless input to the workstation commands (train, export, eval, demo): each test
stands for a defect of issue 13 and fails without its fix.

Disk full is a real tmpfs of a few hundred KB where this machine lets the tests mount one (root),
else those tests skip; the write-failure path is also exercised everywhere with a real per-file
size limit (RLIMIT_FSIZE), which makes the kernel refuse the write as a full disk does.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

import pytest
from conftest import TRAIN_EXTRA, error_line, run_cli

from edgeclf.data.synthetic import make_shapes_dataset

pytestmark = pytest.mark.tf
pytest.importorskip("tensorflow", reason=TRAIN_EXTRA)

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
FAST = ("--model", "seed", "--img-size", "32", "--batch-size", "8")


def hidden(folder: Path) -> list[str]:
    """Hidden files: what an atomic write leaves when it is not cleaned up."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) if folder.exists() else []


def strict_json(path: Path):
    """Parse as standard JSON: a bare NaN or Infinity is an error."""
    def refuse(name):
        raise ValueError(f"{path}: bare {name}")
    return json.loads(path.read_text(), parse_constant=refuse)


def start(*args: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edgeclf.cli", *map(str, args)], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.1)


@contextlib.contextmanager
def tmpfs(path: Path, size_kb: int, readonly: bool = False):
    """A real small file system at ``path`` (needs root); the test skips where none can be mounted."""
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size_kb}k" + (",ro" if readonly else "")
    try:
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, text=True)
    except FileNotFoundError:
        pytest.skip("no mount command")
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def with_file_size_limit(limit: int):
    """preexec_fn: the child may write no file larger than ``limit`` bytes (writes fail with EFBIG;
    Python ignores the SIGXFSZ that comes with it)."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


@pytest.fixture(scope="module")
def odd_data(tmp_path_factory) -> Path:
    """Class folders whose names look like rich markup, with files edgeclf cannot read beside the images."""
    root = tmp_path_factory.mktemp("odd")
    shapes = make_shapes_dataset(root / "shapes", per_class=10, size=32, seed=3)
    data = root / "data"
    for src, name in (("circle", "[cats]"), ("square", "[bold]dogs"), ("triangle", "plain")):
        shutil.copytree(shapes / src, data / name)
    gif = data / "[cats]" / "anim.gif"
    gif.write_bytes(b"GIF89a" + bytes(40))
    (data / "[bold]dogs" / "notes.txt").write_text("not a photo")
    (data / "plain" / "README").write_text("no extension")
    (data / "plain" / ".DS_Store").write_bytes(b"\0" * 8)  # hidden: not data, not mentioned
    return data


@pytest.fixture(scope="module")
def odd_run(odd_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("oddrun") / "run"
    res = run_cli("train", odd_data, "--out", out, "--epochs", "2", *FAST)
    assert res.returncode == 0, res.stderr
    return out, res


# ------------------------------------------------------------------ 19: unsupported files are listed
def test_unsupported_files_in_training_folder_are_warned_about_and_listed(odd_run, odd_data):
    out, res = odd_run
    warned = [line for line in res.stderr.splitlines() if line.startswith("warning: skipped")]
    assert len(warned) == 3, res.stderr
    assert any("anim.gif" in w and "unsupported file type (.gif" in w for w in warned)
    run = strict_json(out / "run.json")
    skipped = {Path(s["path"]).name: s["reason"] for s in run["skipped"]}
    assert set(skipped) == {"anim.gif", "notes.txt", "README"}
    assert ".txt" in skipped["notes.txt"] and "no extension" in skipped["README"]
    assert run["n_train"] + run["n_val"] == 30  # the images themselves all used


# ------------------------------------------------------------------ 20: class names that look like markup
def test_markup_like_class_names_print_as_written(odd_run, odd_data):
    out, res = odd_run
    assert "[cats]:" in res.stdout + res.stderr and "[bold]dogs:" in res.stdout + res.stderr
    res = run_cli("eval", out, odd_data)
    assert res.returncode == 0, res.stderr
    table = res.stdout
    # per-class table and the confusion matrix's rows and header: each name appears 3 times
    assert table.count("[cats]") == 3 and table.count("[bold]dogs") == 3, table


# ------------------------------------------------------------------ 16: a tampered run.json
TAMPERED = {
    "class_names is a number": ({"class_names": 5}, "class_names"),
    "class_names is a string": ({"class_names": "abc"}, "class_names"),
    "class_names is an object": ({"class_names": {"a": 0, "b": 1, "c": 2}}, "class_names"),
    "class_names nested": ({"class_names": [["a"], "b", "c"]}, "class_names"),
    "class_names twice the same": ({"class_names": ["a", "a", "b"]}, "appears twice"),
    "class_names differ in case": ({"class_names": ["Cats", "cats", "dogs"]}, "differ only in case"),
    "splits is a number": ({"splits": 5}, "splits"),
    "a split is not a list": ({"splits": {"train": [], "val": 7}}, "splits"),
    "split paths are numbers": ({"splits": {"train": [1, 2], "val": []}}, "splits"),
    "best is a string": ({"best": "x"}, "best"),
    "val_accuracy out of range": ({"best": {"epoch": 1, "val_accuracy": 7}}, "val_accuracy"),
    "data_dir is a number": ({"data_dir": 5}, "data_dir"),
}


@pytest.mark.parametrize("command", ["export", "eval"])
@pytest.mark.parametrize("case", list(TAMPERED))
def test_tampered_run_json_is_a_one_line_error(odd_run, odd_data, tmp_path, command, case):
    patch, needle = TAMPERED[case]
    run = shutil.copytree(odd_run[0], tmp_path / "run")
    (run / "run.json").write_text(json.dumps({**json.loads((run / "run.json").read_text()), **patch}))
    args = ("export", run, "--out", tmp_path / "x") if command == "export" else ("eval", run, odd_data)
    line = error_line(run_cli(*args))
    assert str(run / "run.json") in line and needle in line, line
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("text", ['{"class_names": ["a", "b", "c"], "best": {"val_accuracy": NaN}}', "[" * 100_000 + "]" * 100_000])
def test_run_json_with_nan_or_deep_nesting_is_a_one_line_error(odd_run, odd_data, tmp_path, text):
    run = shutil.copytree(odd_run[0], tmp_path / "run")
    (run / "run.json").write_text(text)
    assert "run.json: not valid JSON" in error_line(run_cli("eval", run, odd_data))


def test_run_record_writes_no_bare_nan(tmp_path):
    from edgeclf.train.run_record import RunRecord, read_run_record

    rec = RunRecord(class_names=["a", "b"], best={"epoch": 1, "val_accuracy": 0.5, "val_loss": float("nan")},
                    final={"loss": float("inf")})
    rec.write(tmp_path / "run.json")
    back = strict_json(tmp_path / "run.json")
    assert back["best"]["val_loss"] is None and back["final"]["loss"] is None
    assert read_run_record(tmp_path / "run.json").class_names == ["a", "b"]


# ------------------------------------------------------------------ 17: class folder names
def _two_classes(data: Path, first: bytes | str, second: str = "dogs") -> Path:
    shapes = make_shapes_dataset(data.parent / "shapes", per_class=6, size=32, seed=1)
    data.mkdir()
    target = os.path.join(os.fsencode(data), first) if isinstance(first, bytes) else data / first
    shutil.copytree(os.fsencode(shapes / "circle"), os.fsencode(target))
    shutil.copytree(shapes / "square", data / second)
    return data


@pytest.mark.parametrize(
    "first,second,needle",
    [
        ("Cats", "cats", "differ only in case"),
        (unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café"), "differ only in case or Unicode form"),
        (b"caf\xe9", "dogs", "not UTF-8"),
        ("a\nb", "dogs", "control characters"),
    ],
    ids=["case", "unicode-form", "latin1-bytes", "newline"],
)
def test_class_folder_names_that_collide_or_cannot_be_written_are_refused(tmp_path, first, second, needle):
    data = _two_classes(tmp_path / "data", first, second)
    res = run_cli("train", data, "--out", tmp_path / "run", "--epochs", "1", *FAST)
    line = error_line(res)
    assert needle in line and "\n" not in line, line
    assert not (tmp_path / "run" / "model.keras").exists()


# ------------------------------------------------------------------ 14: absurd numbers
@pytest.mark.parametrize(
    "args,needle",
    [
        (["--lr", "nan"], "--lr"), (["--lr", "-1"], "--lr"), (["--lr", "inf"], "--lr"), (["--lr", "0"], "--lr"),
        (["--weight-decay", "nan"], "--weight-decay"), (["--weight-decay", "-inf"], "--weight-decay"),
        (["--mixup", "nan"], "--mixup"), (["--val-split", "nan"], "--val-split"), (["--seed", "-1"], "--seed"),
        (["--batch-size", "0"], "--batch-size"), (["--patience", "-3"], "--patience"),
        # found beyond the list: TensorFlow's tracebacks on numbers it cannot hold
        (["--batch-size", "100000000000000000000"], "--batch-size"), (["--epochs", "100000000000000000000"], "--epochs"),
    ],
)
def test_absurd_training_numbers_fail_in_one_line(tmp_path, odd_data, args, needle):
    res = run_cli("train", odd_data, "--out", tmp_path / "run", *args)
    assert needle in error_line(res)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_absurd_max_drop_fails_in_one_line(odd_run, tmp_path, value):
    assert "--max-drop" in error_line(run_cli("export", odd_run[0], "--out", tmp_path / "x", "--int8", "--max-drop", value))


def test_divergence_in_the_first_epoch_is_a_one_line_error(tmp_path, odd_data):
    res = run_cli("train", odd_data, "--out", tmp_path / "run", "--epochs", "3", "--lr", "1e9", "--json", *FAST)
    assert res.returncode == 1, (res.stdout, res.stderr)
    lines = [line for line in res.stderr.strip().splitlines() if not line.startswith("warning: skipped")]
    assert len(lines) == 1 and "diverged" in lines[0] and "--lr" in lines[0] and "Traceback" not in res.stderr, res.stderr
    assert not (tmp_path / "run" / "run.json").exists() and not hidden(tmp_path / "run")


def test_loss_becoming_nan_stops_and_keeps_the_best_model(tmp_path, odd_data, monkeypatch):
    """A real divergence: after epoch 1 the learning rate becomes NaN, and so do the weights."""
    import keras
    import numpy as np

    from edgeclf.train import trainer
    from edgeclf.train.config import TrainConfig

    def constant_lr(model, stage, steps, weight_decay):
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy", metrics=["accuracy"])

    class LrJump(trainer.Checkpointer):
        def on_epoch_end(self, epoch, logs=None):
            super().on_epoch_end(epoch, logs)
            if epoch == 0:
                self.model.optimizer.learning_rate.assign(float("nan"))

    monkeypatch.setattr(trainer, "_compile", constant_lr)
    monkeypatch.setattr(trainer, "Checkpointer", LrJump)
    out = tmp_path / "run"
    cfg = TrainConfig(odd_data, out, model="seed", img_size=32, epochs=5, batch_size=8, patience=5, quiet=True)
    with pytest.raises(trainer.TrainingDiverged) as err:
        trainer.train(cfg)
    assert err.value.exit_code == 1 and "\n" not in str(err.value)
    assert "epoch 2" in str(err.value) and "model.keras" in str(err.value)
    run = strict_json(out / "run.json")  # no bare NaN
    assert run["diverged"] is True and run["epochs_run"] == 1 and run["best"]["epoch"] == 1
    with open(out / "history.csv") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["1"]
    model = keras.models.load_model(out / "model.keras", compile=False)
    assert np.isfinite(model.predict(np.zeros((2, 32, 32, 3), np.float32), verbose=0)).all()
    assert not (out / "last.keras").exists() and not hidden(out)


# ------------------------------------------------------------------ 15: interrupted training exits 130
def test_sigterm_exits_130_and_keeps_the_best_model(tmp_path, odd_data):
    out = tmp_path / "run"
    proc = start("train", odd_data, "--out", out, "--epochs", "300", "--patience", "300", *FAST)
    wait_for(out / "state.json", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    run = strict_json(out / "run.json")
    assert run["interrupted"] is True and run["best"]["epoch"] >= 1
    assert (out / "model.keras").is_file() and (out / "last.keras").is_file() and not hidden(out)


# ------------------------------------------------------------------ 9: --resume keeps the run's options
def test_resume_keeps_every_option_of_the_run(tmp_path, odd_data):
    out = tmp_path / "run"
    options = ("--epochs", "4", "--batch-size", "4", "--lr", "0.002", "--patience", "4", "--no-augment",
               "--weight-decay", "0.01", "--mixup", "0.2", "--seed", "7", "--val-split", "0.3", "--model", "seed",
               "--img-size", "32")
    proc = start("train", odd_data, "--out", out, *options)
    wait_for(out / "state.json", proc)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    recorded = strict_json(out / "state.json")["config"]
    assert {k: recorded[k] for k in ("epochs", "batch_size", "lr", "patience", "augment", "weight_decay", "mixup",
                                     "seed", "val_split", "model", "img_size")} == {
        "epochs": 4, "batch_size": 4, "lr": 0.002, "patience": 4, "augment": False, "weight_decay": 0.01,
        "mixup": 0.2, "seed": 7, "val_split": 0.3, "model": "seed", "img_size": 32}

    # A conflicting option is refused in one line, before anything changes.
    before = (out / "state.json").read_bytes()
    for conflict, needle in ((("--epochs", "40"), "--epochs 40"), (("--augment",), "--augment"), (("--lr", "0.01"), "--lr 0.01")):
        line = error_line(run_cli("train", odd_data, "--out", out, "--resume", *conflict))
        assert needle in line and "--force" in line, line
    assert (out / "state.json").read_bytes() == before

    # A run started by an edgeclf that resized with INTER_AREA (its state records no resize) is not
    # continued on other pixels.
    from edgeclf.image import RESIZE

    assert strict_json(out / "state.json")["resize"] == RESIZE
    old = tmp_path / "old-run"
    shutil.copytree(out, old)
    state = strict_json(old / "state.json")
    del state["resize"]
    (old / "state.json").write_text(json.dumps(state))
    line = error_line(run_cli("train", odd_data, "--out", old, "--resume"))
    assert "INTER_AREA" in line and "--force" in line, line

    # Options left out are the run's own; one given with the run's value is fine.
    res = run_cli("train", odd_data, "--out", out, "--resume", "--batch-size", "4", "--json")
    assert res.returncode == 0, res.stderr
    run = json.loads(res.stdout)
    assert run["epochs_requested"] == 4 and run["epochs_run"] == 4
    assert (run["batch_size"], run["lr"], run["patience"], run["augment"], run["weight_decay"], run["seed"]) == (4, 0.002, 4, False, 0.01, 7)
    assert run["preprocessing"]["mixup"] == 0.2 and run["val_split"] == 0.3 and run["input_size"] == [32, 32]
    with open(out / "history.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2, 3, 4]


def test_resume_with_a_tampered_state_is_a_one_line_error(tmp_path, odd_data):
    out = tmp_path / "run"
    out.mkdir()
    (out / "last.keras").write_bytes(b"")
    (out / "state.json").write_text('{"config": 5}')
    assert "state.json" in error_line(run_cli("train", odd_data, "--out", out, "--resume"))


# ------------------------------------------------------------------ arguments checked before TensorFlow
CHECK_IMPORTS = """
import sys
from edgeclf import cli
sys.argv = ["edgeclf", *sys.argv[1:]]
try:
    cli.main()
except SystemExit as e:
    print(e.code, "tensorflow" in sys.modules, "keras" in sys.modules)
"""


@pytest.mark.parametrize("case", ["train-occupied", "train-bad-lr", "train-resume-conflict", "train-class-collision",
                                  "demo-occupied", "demo-out-is-file"])
def test_bad_arguments_are_refused_before_tensorflow_loads(odd_run, odd_data, tmp_path, case):
    run = odd_run[0]
    args = {
        "train-occupied": ["train", str(odd_data), "--out", str(run)],
        "train-bad-lr": ["train", str(odd_data), "--out", str(tmp_path / "r"), "--lr", "nan"],
        "train-resume-conflict": None,
        "train-class-collision": ["train", str(_two_classes(tmp_path / "cc", "Cats", "cats")), "--out", str(tmp_path / "r")],
        "demo-occupied": ["demo", "--out", str(run)],
        "demo-out-is-file": ["demo", "--out", str(run / "run.json")],
    }[case]
    if args is None:
        out = tmp_path / "unfinished"
        out.mkdir()
        (out / "last.keras").write_bytes(b"")
        (out / "state.json").write_text(json.dumps({
            "config": {"epochs": 8}, "data_fingerprint": "x", "epoch": 1, "stage": 0, "wait": 0,
            "best": {"epoch": 1, "val_accuracy": 0.5}, "history": []}))
        args = ["train", str(odd_data), "--out", str(out), "--resume", "--epochs", "40"]
    res = subprocess.run([sys.executable, "-c", CHECK_IMPORTS, *args], capture_output=True, text=True, env=ENV, timeout=120)
    assert res.stdout.split() == ["2", "False", "False"], (res.stdout, res.stderr)
    assert res.stderr.startswith("edgeclf: error: ") and len(res.stderr.strip().splitlines()) == 1, res.stderr


# ------------------------------------------------------------------ 8: full disks, read-only and impossible folders
def test_train_onto_a_full_disk_keeps_the_best_model(tmp_path, odd_data):
    disk = tmp_path / "disk"
    with tmpfs(disk, 3000):  # room for one 1.9 MB model.keras, not for last.keras beside it
        res = run_cli("train", odd_data, "--out", disk / "run", "--epochs", "3", "--json", *FAST)
        line = error_line(res, after_skip_warnings=True)
        assert "No space left on device" in line and "model.keras" in line and "epoch 1" in line, line
        assert not hidden(disk / "run")
        import keras

        keras.models.load_model(disk / "run" / "model.keras", compile=False)  # the best model is whole


def test_train_write_failure_is_a_one_line_error(tmp_path, odd_data):
    """Works without root: the kernel refuses to write any file above 1 MB (model.keras is 1.9 MB)."""
    out = tmp_path / "run"
    res = subprocess.run([sys.executable, "-m", "edgeclf.cli", "train", str(odd_data), "--out", str(out),
                          "--epochs", "2", "--json", *FAST],
                         capture_output=True, text=True, env=ENV, timeout=600, preexec_fn=with_file_size_limit(1 << 20))
    line = error_line(res, after_skip_warnings=True)
    assert "cannot write" in line and "no model was saved" in line, line
    assert not hidden(out) and not (out / "model.keras").exists()


def test_export_onto_a_full_disk_keeps_what_was_there(odd_run, tmp_path):
    """An export is all or nothing: the disk fills while the new one is built beside the old, and the
    old export stays whole and usable, with no temporary folder left."""
    full = tmp_path / "sizes"
    assert run_cli("export", odd_run[0], "--out", full, "--fp16", "--json").returncode == 0
    fp32, fp16 = (full / "model.onnx").stat().st_size, (full / "model.fp16.onnx").stat().st_size
    disk = tmp_path / "disk"
    with tmpfs(disk, (2 * fp32 + fp16 // 2) // 1024):  # the old export and a new model.onnx fit, model.fp16.onnx does not
        assert run_cli("export", odd_run[0], "--out", disk / "x", "--json").returncode == 0
        before = {p.name: p.read_bytes() for p in (disk / "x").iterdir()}
        line = error_line(run_cli("export", odd_run[0], "--out", disk / "x", "--fp16", "--json", "--force"))
        assert "model.fp16.onnx: cannot write (No space left on device)" in line and "left as it was" in line, line
        from edgeclf.model.classifier import Classifier

        assert {p.name: p.read_bytes() for p in (disk / "x").iterdir()} == before
        assert Classifier(disk / "x" / "model.onnx").class_names == ["[bold]dogs", "[cats]", "plain"]  # whole, usable
        assert not hidden(disk) and not hidden(disk / "x")


def test_demo_into_a_read_only_folder_is_a_one_line_error(tmp_path):
    ro = tmp_path / "ro"
    if os.geteuid() == 0:
        ctx = tmpfs(ro, 64, readonly=True)
    else:
        ro.mkdir()
        ro.chmod(0o555)
        ctx = contextlib.nullcontext(ro)
    with ctx:
        for out in (ro, ro / "demo"):
            line = error_line(run_cli("demo", "--out", out))
            assert str(out) in line and "cannot write" in line, line


@pytest.mark.parametrize("command", ["train", "export", "demo"])
def test_output_folder_below_a_file_is_a_one_line_error(odd_run, odd_data, tmp_path, command):
    file = tmp_path / "file"
    file.write_text("x")
    out = file / "sub"
    args = {"train": ("train", odd_data, "--out", out), "export": ("export", odd_run[0], "--out", out),
            "demo": ("demo", "--out", out)}[command]
    assert str(out) in error_line(run_cli(*args))
    assert file.read_text() == "x"


# ------------------------------------------------------------------ 18: temporary files of a killed run
KILLED_MID_WRITE = """
import os, sys
from pathlib import Path
from edgeclf.outfiles import atomic_path
writes = [atomic_path(Path(sys.argv[1]) / name) for name in sys.argv[2:]]
for w in writes:
    w.__enter__()  # the temporary file exists now, empty, as when a write is under way
os.kill(os.getpid(), 9)
"""


def kill_mid_write(folder: Path, *names: str) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-c", KILLED_MID_WRITE, str(folder), *names], env=ENV)
    return hidden(folder)


def test_export_removes_temporary_files_of_a_killed_export(odd_run, tmp_path):
    out = tmp_path / "export"
    left = kill_mid_write(out, "model.onnx", "model.int8.onnx", "export.json")
    assert len(left) == 3 and any(n.startswith(".model.int8.") for n in left), left
    (out / ".keep").write_text("not edgeclf's")
    res = run_cli("export", odd_run[0], "--out", out)
    assert res.returncode == 0, res.stderr
    assert hidden(out) == [".keep"] and "removed 3 temporary file(s)" in res.stderr


def test_train_removes_temporary_files_of_a_killed_run(tmp_path, odd_data):
    out = tmp_path / "run"
    left = kill_mid_write(out, "model.keras", "last.keras", "state.json")
    assert len(left) == 3 and (out / left[0]).stat().st_size == 0, left
    res = run_cli("train", odd_data, "--out", out, "--epochs", "1", *FAST)
    assert res.returncode == 0, res.stderr
    assert hidden(out) == []


# ------------------------------------------------------------------ found beyond the list
def test_run_folder_inside_the_images_is_refused(tmp_path, odd_data):
    """It would become a class folder, or its plots training images of the next run."""
    data = shutil.copytree(odd_data, tmp_path / "data")
    for out in (data / "run", data / "plain", data):
        line = error_line(run_cli("train", data, "--out", out, "--epochs", "1", *FAST))
        assert "inside the image folder" in line, line
    assert not (data / "run").exists() and not (data / "plain" / "model.keras").exists()
    assert "--val is the training folder" in error_line(run_cli("train", data, "--val", data, "--out", tmp_path / "r"))


def test_files_of_a_run_folder_are_not_overwritten_without_force(tmp_path, odd_data):
    out = tmp_path / "notes"
    out.mkdir()
    (out / "history.csv").write_text("my own history, not edgeclf's")
    line = error_line(run_cli("train", odd_data, "--out", out, "--epochs", "1", *FAST))
    assert "history.csv" in line and "--force" in line, line
    assert (out / "history.csv").read_text() == "my own history, not edgeclf's"


def test_demo_force_never_deletes_a_folder_holding_other_files(tmp_path):
    out = tmp_path / "projects"
    (out / "data").mkdir(parents=True)  # looks like a demo folder...
    (out / "thesis.tex").write_text("...but holds someone's work")
    line = error_line(run_cli("demo", "--out", out, "--force"))
    assert "thesis.tex" in line and "refusing to delete" in line, line
    assert (out / "thesis.tex").exists()


def test_pipes_and_devices_in_a_training_folder_are_skipped(tmp_path):
    """A FIFO named like a photo blocked training for ever; /dev/zero behind a link filled memory."""
    data = make_shapes_dataset(tmp_path / "data", per_class=6, size=32, seed=2)
    os.mkfifo(data / "circle" / "pipe.jpg")
    (data / "square" / "zero.png").symlink_to("/dev/zero")
    res = run_cli("train", data, "--out", tmp_path / "run", "--epochs", "1", *FAST, timeout=300)
    assert res.returncode == 0, res.stderr
    skipped = {Path(s["path"]).name: s["reason"] for s in strict_json(tmp_path / "run" / "run.json")["skipped"]}
    assert set(skipped) == {"pipe.jpg", "zero.png"} and all("not a regular file" in r for r in skipped.values())


def test_a_weights_file_that_is_not_weights_is_a_one_line_error(tmp_path, odd_data):
    weights = tmp_path / "backbone.h5"
    weights.write_bytes(b"not an HDF5 file")
    res = run_cli("train", odd_data, "--out", tmp_path / "run", "--model", "mobilenet_v2", "--weights", weights,
                  "--img-size", "32", "--epochs", "1")
    line = error_line(res, after_skip_warnings=True)
    assert str(weights) in line and "--weights" in line, line


def test_demo_onto_a_full_disk_stops_with_an_error(tmp_path):
    """OpenCV's imwrite reports a failed write only by returning False: the demo went on before."""
    disk = tmp_path / "disk"
    with tmpfs(disk, 200):
        res = run_cli("demo", "--out", disk / "demo")
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
        last = res.stderr.strip().splitlines()[-1]
        assert last.startswith("edgeclf: error: ") and "cannot write the generated image" in last, last
        assert not hidden(disk / "demo" / "data" / "circle")
