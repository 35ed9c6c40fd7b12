"""``edgeclf export`` piped (stderr not a terminal: CI logs, ``| tee``, nohup) says each stage as it
starts and when it is done, in plain lines, instead of drawing bars that appear only at the end."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from conftest import TRAIN_EXTRA

pytestmark = pytest.mark.tf
pytest.importorskip("tensorflow", reason=TRAIN_EXTRA)
pytest.importorskip("tf2onnx", reason=TRAIN_EXTRA)

STAGES = ["reading calibration images (", "reading validation images (", "converting to ONNX (tf2onnx)...",
          "parity: Keras (", "parity: ONNX fp32 (", "validation: fp32 (", "preparing the graph for quantization...",
          "calibrating (minmax) (", "validation: int8 (minmax) (", "calibrating (entropy) (",
          "calibrating (percentile) (", "latency: fp32 vs int8, interleaved..."]


def test_piped_export_prints_a_line_per_stage_as_it_starts(shapes_dir, tmp_path):
    from test_export import make_run

    run = make_run("seed", 32, shapes_dir, tmp_path / "run", epochs=1, steps=2)
    cmd = [sys.executable, "-m", "edgeclf.cli", "export", str(run), "--int8", "--max-drop", "1", "--out", str(tmp_path / "out")]
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    arrived = [(time.monotonic(), line.rstrip("\n")) for line in child.stderr]
    ended = time.monotonic()
    assert child.wait(timeout=60) == 0, "\n".join(line for _, line in arrived)
    lines = [line for _, line in arrived]
    starts = [line for line in lines if line.endswith("...")]
    for stage in STAGES:
        assert any(line.startswith(stage) for line in starts), (stage, lines)
    # each stage with a count also says when it is done; nothing is a bar
    assert sum(line.endswith(" s") and ": done in " in line for line in lines) >= 8, lines
    assert not any("━" in line or "\r" in line for line in lines), lines
    # said as it happened, not all at the end: the first stage came long before the export ended
    first = next(t for t, line in arrived if line.startswith(STAGES[0]))
    assert ended - first > 1.0, (ended - first, lines)
