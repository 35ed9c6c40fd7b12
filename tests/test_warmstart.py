"""edgeclf train DATA --from RUN: the loop collect, sort, retrain, export. Real Keras training
(the small seed CNN on generated shapes), real export."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import TRAIN_EXTRA, error_line, run_cli

pytestmark = pytest.mark.tf
pytest.importorskip("tensorflow", reason=TRAIN_EXTRA)


def test_retrain_from_a_run_with_a_new_class(shapes_dir, tmp_path):
    first = tmp_path / "first"
    for c in ("circle", "square"):
        shutil.copytree(shapes_dir / c, first / c)
    run_a = tmp_path / "a"
    r = run_cli("train", first, "--out", run_a, "--model", "seed", "--img-size", "32", "--epochs", "2")
    assert r.returncode == 0, r.stderr
    sorted_frames = tmp_path / "sorted"  # what a person sorted from predict --collect: a new class, more squares
    shutil.copytree(shapes_dir / "triangle", sorted_frames / "triangle")
    (sorted_frames / "square").mkdir()
    for p in sorted((shapes_dir / "square").iterdir())[:5]:
        shutil.copy(p, sorted_frames / "square" / f"extra-{p.name}")
    run_b = tmp_path / "b"
    r = run_cli("train", sorted_frames, "--from", run_a, "--out", run_b, "--epochs", "2", "--json")
    assert r.returncode == 0, r.stderr
    run = json.loads((run_b / "run.json").read_text())
    assert run["class_names"] == ["circle", "square", "triangle"]
    assert run["architecture"] == "seed" and run["input_size"] == [32, 32]  # taken from the run
    w = run["weights"]
    assert w["source"] == "edgeclf run (--from)" and w["tensors_copied"] >= 6 and Path(w["run"]) == run_a.resolve()
    counts = run["counts"]
    assert counts["square"]["train"] + counts["square"]["val"] == 40 + 5 and counts["triangle"]["train"] > 0
    assert Path(run["data_dir"]) == (run_b / "data").resolve()
    r = run_cli("export", run_b)  # run.json's file lists (links inside the new run) serve export
    assert r.returncode == 0, r.stderr
    same = run_cli("train", sorted_frames, "--from", run_a, "--out", run_a, "--force")
    assert same.returncode != 0 and "its own folder" in error_line(same)
