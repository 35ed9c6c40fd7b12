"""edgeclf bench on generated tiny ONNX models and generated video/images.

Asserts the structure and sanity of the figures, never their speed.
"""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
from conftest import ROOT, TRAIN_EXTRA, error_line, run_cli
from int8_kernels import exact_matmul, pair_saturated_matmul

from benchmarks import onnx_models as om
from edgeclf import sysinfo
from edgeclf.bench import charts as cvplot, run as bench
from edgeclf.data.synthetic import make_shapes_dataset, make_shapes_video
from edgeclf.errors import EdgeclfError
from edgeclf.model.macs import count_macs, node_macs

SIZE = 32
# Conv 3x3, 3->8 channels, no padding on 32x32: 30*30*8 outputs x 27 weights; Gemm 8->3.
TINY_MACS = 30 * 30 * 8 * 27 + 8 * 3


def _tiny_model(path, int8=False):
    """uint8 NHWC `image` -> Cast -> Transpose -> Conv -> Relu -> GAP -> Gemm -> Softmax `probs`,
    with edgeclf metadata: the same interface as `edgeclf export` writes. ``int8``: the convolution
    in QDQ form, int8 weights and activations, as `edgeclf export --int8` writes it (onnxruntime
    runs it as QLinearConv); written by hand, so that a base install, without onnx and its
    quantizer, tests int8 models too."""
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32)
    inits = [
        om.tensor("G", rng.normal(0, 0.3, (8, 3)).astype(np.float32)),
        om.tensor("GB", np.zeros(3, np.float32)),
        om.tensor("s", np.array(1 / 255, np.float32)),
    ]
    conv = [om.node("Conv", ["t", "W", "B"], ["c"], kernel_shape=[3, 3])]
    if int8:
        w_scale = np.abs(w).max() / 127
        c_scale = np.abs(w).sum(axis=(1, 2, 3)).max() / 127  # the largest output, from inputs in [0, 1]
        inits += [
            om.tensor("Wq", np.round(w / w_scale).astype(np.int8)), om.tensor("ws", np.float32(w_scale)),
            om.tensor("Bq", np.zeros(8, np.int32)), om.tensor("bs", np.float32(w_scale / 255)),
            om.tensor("ts", np.float32(1 / 255)), om.tensor("cs", np.float32(c_scale)),
            om.tensor("z8", np.int8(0)), om.tensor("zt", np.int8(-128)), om.tensor("z32", np.int32(0)),
        ]
        conv = [
            om.node("QuantizeLinear", ["t", "ts", "zt"], ["tq"]), om.node("DequantizeLinear", ["tq", "ts", "zt"], ["td"]),
            om.node("DequantizeLinear", ["Wq", "ws", "z8"], ["Wd"]), om.node("DequantizeLinear", ["Bq", "bs", "z32"], ["Bd"]),
            om.node("Conv", ["td", "Wd", "Bd"], ["cf"], kernel_shape=[3, 3]),
            om.node("QuantizeLinear", ["cf", "cs", "z8"], ["cq"]), om.node("DequantizeLinear", ["cq", "cs", "z8"], ["c"]),
        ]
    else:
        inits += [om.tensor("W", w), om.tensor("B", np.zeros(8, np.float32))]
    nodes = [
        om.node("Cast", ["image"], ["f"], to=om.FLOAT),
        om.node("Mul", ["f", "s"], ["fs"]),
        om.node("Transpose", ["fs"], ["t"], perm=[0, 3, 1, 2]),
        *conv,
        om.node("Relu", ["c"], ["r"]),
        om.node("GlobalAveragePool", ["r"], ["g"]),
        om.node("Flatten", ["g"], ["fl"]),
        om.node("Gemm", ["fl", "G", "GB"], ["lo"]),
        om.node("Softmax", ["lo"], ["probs"], axis=1),
    ]
    return om.save(om.model(
        nodes, "tiny", [om.value_info("image", om.UINT8, ["N", SIZE, SIZE, 3])], [om.value_info("probs", om.FLOAT, ["N", 3])],
        inits, opset=17, ir_version=9, metadata={
            "class_names": json.dumps(["circle", "square", "triangle"]),
            "input_height": str(SIZE), "input_width": str(SIZE), "color_order": "RGB", "precision": "fp32",
        }), path)


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    return _tiny_model(tmp_path_factory.mktemp("bench_model") / "model.onnx")


@pytest.fixture(scope="module")
def tiny_int8(tiny_onnx):
    return _tiny_model(tiny_onnx.parent / "model.int8.onnx", int8=True)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench_video") / "shapes.mp4"
    make_shapes_video(path, frames=12, size=80, hold=4)
    return path


def _check_stats(stats: dict) -> None:
    assert set(stats) >= {"p50", "p90", "p99", "mean", "std"}
    assert 0 < stats["p50"] <= stats["p90"] <= stats["p99"]
    assert stats["mean"] > 0 and stats["std"] >= 0


# ----------------------------------------------------------------------------------------- pure parts
def test_parse_int_list():
    assert bench.parse_int_list("1,4,8", "--batch") == [1, 4, 8]
    assert bench.parse_int_list(" 2, 2 ,1", "--threads") == [2, 1]
    for bad in ("abc", "-1", "0", "1,,2", "1.5"):
        with pytest.raises(EdgeclfError):
            bench.parse_int_list(bad, "--batch")


def test_latency_stats_percentiles():
    s = bench.latency_stats(list(range(1, 101)))
    assert s["p50"] == pytest.approx(50.5)
    assert s["p90"] == pytest.approx(90.1)
    assert s["p99"] == pytest.approx(99.01)
    assert s["mean"] == pytest.approx(50.5)
    assert s["std"] == pytest.approx(np.std(np.arange(1, 101)))


def test_node_macs_rules():
    # Depthwise conv: weight [C, 1, 3, 3]; quantized conv: weight is input 3.
    assert node_macs("Conv", [[1, 16, 10, 10], [16, 1, 3, 3]], [[1, 16, 10, 10]]) == 1600 * 9
    assert node_macs("QLinearConv", [[1, 3, 8, 8], [], [], [4, 3, 1, 1]], [[1, 4, 8, 8]]) == 256 * 3
    assert node_macs("MatMul", [[1, 64], [64, 10]], [[1, 10]]) == 640
    assert node_macs("Relu", [[1, 10]], [[1, 10]]) == 0


def test_count_macs_fp32_and_int8(tiny_onnx, tiny_int8):
    assert count_macs(tiny_onnx, (1, SIZE, SIZE, 3)) == TINY_MACS
    assert count_macs(tiny_int8, (1, SIZE, SIZE, 3)) == TINY_MACS


def test_bar_chart_draws_values_and_missing():
    img = cvplot.bar_chart("t", ["a", "b"], {"x": [1.0, None], "y": [10.0, 100.0]}, "ms", "sub", log=True)
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[1] == 900
    assert (img < 250).any()  # something was drawn


# ----------------------------------------------------------------------------------- in-process run
def test_benchmark_figures_are_sane(tiny_onnx, tmp_path):
    r = bench.benchmark(tiny_onnx, runs=6, warmup=1, batches=[1, 3], threads=[1, 2], show_progress=False)
    assert [(x["threads"], x["batch"]) for x in r["results"]] == [(1, 1), (1, 3), (2, 1), (2, 3)]
    for x in r["results"]:
        _check_stats(x["latency_ms"])
        _check_stats(x["batch_latency_ms"])
        # per-frame latency is the batch latency divided by the batch size
        assert x["latency_ms"]["mean"] == pytest.approx(x["batch_latency_ms"]["mean"] / x["batch"])
        # throughput is frames over the summed batch times: batch / mean batch latency
        assert x["throughput_fps"] == pytest.approx(x["batch"] / (x["batch_latency_ms"]["mean"] / 1e3))
        assert x["gflops"] == pytest.approx(2 * TINY_MACS * x["throughput_fps"] / 1e9)
        assert x["peak_gflops"] == pytest.approx(r["core_peak_gflops"] * min(x["threads"], r["cores"]))
    head = r["headline"]
    assert head["batch"] == 1
    chosen = next(x for x in r["results"] if (x["threads"], x["batch"]) == (head["threads"], 1))
    assert r["latency_ms"] == chosen["latency_ms"]
    assert r["model_bytes"] == tiny_onnx.stat().st_size
    assert r["macs_per_frame"] == TINY_MACS and r["macs_source"] == "onnxruntime profile"
    assert r["provider"] == "CPUExecutionProvider"
    assert r["input_size"] == [SIZE, SIZE] and r["precision"] == "fp32"
    assert r["cold_start_ms"] == pytest.approx(r["cold_start"]["session_ms"] + r["cold_start"]["first_result_ms"])
    assert r["cold_start_ms"] > 0 and r["rss_mb"] > 10 and r["core_peak_gflops"] > 0
    assert r["cores"] >= 1 and r["cpu"]
    assert "stages_ms" not in r
    json.dumps(r)  # JSON-ready


def test_benchmark_default_threads_adapt_and_say_how_they_ran(tiny_onnx, video, monkeypatch):
    """No --threads: the classifier's adaptive default, as edgeclf predict runs it; every result
    says which thread counts its timed calls ran on, and the threads shown are the most used."""
    from edgeclf.model import threads as thr

    monkeypatch.setattr(thr, "default_threads", lambda cpu_count=None: 2)
    r = bench.benchmark(tiny_onnx, runs=40, warmup=2, batches=[1, 4], source=video, show_progress=False)
    for x in [*r["results"], r["source"], r["pipeline"]]:
        assert x["adaptive"] is True and x["threads_setting"] is None
        cores = {"2 threads": 2, "2 threads, no spin": 2, "1 thread": 1, "2 x 1 thread": 2}
        assert set(x["thread_calls"]) <= set(cores)
        assert x["threads"] == cores[x["ran_as"]]
        assert x["thread_calls"][x["ran_as"]] == max(x["thread_calls"].values())
    assert [sum(x["thread_calls"].values()) for x in r["results"]] == [40, 40]  # the timed calls, not the warm-up
    assert "2 x 1 thread" not in r["results"][0]["thread_calls"]  # single frames are never split
    assert r["headline"]["adaptive"] is True
    fixed = bench.benchmark(tiny_onnx, runs=5, warmup=0, threads=[2], show_progress=False)
    assert fixed["results"][0]["adaptive"] is False and "thread_calls" not in fixed["results"][0]


def test_benchmark_folder_source_skips_bad_images(tiny_int8, tmp_path, capsys):
    folder = make_shapes_dataset(tmp_path / "imgs", per_class=2, size=48)
    (folder / "circle" / "broken.jpg").write_bytes(b"not a jpeg")
    r = bench.benchmark(tiny_int8, runs=50, warmup=1, source=folder, show_progress=False)
    assert r["source"]["frames"] == 6  # 3 classes x 2 good images; the broken one skipped
    assert len(r["source"]["skipped"]) == 1 and "broken.jpg" in r["source"]["skipped"][0]
    assert "broken.jpg" in capsys.readouterr().err
    assert set(r["stages_ms"]) == {"read", "preprocess", "inference", "total"}
    for s in r["stages_ms"].values():
        _check_stats(s)
    st = r["stages_ms"]
    assert st["total"]["mean"] == pytest.approx(st["read"]["mean"] + st["preprocess"]["mean"] + st["inference"]["mean"])
    assert r["end_to_end_fps"] == pytest.approx(1e3 / st["total"]["mean"])
    assert r["macs_per_frame"] == TINY_MACS


def test_benchmark_source_limited_by_runs(tiny_onnx, video):
    r = bench.benchmark(tiny_onnx, runs=5, warmup=0, source=video, show_progress=False)
    assert r["source"]["frames"] == 5


def test_benchmark_source_times_the_overlapped_pipeline(tiny_int8, video):
    """--source also runs edgeclf predict's own reader-thread pipeline over the same frames and
    holds it against its slowest stage alone."""
    r = bench.benchmark(tiny_int8, runs=50, warmup=1, source=video, show_progress=False)
    pipe = r["pipeline"]
    assert pipe["frames"] == r["source"]["frames"] == 12 and pipe["fps"] > 0
    # its frames per second are counted after a warm-up, as the stages are (short runs moved 2x)
    assert pipe["warmup_frames"] == 1
    assert bench.benchmark(tiny_int8, runs=50, warmup=10, source=video, show_progress=False)["pipeline"]["warmup_frames"] == 2
    st = r["stages_ms"]
    assert pipe["stage_fps"]["inference"] == pytest.approx(1e3 / st["inference"]["mean"])
    assert pipe["stage_fps"]["read+preprocess"] == pytest.approx(1e3 / (st["read"]["mean"] + st["preprocess"]["mean"]))
    assert pipe["slowest_stage"] == min(pipe["stage_fps"], key=pipe["stage_fps"].get)
    assert pipe["vs_slowest_stage"] == pytest.approx(pipe["fps"] / pipe["stage_fps"][pipe["slowest_stage"]])


# --------------------------------------------------------------------------------------------- CLI
def test_cli_json_video_and_plot(tiny_onnx, video, tmp_path):
    png = tmp_path / "plots" / "bench.png"
    p = run_cli("bench", tiny_onnx, "--runs", 20, "--warmup", 2, "--batch", "1,4", "--threads", "1,2",
                "--source", video, "--json", "--plot", png)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)  # stdout holds exactly one JSON object
    for key in ("model", "provider", "latency_ms", "throughput_fps", "model_bytes", "rss_mb", "stages_ms",
                "macs_per_frame", "cpu", "cores", "onnxruntime", "cold_start_ms", "gflops", "peak_gflops", "results"):
        assert key in r, key
    assert set(r["latency_ms"]) >= {"p50", "p90", "p99", "mean"}
    assert len(r["results"]) == 4
    assert r["source"]["frames"] == 12  # the whole video (fewer frames than --runs)
    assert r["pipeline"]["frames"] == 12 and 0 < r["pipeline"]["vs_slowest_stage"]
    assert r["plot"] == str(png)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    img = cv2.imread(str(png))
    assert img is not None and img.shape[0] > 300 and img.shape[1] == 900
    assert not list(png.parent.glob(".*"))  # no temporary file left beside it


def test_cli_table(tiny_onnx):
    p = run_cli("bench", tiny_onnx, "--runs", 5, "--warmup", 0, env={"COLUMNS": "120"})
    assert p.returncode == 0, p.stderr
    for text in ("p50", "p99", "fps", "MACs per frame: 0.2 M", "CPUExecutionProvider", "cold start", "peak resident memory",
                 "GFLOP/s", "(adaptive)" if sysinfo.cpu_cores() > 1 else "1 thread(s)"):
        assert text in p.stdout, text


@pytest.mark.parametrize(
    "args, message",
    [
        (["--runs", "0"], "--runs 0"),
        (["--warmup", "-1"], "--warmup -1"),
        (["--batch", "-1"], "--batch '-1'"),
        (["--batch", "1,x"], "--batch '1,x'"),
        (["--threads", "abc"], "--threads 'abc'"),
        (["--threads", "0"], "--threads '0'"),
        (["--plot", "chart.jpg"], "chart.jpg"),
        (["--source", "MISSING"], "source does not exist"),
        (["--source", "NOTVIDEO"], "not an image or a video OpenCV can read"),
        (["--source", "EMPTYDIR"], "no image files"),
    ],
)
def test_cli_bad_options(tiny_onnx, tmp_path, args, message):
    args = [a.replace("MISSING", str(tmp_path / "nope.mp4")) for a in args]
    if "NOTVIDEO" in args:
        (tmp_path / "notes.mp4").write_text("not a video")
        args = [a.replace("NOTVIDEO", str(tmp_path / "notes.mp4")) for a in args]
    if "EMPTYDIR" in args:
        (tmp_path / "empty").mkdir()
        args = [a.replace("EMPTYDIR", str(tmp_path / "empty")) for a in args]
    p = run_cli("bench", tiny_onnx, *args)
    line = error_line(p)
    assert line.startswith("edgeclf: error:") and message in line, line
    assert p.stdout == ""


@pytest.mark.parametrize("kind", ["missing", "text", "folder"])
def test_cli_bad_model(tmp_path, kind):
    path = tmp_path / "model.onnx"
    if kind == "text":
        path.write_text("this is not a protobuf")
    elif kind == "folder":
        path.mkdir()
    p = run_cli("bench", path, "--runs", 1)
    assert error_line(p).startswith(f"edgeclf: error: {path}"), p.stderr


def test_bench_imports_no_tensorflow():
    code = "import sys, edgeclf.cli, edgeclf.bench.run; assert 'tensorflow' not in sys.modules; assert 'onnx' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# ------------------------------------------------------------------------- peak of the precision run
def test_int8_probe_model_is_the_helper_built_matmul_integer():
    """The probe model stored as bytes (no onnx on the device) is exactly this onnx.helper graph,
    and onnxruntime computes the integer product with it on every CPU family: exactly with 7-bit
    weights (what the export writes); with full-range weights exactly on VNNI and ARM, and as the
    AVX2 kernel saturates its int16 pair sums on x86 without VNNI (tests/int8_kernels.py; the
    emulated Haswell lane, tests/test_cpu_haswell.py, runs this test there)."""
    import onnxruntime as ort

    onnx = pytest.importorskip("onnx", reason=TRAIN_EXTRA)
    from onnx import TensorProto as T, helper as h

    from edgeclf.bench import peak

    g = h.make_graph(
        [h.make_node("MatMulInteger", ["a", "b", "a_zp", "b_zp"], ["y"])], "int8_matmul_probe",
        [h.make_tensor_value_info("a", T.UINT8, ["n", "k"]), h.make_tensor_value_info("b", T.INT8, ["k", "m"])],
        [h.make_tensor_value_info("y", T.INT32, ["n", "m"])],
        [h.make_tensor("a_zp", T.UINT8, [], [128]), h.make_tensor("b_zp", T.INT8, [], [0])],
    )
    model = h.make_model(g, opset_imports=[h.make_opsetid("", 13)], producer_name="edgeclf")
    model.ir_version = 8
    onnx.checker.check_model(model)
    assert model.SerializeToString() == peak.INT8_MATMUL_ONNX
    sess = ort.InferenceSession(peak.INT8_MATMUL_ONNX, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (7, 5), dtype=np.uint8)
    b7, b8 = rng.integers(-64, 64, (5, 4), dtype=np.int8), rng.integers(-128, 128, (5, 4), dtype=np.int8)
    assert np.array_equal(sess.run(None, {"a": a, "b": b7})[0], exact_matmul(a, b7, 128))
    full = sess.run(None, {"a": a, "b": b8})[0]
    assert any(np.array_equal(full, f(a, b8, 128)) for f in (exact_matmul, pair_saturated_matmul))
    assert peak.int8_matmul_peak_gops(n=64, seconds=0.01) > 0


def test_precision_run_picks_the_peak_probe(tiny_onnx, tiny_int8):
    """An int8 model is held against the int8 matmul peak, a float one against float32: the
    precision is what onnxruntime runs (the quantizer here copied the fp32 model's metadata)."""
    from edgeclf.bench.peak import PEAK_PROBES
    from edgeclf.model.macs import runs_integer_kernels

    assert not runs_integer_kernels(tiny_onnx, (1, SIZE, SIZE, 3))
    assert runs_integer_kernels(tiny_int8, (1, SIZE, SIZE, 3))
    for model, precision in ((tiny_onnx, "float32"), (tiny_int8, "int8")):
        r = bench.benchmark(model, runs=3, warmup=0, show_progress=False)
        assert r["peak_precision"] == precision and r["peak_probe"] == PEAK_PROBES[precision]
        assert r["core_peak_gflops"] > 0
        assert r["peak_fraction"] == pytest.approx(r["gflops"] / r["peak_gflops"])
    assert "MatMulInteger" in PEAK_PROBES["int8"]


def test_cli_says_which_peak(tiny_int8):
    p = run_cli("bench", tiny_int8, "--runs", 5, "--warmup", 0, env={"COLUMNS": "160"})
    assert p.returncode == 0, p.stderr
    assert "measured int8 matmul peak" in p.stdout and "GOP/s" in p.stdout and "of the measured int8 peak" in p.stdout
    j = run_cli("bench", tiny_int8, "--runs", 5, "--warmup", 0, "--json")
    assert j.returncode == 0, j.stderr
    r = json.loads(j.stdout)
    assert r["peak_precision"] == "int8" and "MatMulInteger" in r["peak_probe"]
