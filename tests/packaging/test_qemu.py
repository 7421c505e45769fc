"""The built core on emulated older CPUs (Debian's qemu-user): ``qemu-x86_64 -cpu Nehalem`` is an
x86-64-v2 CPU without AVX, ``-cpu Haswell`` has AVX2 and FMA but no AVX-512. The smoke script
(isa_smoke.py, numpy only: see its docstring for why not torch) must pick the right level, compute
correctly and give the same element-wise bits as on this machine; a forced level the emulated CPU
lacks must be refused. Skipped without qemu-x86_64, except with UNO_REQUIRE_QEMU=1 (CI's wheel step, .ci/run)."""

from __future__ import annotations

import os
import shutil

import pytest
from _lib import run_smoke, x86_dispatch_build
from test_isa_levels import ELEMENTWISE

QEMU = shutil.which("qemu-x86_64")
if QEMU is None and os.environ.get("UNO_REQUIRE_QEMU") == "1":  # CI's wheel step: never skip
    raise RuntimeError("UNO_REQUIRE_QEMU=1 but qemu-x86_64 is not installed")
pytestmark = pytest.mark.skipif(
    QEMU is None, reason="qemu-x86_64 not installed (apt-get install qemu-user)"
)


@pytest.mark.parametrize(("cpu", "level"), [("Nehalem", "x86-64-v2"), ("Haswell", "x86-64-v3")])
def test_emulated_cpu_runs_its_level(cpu, level):
    x86_dispatch_build()
    emulated = run_smoke(None, prefix=[QEMU, "-cpu", cpu])
    assert emulated["level"] == level and emulated["ok"]
    native = run_smoke(level)
    assert {k: emulated[k] for k in ELEMENTWISE} == {k: native[k] for k in ELEMENTWISE}


@pytest.mark.parametrize(("cpu", "forced"), [("Nehalem", "x86-64-v3"), ("Haswell", "x86-64-v4")])
def test_emulated_cpu_refuses_a_higher_level(cpu, forced):
    x86_dispatch_build()
    report = run_smoke(forced, prefix=[QEMU, "-cpu", cpu])
    assert report["level"] == ""
    assert f"this CPU does not support {forced}" in report["error"]
    assert "uno CPU kernels: UNO_CPU_ISA=" in report["kernel_error"]
