"""`edgeclf demo`, the README's main command, end to end, exactly as a user runs it."""

from __future__ import annotations

import json

import pytest
from conftest import error_line, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.tf]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "edgeclf-demo"
    res = run_cli("demo", "--out", out, timeout=900)
    return out, res


def test_demo_runs_the_whole_chain(demo):
    out, res = demo
    assert res.returncode == 0, res.stderr[-3000:]
    for rel in ("run/model.keras", "run/run.json", "run/history.csv", "run/curves.png", "run/confusion.png",
                "export/model.onnx", "export/model.int8.onnx", "export/export.json", "shapes.mp4",
                "export/bench-model.png", "export/bench-model-int8.png"):
        assert (out / rel).stat().st_size > 0, rel
    run = json.loads((out / "run" / "run.json").read_text())
    assert run["class_names"] == ["circle", "square", "triangle"]
    assert run["best"]["val_accuracy"] >= 0.9  # shapes are easy: a demo that cannot learn them is broken
    export = json.loads((out / "export" / "export.json").read_text())
    assert export["parity"]["top1_agreement"] == 1.0
    assert export["int8"]["accuracy_int8"] >= 0.9
    text = res.stdout + res.stderr
    assert "labelled correctly" in text and "end-to-end:" in text and "finished in" in text


def test_demo_benchmarks_in_a_process_without_tensorflow(demo):
    """The benchmark's memory figure is the runtime's own, not the trainer's (TensorFlow: 500+ MiB)."""
    _, res = demo
    rss = [float(line.split("peak resident memory:")[1].split("MiB")[0]) for line in (res.stdout + res.stderr).splitlines()
           if "peak resident memory:" in line]
    assert len(rss) == 2 and all(0 < r < 300 for r in rss), rss


def test_demo_refuses_to_overwrite_without_force(demo):
    out, _ = demo
    res = run_cli("demo", "--out", out)
    assert "--force" in error_line(res)
