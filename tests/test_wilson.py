"""Every accuracy figure ``edgeclf eval`` prints carries its 95% Wilson score interval: the
interval itself (closed form, published values) and eval's console and JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import pytest
from conftest import run_cli
from onnx_fixtures import make_colour_model, solid

from edgeclf.metrics import classification_report, wilson_interval

Z = 1.959963984540054


def closed_form(x: int, n: int, z: float = Z) -> tuple[float, float]:
    """Wilson (1927) as (2np + z^2 -+ z sqrt(z^2 + 4np(1-p))) / (2(n + z^2)): another spelling of
    the same interval than the one edgeclf computes."""
    p = x / n
    root = z * math.sqrt(z * z + 4 * n * p * (1 - p))
    return (2 * n * p + z * z - root) / (2 * (n + z * z)), (2 * n * p + z * z + root) / (2 * (n + z * z))


@pytest.mark.parametrize("x, n", [(0, 10), (10, 10), (50, 100), (1, 48), (47, 48), (475, 500), (3, 7)])
def test_wilson_matches_the_closed_form(x, n):
    assert wilson_interval(x, n) == pytest.approx(closed_form(x, n), abs=1e-12)


def test_known_values():
    assert wilson_interval(0, 10) == (0.0, pytest.approx(0.2775, abs=1e-4))  # exactly 0: no rounding below it
    assert wilson_interval(10, 10) == (pytest.approx(0.7225, abs=1e-4), 1.0)
    lo, hi = wilson_interval(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-4) and hi == pytest.approx(0.5962, abs=1e-4) and lo + hi == pytest.approx(1)
    assert wilson_interval(0, 0) == (0.0, 1.0)  # no photo: nothing known
    for bad in ((-1, 10), (11, 10), (1, -1)):
        with pytest.raises(ValueError):
            wilson_interval(*bad)


@pytest.mark.parametrize("x, n, lo, hi", [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605),
                                          (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718)])
def test_published_examples(x, n, lo, hi):
    """Newcombe (1998), Two-sided confidence intervals for the single proportion, Statistics in
    Medicine 17: 857-872, Table II, method 3 (score interval without continuity correction)."""
    got = wilson_interval(x, n)
    assert got[0] == pytest.approx(lo, abs=5e-5) and got[1] == pytest.approx(hi, abs=5e-5)


def test_report_carries_an_interval_for_each_accuracy_figure():
    r = classification_report([0, 0, 0, 1, 1], [0, 0, 1, 1, 1], ["a", "b"])
    assert r["accuracy"] == 0.8 and r["accuracy_ci95"] == list(wilson_interval(4, 5))
    a, b = r["per_class"]["a"], r["per_class"]["b"]
    assert a["recall_ci95"] == list(wilson_interval(2, 3)) and a["precision_ci95"] == list(wilson_interval(2, 2))
    assert b["recall_ci95"] == list(wilson_interval(2, 2)) and b["precision_ci95"] == list(wilson_interval(2, 3))
    assert (a["support"], a["predicted"], b["support"], b["predicted"]) == (3, 2, 2, 3)
    empty = classification_report([], [], ["a"])
    assert empty["accuracy_ci95"] == [0.0, 1.0] and empty["per_class"]["a"]["precision_ci95"] == [0.0, 1.0]


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> tuple[Path, Path]:
    """The colour model and 46 photos: 11 red (one of them blue, so labelled wrong), 15 green, 20 blue."""
    root = tmp_path_factory.mktemp("wilson")
    data = root / "data"
    for colour, k in (("red", 10), ("green", 15), ("blue", 20)):
        (data / colour).mkdir(parents=True)
        for i in range(k):
            cv2.imwrite(str(data / colour / f"{i}.png"), solid(colour))
    cv2.imwrite(str(data / "red" / "odd.png"), solid("blue"))
    return make_colour_model(root / "m.onnx"), data


def test_eval_console_shows_each_figure_with_its_interval(labelled):
    model, data = labelled
    res = run_cli("eval", model, data)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    lo, hi = wilson_interval(45, 46)
    assert f"accuracy 97.83% (95% CI {100 * lo:.1f}-{100 * hi:.1f}%) on 46 images" in lines[0], lines[0]
    assert "recall (95% CI)" in res.stdout and "precision (95% CI)" in res.stdout
    rows = {}  # the per-class table's row of each class (the confusion matrix's come after)
    for line in lines:
        if line.startswith("│ ") and line.split()[1] in ("red", "green", "blue"):
            rows.setdefault(line.split()[1], line)
    rlo, rhi = wilson_interval(10, 11)  # red's recall: 10 of its 11 photos; its precision: 10 of 10
    assert f"90.9% ({100 * rlo:.1f}-{100 * rhi:.1f})" in rows["red"] and "100.0% (72.2-100.0)" in rows["red"]
    assert "95.2% (77.3-99.2)" in rows["blue"]  # blue's precision: 20 of the 21 photos called blue


def test_eval_json_carries_the_intervals(labelled):
    model, data = labelled
    res = run_cli("eval", model, data, "--json")
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout)
    assert r["accuracy_ci95"] == pytest.approx(wilson_interval(45, 46)) and r["ci"] == "95% Wilson score interval"
    red = r["per_class"]["red"]
    assert red["recall_ci95"] == pytest.approx(wilson_interval(10, 11))
    assert red["precision_ci95"] == pytest.approx(wilson_interval(10, 10)) and red["predicted"] == 10
