"""On a GPU: the right model format, honest figures, and no noise about providers that did not start.

There is no GPU here and onnxruntime is the CPU build, so what cannot exist is faked, as in
test_runtime_providers.py: the list of available providers (``onnxruntime.get_available_providers``)
and, where a GPU must seem to run, a real CPU session whose ``get_providers()`` says CUDA. The model
really runs (on the CPU); only the names of the providers are made up. What a real GPU does with
the formats (fp16 fastest) is the measurement recorded in ``edgeclf.model.locate``.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest
from onnx_fixtures import BGR, make_colour_model

from edgeclf.errors import EdgeclfError
from edgeclf.model import classifier as classifier_module, providers as prov
from edgeclf.model.exported import FP16_NAME, FP32_NAME, INT8_NAME
from edgeclf.model.locate import onnx_model, why_this_file
from edgeclf.model.session import open_session

JETSON = [prov.TENSORRT, prov.CUDA, prov.CPU]
CUDA_ONLY = [prov.CUDA, prov.CPU]
CPU_ONLY = ["AzureExecutionProvider", prov.CPU]


class _SaysCuda:
    """A real CPU session that reports the GPU providers a working CUDA session would."""

    def __init__(self, real, providers=(prov.CUDA, prov.CPU), first_run_s: float = 0.0):
        self._real, self._providers, self._cold = real, list(providers), first_run_s

    def get_providers(self) -> list[str]:
        return self._providers

    def run(self, *args, **kwargs):
        if self._cold:  # a GPU's first run picks its kernels: seconds, once
            time.sleep(self._cold)
            self._cold = 0.0
        return self._real.run(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._real, name)


@pytest.fixture
def fake_gpu(monkeypatch):
    """``fake_gpu(available, started, first_run_s)``: onnxruntime lists ``available`` and every
    session the classifier opens says it runs on ``started`` (None: the real CPU session's own list,
    as when a listed GPU provider fails to start). Returns the model files the sessions opened."""
    opened: list[Path] = []

    def install(available=CUDA_ONLY, started=(prov.CUDA, prov.CPU), first_run_s=0.0):
        monkeypatch.setattr(ort, "get_available_providers", lambda: list(available))

        def fake_open(model, threads=None, spin=False, providers=(prov.CPU,), config=None, **kw):
            opened.append(Path(model))
            real = open_session(model, threads, spin, [prov.CPU], config, **kw)
            if not any((p if isinstance(p, str) else p[0]) in prov.GPU_PROVIDERS for p in providers):
                return real  # the CPU asked for: nothing to fake
            if started is None:  # a listed GPU provider that did not start: the real session says CPU
                return real
            return _SaysCuda(real, started, first_run_s)

        monkeypatch.setattr(classifier_module, "open_session", fake_open)
        return opened

    return install


def _export_folder(tmp_path: Path, names=(FP32_NAME, INT8_NAME, FP16_NAME)) -> Path:
    """An export folder holding the colour model under each of ``names`` (no export.json: no hashes to match)."""
    folder = tmp_path / "run" / "export"
    model = make_colour_model(tmp_path / "colour.onnx")
    folder.mkdir(parents=True)
    for name in names:
        shutil.copy(model, folder / name)
    return folder


def _photos(tmp_path: Path, n: int) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(n):
        colour = list(BGR)[i % 3]
        cv2.imwrite(str(folder / f"{i:03d}_{colour}.png"), np.full((24, 24, 3), BGR[colour], np.uint8))
    return folder


# ------------------------------------------------------------------------ (a) the format for the device
@pytest.mark.parametrize("present, gpu, expected", [
    ((FP32_NAME, INT8_NAME, FP16_NAME), True, FP16_NAME),
    ((FP32_NAME, INT8_NAME, FP16_NAME), False, INT8_NAME),  # the CPU's choice is today's
    ((FP32_NAME, INT8_NAME), True, FP32_NAME),
    ((INT8_NAME,), True, INT8_NAME),
    ((FP32_NAME,), False, FP32_NAME),
])
def test_an_export_folder_gives_the_format_for_the_device(tmp_path, present, gpu, expected):
    for where in (tmp_path / "a", tmp_path / "b" / "export"):  # the folder itself, or a run's export/
        where.mkdir(parents=True)
        for name in present:
            (where / name).write_bytes(b"")  # onnx_model chooses by name: the contents are the loader's
        run = where.parent if where.name == "export" else where
        assert onnx_model(run, gpu=gpu) == (where / expected, True)


def test_a_file_named_is_used_as_given_on_a_gpu(tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    for name in (FP32_NAME, INT8_NAME, FP16_NAME):
        (folder / name).write_bytes(b"")
    assert onnx_model(folder / INT8_NAME, gpu=True) == (folder / INT8_NAME, False)


@pytest.mark.parametrize("requested, available, gpu", [
    ("auto", JETSON, True), ("auto", CUDA_ONLY, True), ("auto", CPU_ONLY, False), ("cpu", JETSON, False),
    ("cuda", CUDA_ONLY, True), ("tensorrt", JETSON, True), ("cuda", CPU_ONLY, False),  # missing: falls back to the CPU
])
def test_the_plan_says_whether_a_gpu_runs_first(requested, available, gpu):
    assert prov.plans_gpu(requested, available) is gpu


def test_the_choice_is_said_in_one_line():
    fp16 = why_this_file(Path("x") / FP16_NAME, gpu=True)
    assert fp16 == "fp16 is the fastest format on a GPU; name a file to choose another"
    assert "no model.fp16.onnx" in why_this_file(Path("x") / FP32_NAME, gpu=True) and "--fp16" in why_this_file(Path(FP32_NAME), True)
    assert why_this_file(Path("x") / INT8_NAME, gpu=False) == ""


def test_predict_runs_an_export_folders_fp16_model_on_cuda(tmp_path, fake_gpu, capsys):
    from edgeclf.predict.loop import PredictOptions, run_predict

    folder, photos = _export_folder(tmp_path), _photos(tmp_path, 3)
    opened = fake_gpu()
    summary = run_predict(PredictOptions(folder.parent, str(photos), provider="auto", quiet=True))
    err = capsys.readouterr().err
    assert opened == [folder / FP16_NAME]
    assert f"edgeclf: running {folder / FP16_NAME}: fp16 is the fastest format on a GPU; name a file to choose another" in err
    assert summary.processed == 3 and summary.providers == [prov.CUDA, prov.CPU] and "warning" not in err
    run_predict(PredictOptions(folder / INT8_NAME, str(photos), provider="cuda", quiet=True))  # a file: as given
    assert opened[-1] == folder / INT8_NAME and "running" not in capsys.readouterr().err
    run_predict(PredictOptions(folder.parent, str(photos), provider="cpu", quiet=True))  # the CPU: today's choice
    assert opened[-1] == folder / INT8_NAME
    assert capsys.readouterr().err.splitlines()[0] == f"edgeclf: running {folder / INT8_NAME}"


def test_a_gpu_that_does_not_start_gets_the_cpus_file(tmp_path, fake_gpu, capsys):
    """CUDA listed but not starting: the fp16 file chosen for it is swapped for the CPU's int8 one,
    and the failure is said once."""
    from edgeclf.predict.loop import PredictOptions, run_predict

    folder, photos = _export_folder(tmp_path), _photos(tmp_path, 2)
    opened = fake_gpu(started=None)
    summary = run_predict(PredictOptions(folder, str(photos), quiet=True))
    err = capsys.readouterr().err.splitlines()
    assert opened[0] == folder / FP16_NAME and set(opened[1:]) == {folder / INT8_NAME}  # (one session per thread count)
    assert summary.providers == [prov.CPU] and summary.processed == 2
    assert [line for line in err if line.startswith("warning:")] == [
        "warning: provider 'auto': cuda failed to start; running on cpu"]
    assert f"edgeclf: running {folder / INT8_NAME} instead: no GPU provider started" in err


def test_a_gpu_that_does_not_start_gets_the_cpus_engine_record(tmp_path, fake_gpu, capsys):
    """The CPU's file after a failed GPU is the one ``--engine auto`` would have run on the CPU:
    ``bench --engines``' record for this machine (here onnxruntime at 1 thread) is followed, and said."""
    from edgeclf.model import engine_choice
    from edgeclf.predict.loop import PredictOptions, run_predict

    folder, photos = _export_folder(tmp_path), _photos(tmp_path, 2)
    engine_choice.write_record(folder, {"choice": {"engine": "onnxruntime", "file": INT8_NAME, "threads": 1,
                                                   "label": "onnxruntime, 1 thread", "p50_ms": 1.0}})
    opened = fake_gpu(started=None)
    summary = run_predict(PredictOptions(folder, str(photos), quiet=True))
    err = capsys.readouterr().err.splitlines()
    assert opened == [folder / FP16_NAME, folder / INT8_NAME]  # one fixed thread count: one CPU session
    assert summary.providers == [prov.CPU] and summary.processed == 2
    assert (f"edgeclf: running {folder / INT8_NAME} instead: no GPU provider started; chosen here by "
            "`edgeclf bench --engines`: onnxruntime, 1 thread, p50 1.00 ms") in err


def test_serve_too_falls_back_to_the_cpus_file_when_the_gpu_does_not_start(tmp_path, fake_gpu):
    """edgeclf serve chooses its file as predict does: fp16 for the GPU it plans, and the CPU's
    int8 file (and engine record) when that GPU then does not start, said in its log."""
    from edgeclf.service.config import load_config
    from edgeclf.service.runner import open_model

    folder = _export_folder(tmp_path)
    cfg_path = tmp_path / "svc.toml"
    cfg_path.write_text(f'model = "{folder}"\n[[source]]\nname = "door"\nuri = "a.mp4"\n')
    opened, log = fake_gpu(started=None), []
    clf = open_model(load_config(cfg_path), log.append)
    assert clf.path == folder / INT8_NAME and clf.providers == [prov.CPU]
    assert opened[0] == folder / FP16_NAME and set(opened[1:]) == {folder / INT8_NAME}
    assert log[-1] == f"running {folder / INT8_NAME} instead: no GPU provider started"
    opened.clear()
    fake_gpu()  # a GPU that starts: its file stays
    assert open_model(load_config(cfg_path), log.append).path == folder / FP16_NAME


# ------------------------------------------------------------------------------ (b) bench on a GPU
def test_bench_on_a_gpu_shows_no_cpu_figures(tmp_path, fake_gpu, monkeypatch):
    from rich.console import Console

    from edgeclf.bench import peak, report as bench_report, run as bench

    def no_probe(*a, **k):
        raise AssertionError("the CPU matmul peak was measured for a GPU run")

    monkeypatch.setattr(peak, "core_peak_gflops", no_probe)
    fake_gpu()
    model = make_colour_model(tmp_path / "m.onnx")
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 32))
    for i in range(6):
        writer.write(np.full((32, 32, 3), BGR[list(BGR)[i % 3]], np.uint8))
    writer.release()
    r = bench.benchmark(model, runs=4, warmup=1, batches=[1, 2], provider="cuda", source=video, show_progress=False)
    assert r["provider"] == prov.CUDA
    assert r["core_peak_gflops"] is None and r["peak_precision"] is None and r["peak_probe"] is None
    assert r["peak_fraction"] is None and r["peak_gflops"] is None and r["headline"]["threads"] is None
    for x in [*r["results"], r["source"], r["pipeline"]]:
        assert x["threads"] is None
    for x in r["results"]:
        assert x["peak_fraction"] is None and x["peak_gflops"] is None and x["throughput_fps"] > 0
    json.dumps(r)
    console = Console(record=True, width=200)
    bench_report.render(r, console)
    text = console.export_text()
    for cpu_only in ("matmul peak", "of the measured", "thread(s)", "threads", "per core"):
        assert cpu_only not in text, (cpu_only, text)
    header = next(line for line in text.splitlines() if "p50" in line)
    assert "batch" in header and "thr" not in header and "peak" not in header
    assert "m.onnx on cuda" in text and "inference on cuda" in text and "host CPU:" in text
    drawn = []
    monkeypatch.setattr(bench_report.cvplot, "bar_chart", lambda title, labels, series, unit, sub="": drawn.append((labels, sub)) or np.zeros((10, 900, 3), np.uint8))
    monkeypatch.setattr(bench_report.cvplot, "save_png", lambda path, image: None)
    bench_report.plot(r, tmp_path / "b.png")
    assert drawn[0][0] == ["batch 1", "batch 2"] and drawn[0][1].startswith(prov.CUDA)
    assert all("thr" not in label for labels, _ in drawn for label in labels)
    # --threads on a GPU: the count asked for is shown, as a setting of the CPU's part
    fixed = bench.benchmark(model, runs=2, warmup=0, threads=[2], provider="cuda", show_progress=False)
    assert [x["threads"] for x in fixed["results"]] == [2] and fixed["peak_fraction"] is None


def test_bench_on_the_cpu_keeps_its_peak(tmp_path):
    from edgeclf.bench import run as bench

    r = bench.benchmark(make_colour_model(tmp_path / "m.onnx"), runs=3, warmup=0, threads=[1], provider="cpu", show_progress=False)
    assert r["core_peak_gflops"] > 0 and r["results"][0]["threads"] == 1 and r["peak_precision"] == "float32"


# ---------------------------------------------------------------- (c) predict's frames/s after start-up
def test_predict_counts_frames_per_second_after_its_start_up(tmp_path, fake_gpu, capsys):
    """A session whose first run takes 1.5 s (as fp16 on CUDA picks its kernels): the start-up
    holds it, the frames per second and the first frame's latency do not."""
    from edgeclf.predict.loop import PredictOptions, run_predict

    model, photos = make_colour_model(tmp_path / "m.onnx"), _photos(tmp_path, 12)
    fake_gpu(first_run_s=1.5)
    summary = run_predict(PredictOptions(model, str(photos), provider="cuda", quiet=True))
    assert summary.processed == 12
    assert summary.startup_s >= 1.5 and summary.seconds < 1.0
    assert summary.fps == pytest.approx(12 / summary.seconds)
    assert max(summary.latency_ms) < 1000  # the cold run was the warm-up's, not a frame's
    d = summary.as_dict()
    assert d["startup_s"] == pytest.approx(summary.startup_s, abs=1e-3) and d["fps_measures"] == "results/s after the start-up"
    line = capsys.readouterr().err.strip().splitlines()[-1]
    total = summary.startup_s + summary.seconds
    assert f"in {total:.2f} s (start-up {summary.startup_s:.2f} s, then {summary.fps:.1f} frames/s over" in line


def test_summary_line_figures_agree():
    from edgeclf.predict.options import Summary

    s = Summary(processed=200, seconds=0.3, startup_s=5.9, latency_ms=[1.5] * 200, providers=[prov.CUDA, prov.CPU])
    assert s.line() == ("200 processed, 0 skipped in 6.20 s (start-up 5.90 s, then 666.7 frames/s over 0.3 s; "
                        "latency 1.5 ms/frame) on cuda, cpu")
    assert "0.00927 s" in Summary(processed=12, seconds=0.00927).line()  # 12 / 0.00927 = 1294.5, as shown


# ------------------------------------------------------------- (d) auto and a TensorRT without libraries
LOG = "EP Error ... Please install TensorRT libraries as mentioned in the GPU requirements page"


def test_auto_on_cuda_with_tensorrt_missing_is_a_note_not_a_warning():
    warning, note = prov.start_problems("auto", JETSON, [prov.CUDA, prov.CPU], LOG)
    assert warning is None
    assert note == "provider 'auto': tensorrt failed to start (needs TensorRT); running on cuda, cpu"


@pytest.mark.parametrize("requested, planned, started, says", [
    ("auto", JETSON, [prov.CPU], "provider 'auto': tensorrt, cuda failed to start (needs TensorRT); running on cpu"),
    ("tensorrt", JETSON, [prov.CUDA, prov.CPU], "provider 'tensorrt': tensorrt failed to start (needs TensorRT); running on cuda, cpu"),
    ("cuda", CUDA_ONLY, [prov.CPU], "provider 'cuda': cuda failed to start (needs TensorRT); running on cpu"),
])
def test_a_provider_asked_for_that_did_not_start_still_warns(requested, planned, started, says):
    assert prov.start_problems(requested, planned, started, LOG) == (says, None)


def test_nothing_to_say_when_everything_started():
    assert prov.start_problems("auto", JETSON, JETSON) == (None, None)
    assert prov.start_problems("cpu", [prov.CPU], [prov.CPU]) == (None, None)


def test_classifier_auto_on_cuda_is_quiet_and_tensorrt_by_name_is_not(tmp_path, fake_gpu):
    from edgeclf.model.classifier import Classifier

    model = make_colour_model(tmp_path / "m.onnx")
    fake_gpu(available=JETSON, started=[prov.CUDA, prov.CPU])
    said: list[str] = []
    clf = Classifier(model, provider="auto", warn=said.append)
    assert said == [] and clf.providers[0] == prov.CUDA and "tensorrt failed to start" in clf.provider_note
    Classifier(model, provider="auto", strict=True)  # auto got a GPU: --strict has nothing to refuse
    Classifier(model, provider="tensorrt", warn=said.append)
    assert len(said) == 1 and said[0].startswith("provider 'tensorrt': tensorrt failed to start")
    with pytest.raises(EdgeclfError, match="^provider 'tensorrt': tensorrt failed to start[^\n]*$"):
        Classifier(model, provider="tensorrt", strict=True)


def test_cli_strict_tensorrt_exits_2_in_one_line(tmp_path, fake_gpu, monkeypatch, capsys):
    from edgeclf import cli

    model, photos = make_colour_model(tmp_path / "m.onnx"), _photos(tmp_path, 1)
    fake_gpu(available=JETSON, started=[prov.CUDA, prov.CPU])
    monkeypatch.setattr(sys, "argv", ["edgeclf", "predict", str(model), str(photos), "--provider", "tensorrt", "--strict"])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and err[0].startswith("edgeclf: error: provider 'tensorrt': tensorrt failed")
    monkeypatch.setattr(sys, "argv", ["edgeclf", "predict", str(model), str(photos), "--provider", "auto", "--json"])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    out, err = capsys.readouterr()
    assert exit_.value.code == 0 and "warning" not in err and json.loads(out)["label"] in BGR


def test_bench_shows_the_note(tmp_path, fake_gpu):
    from rich.console import Console

    from edgeclf.bench import report as bench_report, run as bench

    fake_gpu(available=JETSON, started=[prov.CUDA, prov.CPU])
    r = bench.benchmark(make_colour_model(tmp_path / "m.onnx"), runs=2, warmup=0, show_progress=False)
    assert "tensorrt failed to start" in r["provider_note"]
    console = Console(record=True, width=300)
    bench_report.render(r, console)
    assert "note: provider 'auto': tensorrt failed to start" in console.export_text()
