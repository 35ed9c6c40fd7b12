"""Which CPU family this is, and the load-time warning where an int8 model was not checked for it.

The families are told apart by /proc/cpuinfo's flags (real files' lines below); the warning is
checked through a real Classifier on a real ONNX model whose metadata says int8."""

from __future__ import annotations

import json

import pytest
from onnx_fixtures import COLOURS, edgeclf_metadata, make_colour_model

from edgeclf.model import metadata as md
from edgeclf.model.classifier import Classifier, int8_cpu_warning
from edgeclf.sysinfo import CPU_FAMILIES, cpu_family

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
