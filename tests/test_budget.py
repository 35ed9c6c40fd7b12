"""``edgeclf train --model auto --budget-ms MS``: the ladder rung picked by measured int8 latency."""

from __future__ import annotations

import json
import math

import pytest

from conftest import TRAIN_EXTRA, error_line, run_cli

pytest.importorskip("tensorflow", reason=TRAIN_EXTRA)
pytest.importorskip("tf2onnx", reason=TRAIN_EXTRA)


@pytest.mark.parametrize("args, says", [
    (["--model", "auto"], "--budget-ms"),
    (["--model", "seed", "--budget-ms", "5"], "--model auto"),
    (["--budget-ms", "0"], "above 0"),
    (["--budget-ms", "nan"], "above 0"),
])
def test_budget_options_are_checked_at_once(tmp_path, shapes_dir, args, says):
    res = run_cli("train", shapes_dir, "--out", tmp_path / "run", *args, timeout=120)
    assert says in error_line(res)
    assert not (tmp_path / "run").exists()


def _seed_cache(monkeypatch, tmp_path, latencies: dict[str, float]) -> None:
    """Latencies as a previous measurement on this machine would have cached them."""
    import onnxruntime as ort

    from edgeclf.train import budget
    from edgeclf.train.models import ARCHITECTURES

    monkeypatch.setenv("EDGECLF_CACHE_DIR", str(tmp_path / "cache"))
    for name, ms in latencies.items():
        size = ARCHITECTURES[name].default_size
        path = tmp_path / "cache" / "latency" / f"{budget._cache_key(name, size, 1, ort.__version__)}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"model": name, "size": size, "threads": 1, "ms": ms}))


def test_the_largest_rung_within_the_budget_is_picked(monkeypatch, tmp_path):
    from edgeclf.errors import EdgeclfError
    from edgeclf.train.budget import pick_model

    _seed_cache(monkeypatch, tmp_path, {"efficientnet_lite0": 5.0, "efficientnet_lite1": 9.0, "efficientnet_lite2": 14.0})
    said = []
    assert pick_model(10, say=said.append)[0] == "efficientnet_lite1"
    assert pick_model(14, say=said.append)[0] == "efficientnet_lite2"
    name, record = pick_model(5, say=said.append)
    assert name == "efficientnet_lite0" and record["int8_latency_ms"]["efficientnet_lite0"] == 5.0
    assert said[-1].startswith("--model auto: efficientnet_lite0") and "efficientnet_lite1 9.0 ms" in said[-1]
    with pytest.raises(EdgeclfError) as e:
        pick_model(4.9, say=said.append)
    # The one figure that matters to a user whose budget cannot be met: the fastest model's.
    assert "efficientnet_lite0" in str(e.value) and "5.0 ms" in str(e.value)


def test_latency_is_measured_for_real_and_an_impossible_budget_names_it(monkeypatch, tmp_path, shapes_dir):
    """Lite0 converted, quantized and timed through onnxruntime (no cache yet); the command with a
    budget no model meets then fails in one line that names that measured figure."""
    from edgeclf.train.budget import int8_latency_ms

    monkeypatch.setenv("EDGECLF_CACHE_DIR", str(tmp_path / "cache"))
    ms = int8_latency_ms("efficientnet_lite0")
    assert math.isfinite(ms) and 0.1 < ms < 2000
    cached = list((tmp_path / "cache" / "latency").glob("*.json"))
    assert len(cached) == 1 and json.loads(cached[0].read_text())["ms"] == ms
    res = run_cli("train", shapes_dir, "--out", tmp_path / "run", "--budget-ms", "0.01",
                  env={"EDGECLF_CACHE_DIR": str(tmp_path / "cache")}, timeout=300)
    line = error_line(res)
    assert "no model fits" in line and "efficientnet_lite0" in line and f"{ms:.1f} ms" in line
    assert not (tmp_path / "run" / "model.keras").exists()
