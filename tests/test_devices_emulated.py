"""The device side on the CPUs it ships to, emulated with qemu user mode — nothing is faked.

Cortex-A72 (Raspberry Pi 4: NEON only) and Cortex-A76 (Pi 5: dot product) run the arm64 Python,
wheels and edgeclf wheel that ``.ci/aarch64 setup`` installs; qemu's Haswell (x86 with AVX2 but no
VNNI, where onnxruntime's u8 x s8 int8 kernels add pairs in saturating int16) runs this venv.

An edgenet model is trained briefly and exported (fp32, int8 ONNX and LiteRT int8) on this x86 host. On each CPU,
``edgeclf predict --json``, ``eval --json`` and ``bench --json`` then run on both models and must
agree with this host: 100% top-1 agreement, probabilities within ``PROB_TOL``, and the int8
model's accuracy on the validation images equal to what the export's int8 guard measured.

Skipped when qemu or the arm64 userland is missing; CI (``.ci/run``) sets up both and sets
EDGECLF_REQUIRE_EMULATION=1, so there a missing piece fails instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, TRAIN_EXTRA

pytestmark = [pytest.mark.tf, pytest.mark.slow]
pytest.importorskip("tensorflow", reason=TRAIN_EXTRA)
pytest.importorskip("tf2onnx", reason=TRAIN_EXTRA)

AARCH64 = ROOT / ".ci" / "aarch64"
ARM_CPUS = ("cortex-a72", "cortex-a76")
#: Largest probability difference accepted between a CPU and this host (measured: 0 at the six
#: decimals --json prints, for fp32 and int8 alike; float kernels may still sum in another order,
#: and an int8 rounding step of one LSB moves a probability by up to ~0.02).
PROB_TOL = {"fp32": 1e-4, "int8": 0.02}
REQUIRED = os.environ.get("EDGECLF_REQUIRE_EMULATION") == "1"
N_FP32 = 6  # fp32 costs ~0.45 s a frame emulated: a few images; int8 gets the whole validation split


def _missing(what: str) -> None:
    if REQUIRED:
        pytest.fail(f"{what} (EDGECLF_REQUIRE_EMULATION=1)")
    pytest.skip(what)


def _run(cmd: list[str], env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    assert res.returncode == 0, f"{' '.join(map(str, cmd))}\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}"
    return res


def arm(cpu: str, *args: object) -> subprocess.CompletedProcess:
    return _run([str(AARCH64), "run", cpu, *map(str, args)])


def haswell(*args: object) -> subprocess.CompletedProcess:
    env = {**os.environ, "QEMU_CPU": "Haswell-v4"}
    return _run(["qemu-x86_64-static", sys.executable, "-m", "edgeclf.cli", *map(str, args)], env=env)


def host(*args: object) -> subprocess.CompletedProcess:
    return _run([sys.executable, "-m", "edgeclf.cli", *map(str, args)], env={**os.environ})


RUNNERS = {"host": host, "cortex-a72": lambda *a: arm("cortex-a72", *a),
           "cortex-a76": lambda *a: arm("cortex-a76", *a), "haswell": haswell}


@pytest.fixture(scope="module")
def emulators() -> None:
    if not shutil.which("qemu-aarch64-static") or not shutil.which("qemu-x86_64-static"):
        _missing("needs qemu-user-static (apt-get install qemu-user-static)")
    probe = subprocess.run([str(AARCH64), "python", "cortex-a72", "-c", "import edgeclf, onnxruntime, cv2"],
                           capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        _missing(f"no arm64 userland (.ci/aarch64 setup): {probe.stderr.strip()[-300:]}")


@pytest.fixture(scope="module")
def exported(emulators, shapes_dir, tmp_path_factory) -> dict:
    """edgenet 64x64 fitted on the generated shapes, exported here (x86) with --int8; its
    validation images in class folders, and a few of them for the slow fp32 runs."""
    from test_export import make_run

    from edgeclf.export.api import export_model

    tmp = tmp_path_factory.mktemp("devices")
    run = make_run("edgenet", 64, shapes_dir, tmp / "run", epochs=30, steps=None)
    report = export_model(run, tmp / "export", int8=True, tflite=True, show_progress=False)
    val = [Path(p) for p in json.loads((run / "run.json").read_text())["splits"]["val"]]
    for folder, paths in (("val", val), ("few", _per_class(val, N_FP32 // 3))):
        for p in paths:
            (tmp / folder / p.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(p, tmp / folder / p.parent.name / p.name)
    return {"fp32": tmp / "export" / "model.onnx", "int8": tmp / "export" / "model.int8.onnx",
            "tflite": tmp / "export" / "model.int8.tflite",
            "report": report, "val": tmp / "val", "few": tmp / "few"}


def _per_class(paths: list[Path], k: int) -> list[Path]:
    seen: dict[str, int] = {}
    out = []
    for p in paths:
        if seen.get(p.parent.name, 0) < k:
            seen[p.parent.name] = seen.get(p.parent.name, 0) + 1
            out.append(p)
    return out


def _predictions(res: subprocess.CompletedProcess) -> dict[str, dict]:
    rows = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    return {Path(r["source"]).name: r for r in rows}


@pytest.fixture(scope="module")
def reference(exported) -> dict:
    """This host's (x86 with VNNI here) predictions and evaluations."""
    return {
        "fp32": _predictions(host("predict", exported["fp32"], exported["few"], "--json")),
        "int8": _predictions(host("predict", exported["int8"], exported["val"], "--json")),
        "eval_fp32": json.loads(host("eval", exported["fp32"], exported["few"], "--json").stdout),
        "eval_int8": json.loads(host("eval", exported["int8"], exported["val"], "--json").stdout),
        "tflite": _predictions(host("predict", exported["tflite"], exported["val"], "--json")),
    }


def test_export_says_what_int8_was_made_for(exported):
    import onnx

    from edgeclf.model import metadata as md
    from edgeclf.sysinfo import CPU_FAMILIES

    made_for = exported["report"]["int8"]["made_for"]
    assert made_for["cpus"] == list(CPU_FAMILIES) and made_for["reduce_range"] is True
    props = {p.key: p.value for p in onnx.load(str(exported["int8"])).metadata_props}
    assert json.loads(props[md.INT8_CPUS]) == list(CPU_FAMILIES)


@pytest.mark.parametrize("cpu", [*ARM_CPUS, "haswell"])
def test_same_answers_on_every_cpu(cpu, exported, reference, capsys):
    """predict, eval and bench of the fp32 and int8 models on the emulated CPU against this host."""
    started = time.monotonic()
    run = RUNNERS[cpu]
    figures = {}
    # On Haswell only the int8 model is in question (fp32 kernels do not saturate): no fp32, no bench.
    for precision, images in (("fp32", "few"), ("int8", "val")) if cpu in ARM_CPUS else (("int8", "val"),):
        ref = reference[precision]
        got = _predictions(run("predict", exported[precision], exported[images], "--json"))
        assert set(got) == set(ref)
        agree = sum(got[k]["index"] == ref[k]["index"] for k in ref) / len(ref)
        diff = max(abs(got[k]["probs"][c] - ref[k]["probs"][c]) for k in ref for c in ref[k]["probs"])
        figures[precision] = {"n": len(ref), "top1_agreement": agree, "max_abs_diff": diff}
        assert agree == 1.0, f"{cpu} {precision}: top-1 agreement {agree:.2%} with x86 on {len(ref)} images"
        assert diff <= PROB_TOL[precision], f"{cpu} {precision}: probabilities differ by {diff:.3g} > {PROB_TOL[precision]}"

        ev = json.loads(run("eval", exported[precision], exported[images], "--json").stdout)
        assert ev["accuracy"] == reference[f"eval_{precision}"]["accuracy"]
        assert ev["confusion"] == reference[f"eval_{precision}"]["confusion"]
        if precision == "int8":  # the int8 guard's promise: the accuracy it measured holds here
            assert ev["accuracy"] == pytest.approx(exported["report"]["int8"]["accuracy_int8"])

        if cpu not in ARM_CPUS:
            continue
        bench = json.loads(run("bench", exported[precision], "--runs", 3, "--warmup", 1, "--threads", 1, "--json").stdout)
        assert bench["provider"] == "CPUExecutionProvider" and bench["precision"] == precision
        assert bench["latency_ms"]["p50"] > 0
        assert bench["machine"]["arch"] == "aarch64"
        figures[precision]["bench_p50_ms"] = round(bench["latency_ms"]["p50"], 2)
    with capsys.disabled():  # the lane's figures, in the CI log
        print(f"\n{cpu}: {json.dumps(figures)} in {time.monotonic() - started:.0f} s")


@pytest.mark.parametrize("cpu", [*ARM_CPUS, "haswell"])
def test_litert_same_answers_on_every_cpu(cpu, exported, reference, capsys):
    """The LiteRT int8 model (export --format tflite), through ai-edge-litert's own aarch64 wheel on
    the ARM CPUs: the answers of this host on every validation image, and the accuracy its export's
    guard measured."""
    run = RUNNERS[cpu]
    ref = reference["tflite"]
    got = _predictions(run("predict", exported["tflite"], exported["val"], "--json"))
    assert set(got) == set(ref)
    agree = sum(got[k]["index"] == ref[k]["index"] for k in ref) / len(ref)
    diff = max(abs(got[k]["probs"][c] - ref[k]["probs"][c]) for k in ref for c in ref[k]["probs"])
    assert agree == 1.0, f"{cpu} LiteRT int8: top-1 agreement {agree:.2%} with x86 on {len(ref)} images"
    assert diff <= PROB_TOL["int8"], f"{cpu} LiteRT int8: probabilities differ by {diff:.3g} > {PROB_TOL['int8']}"
    ev = json.loads(run("eval", exported["tflite"], exported["val"], "--json").stdout)
    assert ev["format"] == "tflite"
    assert ev["accuracy"] == pytest.approx(exported["report"]["tflite_int8"]["accuracy_int8"])
    with capsys.disabled():
        print(f"\n{cpu} LiteRT int8: {json.dumps({'n': len(ref), 'top1_agreement': agree, 'max_abs_diff': diff})}")


#: Runs each model on the images and saves onnxruntime's outputs: argv = images.npy out.npz model...
_RUN_MODELS = """
import sys, numpy as np, onnxruntime as ort
x = np.load(sys.argv[1])
out = {str(i): ort.InferenceSession(p, providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
       for i, p in enumerate(sys.argv[3:])}
np.savez(sys.argv[2], **out)
"""


@pytest.fixture(scope="module")
def depthwise_models(emulators, tmp_path_factory) -> dict:
    """A small inverted-residual model quantized by the export's own rule (7-bit weights, 8-bit in
    the depthwise convolutions) and, as the control, with 8-bit weights everywhere; random images
    and bright ones (what makes int16 pairs overflow), and this host's outputs."""
    from test_export_units import depthwise_model, quantized_weights

    from edgeclf.export import quantize
    tmp = tmp_path_factory.mktemp("depthwise")
    quantize.prepare(depthwise_model(tmp / "m.onnx"), tmp / "prepared.onnx")
    rng = np.random.default_rng(3)
    quantize.quantize(tmp / "prepared.onnx", tmp / "edgeclf.onnx", rng.integers(0, 256, (32, 16, 16, 3), np.uint8), "minmax",
                      reduce_range=True)
    quantize.quantize(tmp / "prepared.onnx", tmp / "full.onnx", rng.integers(0, 256, (32, 16, 16, 3), np.uint8), "minmax",
                      reduce_range=False)
    weights = quantized_weights(tmp / "edgeclf.onnx")  # what is compared below: 8 bits in the depthwise ones only
    assert all((np.abs(w.astype(int)).max() == 127) == ("depthwise" in k) for k, w in weights.items()), list(weights)
    images = np.concatenate([rng.integers(0, 256, (24, 16, 16, 3)), rng.integers(200, 256, (24, 16, 16, 3))]).astype(np.uint8)
    np.save(tmp / "images.npy", images)
    (tmp / "run.py").write_text(_RUN_MODELS)
    models = {"edgeclf": tmp / "edgeclf.onnx", "full": tmp / "full.onnx"}
    _run([sys.executable, str(tmp / "run.py"), str(tmp / "images.npy"), str(tmp / "host.npz"), *map(str, models.values())])
    return {"dir": tmp, "models": models, "host": np.load(tmp / "host.npz")}


@pytest.mark.parametrize("cpu", [*ARM_CPUS, "haswell"])
def test_depthwise_8_bit_weights_same_on_every_cpu(cpu, depthwise_models, capsys):
    """The export's int8 weights (8-bit only in depthwise convolutions) give this host's outputs to
    the last bit on every CPU; 8-bit weights everywhere do on ARM, and not on x86 without VNNI,
    which shows that this lane sees the saturation the 7-bit weights avoid."""
    from edgeclf.sysinfo import cpu_family

    tmp = depthwise_models["dir"]
    args = [str(tmp / "run.py"), str(tmp / "images.npy"), str(tmp / f"{cpu}.npz"), *map(str, depthwise_models["models"].values())]
    if cpu == "haswell":
        _run(["qemu-x86_64-static", sys.executable, *args], env={**os.environ, "QEMU_CPU": "Haswell-v4"})
    else:
        _run([str(AARCH64), "python", cpu, *args])
    got, ref = np.load(tmp / f"{cpu}.npz"), depthwise_models["host"]
    diff = {name: float(np.abs(got[str(i)] - ref[str(i)]).max()) for i, name in enumerate(depthwise_models["models"])}
    with capsys.disabled():
        print(f"\n{cpu} depthwise model, largest output difference from this host: {json.dumps(diff)}")
    assert diff["edgeclf"] == 0.0
    if cpu_family() not in ("x86-vnni", "arm64-dotprod", "arm64-neon"):
        return  # this host saturates too: the control compares like with like
    if cpu == "haswell":
        assert diff["full"] > 1e-3
    else:
        assert diff["full"] == 0.0
