"""LiteRT (.tflite) models in the runtime: the metadata appended to the flatbuffer, ``Classifier`` on
a real int8 model (a colour classifier whose answers are known), ``predict --engine``, the engine
record ``bench --engines`` writes, plain ``bench`` and ``eval`` of a .tflite file."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import textwrap
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import TRAIN_EXTRA, error_line, run_cli
from onnx_fixtures import COLOURS, make_colour_model, solid
from tflite_fixtures import colour_tflite, scored_colour_tflite

from edgeclf.bench import engines
from edgeclf.errors import EdgeclfError
from edgeclf.model import engine_choice, litert, metadata as md, openvino_engine, threads as thr
from edgeclf.model.classifier import Classifier
from edgeclf.model.metadata import model_metadata

TOL = 1 / 128  # int8 quantization: the softmax output's step is 1/256
META = model_metadata(list(COLOURS), (32, 32), "colour", "int8")
TFLITE, ONNX = "model.int8.tflite", "model.int8.onnx"
RECORD = {"choice": {"engine": "litert", "file": TFLITE, "threads": 1, "label": "LiteRT, 1 thread", "p50_ms": 1.0}}
tf_mark = pytest.mark.tf


@pytest.fixture(scope="session")
def raw_tflite(tmp_path_factory) -> bytes:
    pytest.importorskip("tensorflow", reason=TRAIN_EXTRA)
    pytest.importorskip("ai_edge_litert", reason="needs the litert extra: pip install '.[litert]'")
    return colour_tflite(tmp_path_factory.mktemp("keras"))


@pytest.fixture(scope="session")
def scored(tmp_path_factory) -> bytes:
    """A LiteRT colour model with the unknown score, as export writes one: its embedding output,
    the bank (the embeddings of pure red, green and blue) and the score's calibration."""
    pytest.importorskip("tensorflow", reason=TRAIN_EXTRA)
    pytest.importorskip("ai_edge_litert", reason="needs the litert extra: pip install '.[litert]'")
    raw, names = scored_colour_tflite(tmp_path_factory.mktemp("scored"))
    bank = np.array([[2.55, 0, 0, 0.1], [0, 2.55, 0, 0.1], [0, 0, 2.55, 0.1]], np.float32)
    unknown = {"method": "knn-cosine", "k": 1, "bank": 3, "threshold": 0.2, "target_reject": 0.02}
    return litert.with_metadata(raw, {**META, litert.OUTPUTS_KEY: json.dumps(names), md.UNKNOWN: json.dumps(unknown)}, bank)


@pytest.fixture(scope="module")
def made(raw_tflite, tmp_path_factory) -> dict[str, Path]:
    """An export folder (LiteRT and ONNX int8 models, no export.json), photos, an eval data set."""
    d = tmp_path_factory.mktemp("litert")
    (d / "export").mkdir()
    (d / "export" / TFLITE).write_bytes(litert.with_metadata(raw_tflite, META))
    make_colour_model(d / "export" / ONNX)
    (d / "photos").mkdir()
    for c in COLOURS:
        (d / "data" / c).mkdir(parents=True)
        cv2.imwrite(str(d / "photos" / f"{c}.png"), solid(c))
        for i in range(2):
            cv2.imwrite(str(d / "data" / c / f"{i}.png"), solid(c, 40 + 8 * i, 40))
    return {"export": d / "export", "tflite": d / "export" / TFLITE, "photos": d / "photos", "data": d / "data"}


@pytest.fixture
def folder(made, tmp_path) -> Path:
    """A fresh copy of the export folder, for tests that write its engine.json."""
    return Path(shutil.copytree(made["export"], tmp_path / "export"))


@pytest.fixture(scope="module")
def clf(made) -> Classifier:
    return Classifier(made["tflite"])


def _zipped(member: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(litert.METADATA_MEMBER, member)
    return buf.getvalue()


def _lying_size(member: bytes) -> bytes:
    """An archive whose member declares 10 bytes and holds ``member``."""
    z = bytearray(_zipped(member))
    struct.pack_into("<I", z, z.rfind(b"PK\x01\x02") + 24, 10)  # central directory: uncompressed size
    struct.pack_into("<I", z, z.find(b"PK\x03\x04") + 22, 10)  # local header: the same
    return bytes(z)


def _labels(res: subprocess.CompletedProcess) -> dict[str, str]:
    """{photo stem: label} from predict's human output."""
    assert res.returncode == 0, res.stderr
    return {Path(line.split()[0]).stem: line.split()[1] for line in res.stdout.splitlines()}


# ------------------------------------------------------------------------------------------ metadata
def test_metadata_round_trips_through_the_file(tmp_path):
    payload = b"TFL3" + bytes(100)
    (path := tmp_path / "m.tflite").write_bytes(litert.with_metadata(payload, META))
    assert path.read_bytes().startswith(payload)  # the flatbuffer untouched, read from the start
    assert litert.read_metadata(path) == META
    path.write_bytes(payload)
    assert litert.read_metadata(path) == {}  # a .tflite from elsewhere


@pytest.mark.parametrize("archive, message", [
    (_zipped(b'{"a": "' + b"x" * (1 << 20) + b'"}'), "bytes (at most 1048576)"),
    (_lying_size(b'{"a": "' + b"x" * (2 << 20) + b'"}'), "unreadable edgeclf metadata"),
    (_zipped(b"not json {"), "not valid JSON"),
    (_zipped(b'["red", "green"]'), "not an object of strings"),
    (_zipped(b'{"class_names": 3}'), "not an object of strings"),
], ids=["declares-over-1MiB", "holds-more-than-it-declares", "not-json", "a-list", "not-strings"])
def test_damaged_metadata_is_a_one_line_error(tmp_path, archive, message):
    path = tmp_path / "m.tflite"
    path.write_bytes(b"TFL3" + bytes(100) + archive)
    with pytest.raises(EdgeclfError, match=re.escape(message)) as e:
        litert.read_metadata(path)
    assert "\n" not in str(e.value)


def test_garbage_named_tflite_is_one_line(tmp_path):
    pytest.importorskip("ai_edge_litert", reason="needs the litert extra: pip install '.[litert]'")
    (bad := tmp_path / "x.tflite").write_bytes(np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(EdgeclfError, match="not a loadable LiteRT model"):
        Classifier(bad)
    cv2.imwrite(str(tmp_path / "img.png"), solid("red"))
    assert "not a loadable LiteRT model" in error_line(run_cli("predict", bad, tmp_path / "img.png"))


@tf_mark
def test_tflite_without_metadata(raw_tflite, made, tmp_path):
    (plain := tmp_path / "plain.tflite").write_bytes(raw_tflite)
    assert "no edgeclf metadata" in error_line(run_cli("predict", plain, made["photos"]))
    named = Classifier(plain, labels=list(COLOURS), size=(32, 32))  # as for any model without metadata
    assert named.predict(solid("green")).label == "green"


def test_quantized_input_and_output_are_converted():
    """Callers feed uint8 pixels and read float probabilities whatever the model's quantization."""
    x = np.array([[0, 100, 255]], np.uint8)
    np.testing.assert_array_equal(litert._quantized(x, {"dtype": np.uint8, "quantization": (1.0, 0)}), x)
    np.testing.assert_array_equal(litert._quantized(x, {"dtype": np.int8, "quantization": (1.0, -128)}), [[-128, -28, 127]])
    np.testing.assert_array_equal(litert._quantized(x, {"dtype": np.uint8, "quantization": (2.0, 10)}), [[10, 60, 138]])
    np.testing.assert_array_equal(litert._quantized(x, {"dtype": np.float32, "quantization": (0.0, 0)}), x.astype(np.float32))
    y = np.array([[0, 128, 255]], np.uint8)
    np.testing.assert_allclose(litert._dequantized(y, {"dtype": np.uint8, "quantization": (1 / 256, 0)}), [[0, 0.5, 255 / 256]])
    z = np.array([[-128, 0]], np.int8)
    np.testing.assert_allclose(litert._dequantized(z, {"dtype": np.int8, "quantization": (0.5, -128)}), [[0, 64]])


# ------------------------------------------------------------------------------------------ Classifier
@tf_mark
def test_classifier_runs_the_tflite_on_litert(clf):
    assert clf.providers == ["LiteRT"]
    assert (clf.class_names, clf.size, clf.max_batch) == (list(COLOURS), (32, 32), None)
    preds = [clf.predict(solid(c)) for c in COLOURS]
    assert [(p.label, p.unknown_score) for p in preds] == [(c, None) for c in COLOURS] and min(p.score for p in preds) > 0.9
    assert clf.unknown_rule.threshold is None  # no unknown score in a LiteRT model


@tf_mark
def test_batches_and_threads_answer_as_one_by_one(clf):
    rng = np.random.default_rng(2)
    images = [solid(c) for c in COLOURS] + [rng.integers(0, 256, (40, 50, 3), dtype=np.uint8) for _ in range(9)]
    alone = np.array([list(clf.predict(img).probs.values()) for img in images])
    assert alone[3:].max() < 0.9  # random images: probabilities well inside (0, 1), a real comparison
    batches = [images[i:i + n] for n in (1, 3, 5, 2, 4, 5, 1) for i in range(0, len(images) - n + 1, n)]

    def run(batch):
        return np.array([list(p.probs.values()) for p in clf.predict_batch(batch)])

    sequential = [run(b) for b in batches]  # five batch sizes: more than LiteRTSession keeps interpreters for
    for b, probs in zip(batches, sequential):
        idx = [next(i for i, img in enumerate(images) if img is x) for x in b]
        np.testing.assert_allclose(probs, alone[idx], atol=TOL)
    with ThreadPoolExecutor(4) as pool:  # 4 threads at once on one session: each batch as it ran alone
        for got, want in zip(pool.map(run, batches * 3), sequential * 3):
            np.testing.assert_array_equal(got, want)


@tf_mark
def test_gpu_provider_falls_back_or_fails_strict(made):
    with pytest.raises(EdgeclfError, match="LiteRT runs on the CPU here"):
        Classifier(made["tflite"], provider="cuda", strict=True)
    warned: list[str] = []
    clf = Classifier(made["tflite"], provider="cuda", threads=1, warn=warned.append)
    assert len(warned) == 1 and "LiteRT" in warned[0] and "running on the CPU" in warned[0]
    assert clf.providers == ["LiteRT"] and clf.predict(solid("blue")).label == "blue"


NO_LITERT = textwrap.dedent("""
    import sys
    from pathlib import Path
    sys.modules["ai_edge_litert"] = None  # as if not installed
    from edgeclf.bench import engines
    from edgeclf.errors import EdgeclfError
    from edgeclf.model.classifier import Classifier
    try:
        Classifier(sys.argv[1])
    except EdgeclfError as e:
        print("ERROR:", e)
    print("SKIPPED:", engines.ways(Path(sys.argv[1]).parent)[1])
    sys.argv = ["edgeclf", "predict", sys.argv[1], sys.argv[2]]
    from edgeclf.cli import main
    main()
""")


def test_missing_litert_says_how_to_install(tmp_path):
    (tmp_path / TFLITE).write_bytes(b"TFL3" + bytes(100))  # never read: the interpreter is missing first
    make_colour_model(tmp_path / ONNX)
    cv2.imwrite(str(tmp_path / "red.png"), solid("red"))
    res = subprocess.run([sys.executable, "-c", NO_LITERT, str(tmp_path / TFLITE), str(tmp_path / "red.png")],
                         check=False, capture_output=True, text=True, timeout=120)
    out = dict(line.split(": ", 1) for line in res.stdout.splitlines())
    assert "ai-edge-litert" in out["ERROR"] and "pip install 'edgeclf[litert]'" in out["ERROR"]
    assert "LiteRT: ai-edge-litert is not installed (pip install 'edgeclf[litert]')" in out["SKIPPED"]
    assert "pip install 'edgeclf[litert]'" in error_line(res)


# ------------------------------------------------------------------------------------------ predict --engine
@tf_mark
@pytest.mark.parametrize("engine, file", [("litert", TFLITE), ("onnxruntime", ONNX), ("auto", ONNX)])
def test_predict_engine_chooses_the_file(made, engine, file):
    res = run_cli("predict", made["export"], made["photos"], "--engine", engine)
    assert _labels(res) == {c: c for c in COLOURS}
    assert f"running {made['export'] / file}" in res.stderr
    assert res.stderr.strip().splitlines()[-1].endswith(" on litert") == (file == TFLITE)


@tf_mark
@pytest.mark.parametrize("args, message", [(("export/" + ONNX, "--engine", "litert"), "is not a .tflite model"),
                                           (("export/" + TFLITE, "--engine", "onnxruntime"), "is a LiteRT model"),
                                           (("export", "--engine", "foo"), "--engine foo: expected auto, onnxruntime, litert")])
def test_predict_engine_refusals_are_one_line(made, args, message):
    model = made["export"].parent / args[0]
    assert message in error_line(run_cli("predict", model, made["photos"], *args[1:]))


@tf_mark
def test_auto_follows_the_record_of_this_machine_only(folder, made):
    engine_choice.write_record(folder, RECORD)
    res = run_cli("predict", folder, made["photos"], "--no-unknown")
    assert _labels(res) == {c: c for c in COLOURS}
    assert f"running {folder / TFLITE}: chosen here by `edgeclf bench --engines`: LiteRT, 1 thread" in res.stderr
    res = run_cli("predict", folder, made["photos"])  # the unknown answer wanted: LiteRT has no unknown score
    assert _labels(res) == {c: c for c in COLOURS}
    assert f"running {folder / ONNX}: engine.json found LiteRT faster here, but this LiteRT model has no unknown score" in res.stderr
    rec = json.loads((folder / "engine.json").read_text())
    with_unknown = {"engine": "onnxruntime", "file": ONNX, "threads": 1, "label": "onnxruntime, 1 thread", "p50_ms": 1.5}
    (folder / "engine.json").write_text(json.dumps({**rec, "choice_with_unknown": with_unknown}))
    res = run_cli("predict", folder, made["photos"])  # the record's fastest engine that keeps the unknown score
    assert _labels(res) == {c: c for c in COLOURS}
    assert (f"running {folder / ONNX}: engine.json found LiteRT faster here, but this LiteRT model has no unknown score "
            "(export it again to give it one; --no-unknown, or --engine litert, runs it); keeping the unknown score, the record's choice among the other engines: "
            "onnxruntime, 1 thread, p50 1.50 ms") in res.stderr
    bad = {**rec, "choice_with_unknown": {**with_unknown, "engine": "litert", "file": TFLITE}}
    (folder / "engine.json").write_text(json.dumps(bad))
    assert "choice_with_unknown is LiteRT" in error_line(run_cli("predict", folder, made["photos"]))
    (folder / "engine.json").write_text(json.dumps({**rec, "choice_with_unknown": {**with_unknown, "threads": 0}}))
    assert "unreadable engine record (choice_with_unknown: threads '0'" in error_line(run_cli("predict", folder, made["photos"]))
    rec["machine"]["cpu"] = "Some Other CPU 9000"
    (folder / "engine.json").write_text(json.dumps(rec))
    res = run_cli("predict", folder, made["photos"], "--no-unknown")
    assert _labels(res) == {c: c for c in COLOURS}
    assert f"running {folder / ONNX}" in res.stderr and "another machine (Some Other CPU 9000" in res.stderr
    (folder / TFLITE).unlink()  # this machine's record, its file gone: onnxruntime, saying so
    engine_choice.write_record(folder, RECORD)
    res = run_cli("predict", folder, made["photos"], "--no-unknown")
    assert f"running {folder / ONNX}" in res.stderr and f"chose {TFLITE}, which is not in" in res.stderr


@tf_mark
@pytest.mark.parametrize("change", ["not json {", {"engine": "evil"}, {"file": "../../etc/passwd"}, {"threads": 0}])
def test_damaged_engine_record_is_one_line(folder, made, change):
    path = engine_choice.write_record(folder, RECORD)
    rec = json.loads(path.read_text())
    path.write_text(change if isinstance(change, str) else json.dumps({**rec, "choice": {**rec["choice"], **change}}))
    with pytest.raises(EdgeclfError, match="unreadable engine record"):
        engine_choice.read_record(folder)
    line = error_line(run_cli("predict", folder, made["photos"]))
    assert f"{folder / 'engine.json'}: unreadable engine record" in line
    assert _labels(run_cli("predict", folder, made["photos"], "--engine", "onnxruntime")) == {c: c for c in COLOURS}


# ------------------------------------------------------------------------------------------ bench
def _bench_engines(folder: Path, *more: object) -> tuple[dict, subprocess.CompletedProcess]:
    res = run_cli("bench", folder, "--engines", "--runs", 10, "--warmup", 1, "--json", *more)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout), res


@tf_mark
def test_bench_engines_times_both_and_records_the_choice(folder):
    report, _ = _bench_engines(folder)
    ways, counts = {(r["engine"], r["threads"]) for r in report["results"]}, {1, thr.default_threads()}
    ov = {("openvino", t) for t in counts} if openvino_engine.available() else set()  # on the ONNX file too
    assert ways == {("onnxruntime", None)} | {("onnxruntime", t) for t in counts} | {("litert", t) for t in counts} | ov
    for r in report["results"]:
        assert r["latency_ms"]["p50"] > 0 and r["first_inference_ms"] > 0
        assert r["file"] == (TFLITE if r["engine"] == "litert" else ONNX)
    assert report["skipped"] == [] and report["runs"] == 10
    [chosen] = [r for r in report["results"] if r["label"] == report["choice"]["label"]]  # one of them
    assert (chosen["file"], chosen["latency_ms"]["p50"]) == (report["choice"]["file"], report["choice"]["p50_ms"])
    assert report["record"] == str(folder / "engine.json")
    rec = engine_choice.read_record(folder)
    assert rec["choice"] == report["choice"] and rec["machine"] == engine_choice.this_machine()
    assert engine_choice.applicable_choice(folder)[0] == report["choice"]
    alt = report["choice_with_unknown"]  # for callers that need the unknown score: never LiteRT
    if report["choice"]["engine"] == "litert":
        assert alt["engine"] != "litert" and alt["label"] in {r["label"] for r in report["results"]}
        assert engine_choice.applicable_choice(folder, no_litert=True)[0] == alt
    else:
        assert alt is None and engine_choice.applicable_choice(folder, no_litert=True)[0] == report["choice"]
    assert rec["choice_with_unknown"] == alt


@tf_mark
@pytest.mark.parametrize("option", [("--batch", "4"), ("--threads", "2"), ("--provider", "cuda")])
def test_bench_engines_refuses_other_options(folder, option):
    assert f"drop {option[0]}" in error_line(run_cli("bench", folder, "--engines", *option))
    assert not (folder / "engine.json").exists()


@tf_mark
def test_bench_engines_without_a_tflite_skips_litert(folder):
    (folder / TFLITE).unlink()
    report, _ = _bench_engines(folder)
    assert {r["engine"] for r in report["results"]} == {"onnxruntime"} | ({"openvino"} if openvino_engine.available() else set())
    litert_skip = [s for s in report["skipped"] if s.startswith("LiteRT")]
    assert len(litert_skip) == 1 and litert_skip[0].startswith(f"LiteRT: no {TFLITE}")
    assert len(report["skipped"]) == 1 + (not openvino_engine.available())  # and OpenVINO's install hint without it
    assert report["choice"]["engine"] in ("onnxruntime", "openvino")


@tf_mark
@pytest.mark.parametrize("how", ["read-only folder", "engine.json is a folder"])
def test_bench_engines_in_a_folder_it_cannot_write(folder, how):
    if how == "read-only folder":
        folder.chmod(0o555)
        if os.access(folder, os.W_OK):  # root (CAP_DAC_OVERRIDE) writes there all the same
            folder.chmod(0o755)
            pytest.skip("this user ignores file permissions (root)")
    else:
        (folder / "engine.json" / "x").mkdir(parents=True)  # a non-empty folder: no file can replace it
    try:
        report, res = _bench_engines(folder)
    finally:
        folder.chmod(0o755)
    assert len(report["results"]) >= 4 and report["choice"]["label"]
    assert report["record"] is None and "cannot write" in report["record_error"]
    assert "edgeclf: warning:" in res.stderr and "engine.json: cannot write" in res.stderr
    assert not (folder / "engine.json").is_file() and not list(folder.glob(".engine.*"))


@tf_mark
def test_plain_bench_of_a_tflite(made):
    res = run_cli("bench", made["tflite"], "--runs", 5, "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["provider"] == "LiteRT" and report["engine"].startswith("ai-edge-litert")
    assert report["macs_per_frame"] is None and report["precision"] == "int8"
    assert report["results"][0]["latency_ms"]["p50"] > 0 and report["results"][0]["threads"] == thr.default_threads()
    assert "onnxruntime" not in res.stderr.lower() and "Traceback" not in res.stderr, res.stderr


# ------------------------------------------------------------------------------------------ eval
@tf_mark
def test_eval_a_tflite(made):
    res = run_cli("eval", made["tflite"], made["data"], "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert (report["accuracy"], report["format"], report["n_images"]) == (1.0, "tflite", 6)
    assert report["confusion"] == [[2, 0, 0], [0, 2, 0], [0, 0, 2]]
    assert "no unknown score" in error_line(run_cli("eval", made["tflite"], made["data"], "--unknown", made["photos"]))


# ------------------------------------------------------------------------------------------ choose()
def _result(engine: str, threads: int | None, p50: float) -> dict:
    return {"engine": engine, "file": TFLITE if engine == "litert" else ONNX, "threads": threads, "label": f"{engine}, {threads}",
            "latency_ms": {"p50": p50, "p99": 2 * p50}}


@pytest.mark.parametrize("litert_p50, chosen", [(0.90, "litert, 2"), (0.949, "litert, 2"), (0.96, "onnxruntime, 1"),
                                                (1.2, "onnxruntime, 1")])
def test_choose_keeps_onnxruntime_unless_another_engine_is_margin_faster(litert_p50, chosen):
    results = [_result("onnxruntime", None, 1.1), _result("onnxruntime", 1, 1.0), _result("litert", 1, 1.3),
               _result("litert", 2, litert_p50)]
    choice = engines.choose(results)
    assert choice["label"] == chosen
    assert choice["p50_ms"] == next(r for r in results if r["label"] == chosen)["latency_ms"]["p50"]
    runner_up = "onnxruntime, 1" if choice["engine"] == "litert" else "litert, 2"
    assert choice["runner_up"]["label"] == runner_up and engines.MARGIN == 0.05
    only = engines.choose([_result("litert", 1, 0.5), _result("litert", 2, 0.4)])  # no onnxruntime model
    assert only["label"] == "litert, 2" and only["runner_up"] is None


def test_choose_takes_the_shorter_tail_among_ways_tied_at_p50():
    """Ways within MARGIN of the fastest p50 are a tie here: the one with the shortest p99 runs
    (measured: OpenVINO 2.16 ms p50 / 3.65 p99 against LiteRT 2.21 / 2.53, one thread); a way
    beyond the margin never wins on its tail, and onnxruntime within it still stays."""
    from edgeclf.model.engine_choice import describe

    ov, lt = _result("openvino", 1, 2.16), _result("litert", 1, 2.21)
    ov["latency_ms"]["p99"], lt["latency_ms"]["p99"] = 3.65, 2.53
    ort = _result("onnxruntime", 1, 2.35)  # 8% slower than OpenVINO: out of the tie
    choice = engines.choose([ort, ov, lt])
    assert choice["label"] == "litert, 1" and choice["p99_ms"] == 2.53
    assert describe(choice) == ("chosen here by `edgeclf bench --engines`: LiteRT, 1 thread, p50 2.21 ms, p99 2.53 ms "
                                "(openvino, 1 2.16 / 3.65 ms)")
    lt["latency_ms"]["p50"] = 2.30  # 6% slower than OpenVINO at p50: its tail no longer counts
    assert engines.choose([ort, ov, lt])["label"] == "openvino, 1"
    ort["latency_ms"]["p50"] = 2.25  # within 5% of the fastest: the base install stays, whatever its tail
    assert engines.choose([ort, ov, lt])["label"] == "onnxruntime, 1"
    # only ways that beat onnxruntime's own choice by the margin compete on their tails
    adaptive, fixed = _result("onnxruntime", None, 1.00), _result("onnxruntime", 1, 0.97)
    adaptive["latency_ms"]["p99"], fixed["latency_ms"]["p99"] = 9.0, 1.0
    lite = _result("litert", 2, 0.94)
    assert engines.choose([adaptive, fixed, lite])["label"] == "litert, 2"  # not the fixed count: 3% is no margin
    near = _result("openvino", 2, 0.985)  # 1.5% faster than onnxruntime, the shortest tail of the two
    near["latency_ms"]["p99"] = 1.2
    adaptive["latency_ms"]["p99"] = 1.05
    assert engines.choose([adaptive, lite, near])["label"] == "litert, 2"
    older = {**choice, "runner_up": {"label": "openvino, 1", "p50_ms": 2.16}}  # a record without p99s
    assert describe(older).endswith("LiteRT, 1 thread, p50 2.21 ms (openvino, 1 2.16 ms)")


def test_choose_with_unknown_is_the_rule_without_litert():
    results = [_result("onnxruntime", None, 1.1), _result("onnxruntime", 1, 1.0), _result("openvino", 2, 0.96),
               _result("litert", 2, 0.8)]
    choice = engines.choose(results)
    assert choice["engine"] == "litert"
    alt = engines.choose_with_unknown(results, choice)  # OpenVINO 4% faster: not enough, onnxruntime
    assert alt["label"] == "onnxruntime, 1" and alt["runner_up"]["label"] == "openvino, 2"
    results[2] = _result("openvino", 2, 0.94)
    assert engines.choose_with_unknown(results, engines.choose(results))["label"] == "openvino, 2"
    assert engines.choose_with_unknown(results[:3], engines.choose(results[:3])) is None  # LiteRT did not win
    lonely = [_result("litert", 1, 0.5)]
    assert engines.choose_with_unknown(lonely, engines.choose(lonely)) is None  # nothing else was timed


@pytest.mark.parametrize("alt", [None, "openvino"])
def test_bench_engines_says_what_runs_with_the_unknown_answer(alt):
    from rich.console import Console

    results = [_result("onnxruntime", 1, 1.0), _result("openvino", 2, 0.9), _result("litert", 2, 0.8)]
    for r in results:
        r.update(first_inference_ms=10.0, export_accuracy=1.0)
    choice = engines.choose(results)
    console = Console(record=True, width=400)
    engines.render({"folder": "f", "results": results, "choice": choice, "skipped": [], "record": "f/engine.json",
                    "choice_with_unknown": engines.choose_with_unknown(results, choice) if alt else None}, console)
    text = console.export_text()
    runs = "openvino, 2" if alt else "onnxruntime"
    assert f"with the unknown answer on (predict's default) it runs {runs}, as this LiteRT model has no unknown score" in text
    assert "OpenVINO runs the same int8 ONNX file with integer kernels of its own, which the export did not check" in text
    results[1]["export_accuracy"] = None  # no figure beside OpenVINO: nothing to qualify
    console = Console(record=True, width=400)
    engines.render({"folder": "f", "results": results, "choice": choice, "skipped": []}, console)
    assert "integer kernels of its own" not in console.export_text()


# ------------------------------------------------------------------------------ the unknown score
GREY = np.full((32, 32, 3), 128, np.uint8)  # equally far from red, green and blue: none of them


@tf_mark
def test_a_scored_litert_model_answers_unknown(scored, tmp_path):
    """Its score is the cosine distance of its embedding to the nearest bank row, computed beside
    the interpreter: pure colours are near their own row, grey is far from all three."""
    path = tmp_path / TFLITE
    path.write_bytes(scored)
    assert litert.has_unknown_score(path)
    session = litert.LiteRTSession(path, threads=1)
    assert [o.name for o in session.get_outputs()] == [md.OUTPUT_NAME, md.EMBEDDING_NAME, md.UNKNOWN_NAME]
    assert session.get_outputs()[2].shape == [None]
    x = np.stack([cv2.cvtColor(solid(c, 32, 32), cv2.COLOR_BGR2RGB) for c in COLOURS] + [GREY])
    probs, emb, scores = session.run(None, {md.INPUT_NAME: x})
    assert probs.shape == (4, 3) and emb.shape == (4, 4) and scores.shape == (4,)
    assert scores[:3].max() < 0.05 and scores[3] > 0.3  # grey: cos ~0.58 to each colour
    assert np.allclose(session.run([md.UNKNOWN_NAME, md.OUTPUT_NAME], {md.INPUT_NAME: x})[0], scores)  # any order asked
    clf = Classifier(path)
    assert clf.unknown_output == md.UNKNOWN_NAME and clf.unknown_rule.threshold == pytest.approx(0.2)
    labels = [p.label for p in clf.predictions(*clf.classify_arrays(x))]
    assert labels == [*COLOURS, "unknown"]
    plain = Classifier(path, unknown=False)  # the answer turned off: grey gets a colour
    assert [p.label for p in plain.predictions(*plain.classify_arrays(x))][:3] == list(COLOURS)
    assert plain.predictions(*plain.classify_arrays(x))[3].label in COLOURS


@tf_mark
def test_auto_runs_a_scored_litert_model_with_the_unknown_answer_on(folder, made, scored):
    """engine.json chose LiteRT and the LiteRT model has the unknown score: predict runs it with
    the unknown answer on (its default), and grey is 'unknown'."""
    (folder / TFLITE).write_bytes(scored)
    cv2.imwrite(str(folder.parent / "grey.png"), GREY)
    engine_choice.write_record(folder, RECORD)
    res = run_cli("predict", folder, folder.parent / "grey.png")
    assert res.returncode == 0, res.stderr
    assert f"running {folder / TFLITE}: chosen here by `edgeclf bench --engines`: LiteRT, 1 thread" in res.stderr
    assert res.stdout.split()[1] == "unknown" and "no unknown score" not in res.stderr
    res = run_cli("predict", folder, made["photos"], "--engine", "litert")
    assert _labels(res) == {c: c for c in COLOURS} and "no unknown score" not in res.stderr


@tf_mark
def test_eval_unknown_on_a_scored_litert_model(made, scored, tmp_path):
    path, unknown = tmp_path / TFLITE, tmp_path / "none"
    path.write_bytes(scored)
    unknown.mkdir()
    for v in (100, 128, 160):
        cv2.imwrite(str(unknown / f"grey{v}.png"), np.full((32, 32, 3), v, np.uint8))
    res = run_cli("eval", path, made["data"], "--unknown", unknown, "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["accuracy"] == 1.0 and report["format"] == "tflite"
    assert report["unknown"]["unknown_rejected"]["share"] == 1.0 and report["unknown"]["unknown_rejected"]["n"] == 3  # every grey photo: unknown


@tf_mark
def test_bench_engines_needs_no_stand_in_for_a_scored_litert_model(folder, scored):
    (folder / TFLITE).write_bytes(scored)
    report, _ = _bench_engines(folder)
    assert report["litert_unknown_score"] is True and report["choice_with_unknown"] is None
    assert engines.choose_with_unknown(report["results"], {**report["choice"], "engine": "litert"}, True) is None


def test_a_record_from_before_arm_cores_had_names_is_said_to_be(tmp_path):
    """An engine.json whose CPU an older edgeclf named by the architecture alone ("aarch64 (...)"),
    with this machine's cores and architecture: not followed (which board it was cannot be told), and
    the reason says so rather than "another machine"."""
    folder = tmp_path / "export"
    folder.mkdir()
    make_colour_model(folder / ONNX)
    path = engine_choice.write_record(folder, {"choice": {**RECORD["choice"], "engine": "onnxruntime", "file": ONNX}})
    rec = json.loads(path.read_text())
    here = engine_choice.this_machine()
    rec["machine"]["cpu"] = f"{here['arch']} (Raspberry Pi 4 Model B Rev 1.4)"
    path.write_text(json.dumps(rec))
    choice, why = engine_choice.applicable_choice(folder)
    assert choice is None and "was measured by an older edgeclf, which named ARM CPUs by their architecture alone" in why
    rec["machine"]["cores"] = here["cores"] + 1  # another core count: another machine
    path.write_text(json.dumps(rec))
    assert "was measured on another machine" in engine_choice.applicable_choice(folder)[1]
