"""Shared fixtures: generated data, the shared real photos (skipped when absent), and a CLI runner."""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

# A shell starts background jobs (`nohup python -m pytest &`) with SIGINT ignored, and every child
# inherits that. Tests stop edgeclf and helper processes with SIGINT, so the suite restores the
# default: the same results however it is started. (edgeclf itself installs its own handler;
# test_hostile_runtime checks that with SIGINT ignored on purpose.)
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

ROOT = Path(__file__).resolve().parents[1]
# Tests never write the user's image cache (~/.cache/edgeclf): one throw-away folder per session,
# inherited by the CLI subprocesses.
if "EDGECLF_CACHE_DIR" not in os.environ:
    os.environ["EDGECLF_CACHE_DIR"] = tempfile.mkdtemp(prefix="edgeclf-cache-")
    atexit.register(shutil.rmtree, os.environ["EDGECLF_CACHE_DIR"], True)
CATS_DOGS = Path(os.environ.get("EDGECLF_CATS_DOGS", ROOT.parent / "shared" / "data" / "cats_dogs" / "train"))

# What a skipped test says it lacks: the extra or the system package that would run it
# (``pytest.importorskip(name, reason=TRAIN_EXTRA)``; test_hostile_paths checks every skip says so).
TRAIN_EXTRA = "needs the train extra: pip install '.[train]'"


def run_cli(*args: object, timeout: float = 600, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``edgeclf ARGS`` in a fresh interpreter, as a user would; returns the completed process."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "edgeclf.cli", *map(str, args)],
        capture_output=True, text=True, timeout=timeout, env=full_env, cwd=cwd,
    )


def error_line(res: subprocess.CompletedProcess, *, after_skip_warnings: bool = False) -> str:
    """The one stderr line of a command that failed as a user should see it: exit 2, no traceback.

    ``after_skip_warnings``: "warning: skipped ..." lines about bad files may come before it."""
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    if after_skip_warnings:
        lines = [line for line in lines if not line.startswith("warning: skipped")]
    assert len(lines) == 1, res.stderr
    return lines[0]


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory) -> Path:
    """A generated 3-class data set (circle, square, triangle), 40 images a class at 64x64."""
    from edgeclf.data.synthetic import make_shapes_dataset

    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), per_class=40, size=64, seed=0)


@pytest.fixture(scope="session")
def cats_dogs_dir() -> Path:
    """The shared real photos; tests that need them skip cleanly when they are absent."""
    if not (CATS_DOGS / "cats").is_dir() or not (CATS_DOGS / "dogs").is_dir():
        pytest.skip(f"real photos not found at {CATS_DOGS}")
    return CATS_DOGS


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``tf`` need the train extra: on a base install (a device testing itself) they
    skip, saying so, instead of failing on the missing TensorFlow."""
    if importlib.util.find_spec("tensorflow") is not None:
        return
    skip = pytest.mark.skip(reason="needs the train extra (TensorFlow): pip install 'edgeclf[train]'")
    for item in items:
        if item.get_closest_marker("tf"):
            item.add_marker(skip)
