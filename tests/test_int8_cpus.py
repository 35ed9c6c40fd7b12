"""Which CPU family this is, and the load-time warning where an int8 model was not checked for it.

The families are told apart by /proc/cpuinfo's flags (real files' lines below); the warning is
checked through a real Classifier on a real ONNX model whose metadata says int8."""

from __future__ import annotations

import json

import pytest
from onnx_fixtures import COLOURS, edgeclf_metadata, make_colour_model

from edgeclf.model import metadata as md
from edgeclf.model.classifier import Classifier, int8_cpu_warning
from edgeclf.sysinfo import CPU_FAMILIES, cpu_family, cpu_model

ZEN4 = "flags\t\t: fpu vme sse sse2 avx avx2 fma avx512f avx512bw avx512_vnni avx512_bf16"
HASWELL = "flags\t\t: fpu vme sse sse2 avx avx2 fma bmi2"
SKYLAKE_SP = "flags\t\t: fpu sse2 avx avx2 avx512f avx512bw avx512dq"  # AVX-512 but no VNNI
ALDER_LAKE = "flags\t\t: fpu sse2 avx avx2 avx_vnni"
OLD_X86 = "flags\t\t: fpu sse sse2 ssse3 sse4_1 sse4_2"
PI4 = "Features\t: fp asimd evtstrm crc32 cpuid\nCPU part\t: 0xd08"
PI5 = "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU part\t: 0xd0b"


@pytest.mark.parametrize("cpuinfo, machine, family", [
    (ZEN4, "x86_64", "x86-vnni"), (ALDER_LAKE, "x86_64", "x86-vnni"), (HASWELL, "x86_64", "x86-avx2"),
    (SKYLAKE_SP, "x86_64", "x86-avx2"), (OLD_X86, "x86_64", "x86-sse"),
    (PI4, "aarch64", "arm64-neon"), (PI5, "aarch64", "arm64-dotprod"), ("", "armv7l", "armv7l"),
])
def test_cpu_family(cpuinfo, machine, family):
    assert cpu_family(cpuinfo, machine) == family


def _cpus(block: str, n: int) -> str:
    """/proc/cpuinfo's per-core blocks, ``n`` times."""
    return "".join(f"processor\t: {i}\n{block}\n\n" for i in range(n))


PI4_FULL = (_cpus("BogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\n"
                  "CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3", 4)
            + "Hardware\t: BCM2835\nRevision\t: c03114\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n")
PI4_32BIT = (_cpus("model name\t: ARMv7 Processor rev 3 (v7l)\nCPU implementer\t: 0x41\nCPU part\t: 0xd08", 4)
             + "Model\t\t: Raspberry Pi 4 Model B Rev 1.4\n")
PI5_FULL = (_cpus("Features\t: fp asimd asimddp\nCPU implementer\t: 0x41\nCPU part\t: 0xd0b", 4)
            + "Model\t\t: Raspberry Pi 5 Model B Rev 1.0\n")
ORIN = _cpus("Features\t: fp asimd asimddp\nCPU implementer\t: 0x41\nCPU part\t: 0xd42", 6)  # no Model line
XAVIER = _cpus("CPU implementer\t: 0x4e\nCPU part\t: 0x004", 6)
RK3588 = _cpus("CPU implementer\t: 0x41\nCPU part\t: 0xd05", 4) + _cpus("CPU implementer\t: 0x41\nCPU part\t: 0xd0b", 4)
EPYC = _cpus("vendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\nmodel name\t: AMD EPYC 9B14", 2)


@pytest.mark.parametrize("cpuinfo, board, name", [
    (PI4_FULL, None, "Cortex-A72 (Raspberry Pi 4 Model B Rev 1.4)"),
    (PI4_32BIT, None, "Cortex-A72 (Raspberry Pi 4 Model B Rev 1.4)"),
    (PI5_FULL, None, "Cortex-A76 (Raspberry Pi 5 Model B Rev 1.0)"),
    (ORIN, "NVIDIA Jetson AGX Orin Developer Kit\0", "Cortex-A78AE (NVIDIA Jetson AGX Orin Developer Kit)"),
    (XAVIER, "Jetson-AGX\0", "NVIDIA Carmel (Jetson-AGX)"),
    (RK3588, "Radxa ROCK 5B\0", "Cortex-A55 + Cortex-A76 (Radxa ROCK 5B)"),  # big.LITTLE: both kinds
    (_cpus("CPU implementer\t: 0x61\nCPU part\t: 0x022", 1), "", "ARM part 0x61:0x022"),  # not in the table
    (EPYC, None, "AMD EPYC 9B14"),  # x86's numeric "model" is not a board
])
def test_cpu_model(cpuinfo, board, name):
    """Benchmark records are matched to a machine by this name: on ARM, whose /proc/cpuinfo has no
    "model name", it is the core and the board, not a bare "aarch64" shared by every ARM board."""
    assert cpu_model(cpuinfo, board) == name


def test_warning_rules():
    checked = {md.PRECISION: "int8", md.INT8_CPUS: json.dumps(list(CPU_FAMILIES))}
    for family in CPU_FAMILIES:
        assert int8_cpu_warning(checked, family) is None
    assert "not on this CPU (x86-sse)" in int8_cpu_warning(checked, "x86-sse")
    assert int8_cpu_warning({md.PRECISION: "fp32"}, "x86-sse") is None
    older = {md.PRECISION: "int8"}  # exported before the record: full-range weights are possible
    assert int8_cpu_warning(older, "x86-vnni") is None and int8_cpu_warning(older, "arm64-neon") is None
    assert "re-export" in int8_cpu_warning(older, "x86-avx2")


def test_classifier_warns_once_on_a_cpu_the_model_was_not_checked_for(tmp_path):
    props = {**edgeclf_metadata(COLOURS, (32, 32)), md.PRECISION: "int8", md.INT8_CPUS: json.dumps(["some-other-cpu"])}
    path = make_colour_model(tmp_path / "m.onnx", metadata=props)
    warnings: list[str] = []
    Classifier(path, provider="cpu", warn=warnings.append)
    assert warnings == [f"{path}: int8 model checked on some-other-cpu, not on this CPU ({cpu_family()}): "
                        "its accuracy may differ from the export's"]
    warnings.clear()
    Classifier(make_colour_model(tmp_path / "fp32.onnx"), provider="cpu", warn=warnings.append)
    assert warnings == []


def test_openvino_engine_warns_as_onnxruntime_does(tmp_path):
    """OpenVINO's int8 kernels (oneDNN) pair u8 x s8 products in int16 on x86 without VNNI, as
    onnxruntime's do: a model not checked for this CPU's family gets the same warning on it."""
    pytest.importorskip("openvino", reason="needs the openvino extra: pip install '.[openvino]'")
    props = {**edgeclf_metadata(COLOURS, (32, 32)), md.PRECISION: "int8", md.INT8_CPUS: json.dumps(["some-other-cpu"])}
    path = make_colour_model(tmp_path / "m.onnx", metadata=props)
    warnings: list[str] = []
    clf = Classifier(path, provider="cpu", engine="openvino", warn=warnings.append)
    assert clf.providers == ["OpenVINO"]
    assert warnings == [f"{path}: int8 model checked on some-other-cpu, not on this CPU ({cpu_family()}): "
                        "its accuracy may differ from the export's"]
