"""benchmarks/compare.py's ArmLog: which of edgeclf's adaptive arms ran in each condition."""

from __future__ import annotations

import sys

from conftest import ROOT


def test_arm_calls_are_split_by_condition(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    sys.modules.pop("compare", None)
    import compare

    calls = {"2 threads": 5, "1 thread": 0}
    adaptive = compare.Runner("onnx_int8", "", None, lambda x: x, arm_calls=lambda: dict(calls))
    fixed = compare.Runner("litert_int8", "", None, lambda x: x)
    log = compare.ArmLog([adaptive, fixed, compare.Runner("onnx_fp32", "", None, lambda x: x, arm_calls=dict)])
    assert [r.name for r in log.runners] == ["onnx_int8"]  # fixed threads ({}) and other runtimes: nothing to log
    log.enter("idle")
    calls["2 threads"] += 30
    log.enter("loaded")
    calls["2 threads"] += 1
    calls["1 thread"] += 3
    log.enter("idle")
    calls["2 threads"] += 10
    log.enter(None)
    assert log.by == {"idle": {"onnx_int8": {"2 threads": 40, "1 thread": 0}},
                      "loaded": {"onnx_int8": {"2 threads": 1, "1 thread": 3}}}
    assert log.notes() == [
        "ONNX int8 (onnxruntime), idle: calls per way of running (untimed settling included): 2 threads 100%",
        "ONNX int8 (onnxruntime), loaded: calls per way of running (untimed settling included): 1 thread 75%, 2 threads 25%"]
