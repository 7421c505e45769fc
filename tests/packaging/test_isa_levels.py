"""Runtime ISA dispatch of the CPU kernels: every level this machine supports, forced in a fresh
process with UNO_CPU_ISA, computes what the reference computes; element-wise outputs are
bit-identical across levels; an unusable UNO_CPU_ISA is reported and refused."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from _lib import run_smoke, x86_dispatch_build

# Outputs the kernels compute element by element (no reduction whose order depends on the vector
# width), built with -ffp-contract=off: the same bits at every level (docs/kernels.md).
ELEMENTWISE = ("project_f32_x", "project_f64_x", "adam_writes")
ALL = (*ELEMENTWISE, "project_f32_out", "project_f64_out", "adam_coef", "ghost")


def _supported() -> list[str]:
    from uno import _C

    return list(_C.cpu_isa_supported)


@pytest.fixture(scope="module")
def reports() -> dict[str, dict]:
    """One smoke run per level this CPU supports, forced (shared by the tests below)."""
    x86_dispatch_build()
    return {lvl: run_smoke(lvl) for lvl in _supported()}


def test_default_is_the_best_supported_level():
    x86_dispatch_build()
    report = run_smoke(None)
    assert report["level"] == _supported()[-1]


@pytest.mark.parametrize("level", ["x86-64-v2", "x86-64-v3", "x86-64-v4"])
def test_forced_level_matches_numpy_and_is_deterministic(level, reports):
    if level not in reports:
        pytest.skip(f"this CPU does not support {level}")
    first, again = reports[level], run_smoke(level)
    assert first["level"] == level and first["ok"]  # isa_smoke checked every output against numpy
    assert {k: first[k] for k in ALL} == {k: again[k] for k in ALL}  # same bits, run to run


def test_elementwise_outputs_are_identical_across_levels(reports):
    runs = list(reports.values())
    for r in runs[1:]:
        assert {k: r[k] for k in ELEMENTWISE} == {k: runs[0][k] for k in ELEMENTWISE}, r["level"]


def test_short_level_names():
    x86_dispatch_build()
    assert run_smoke("v2")["level"] == "x86-64-v2"


UNUSABLE = """
import torch, uno
print(uno.backends()["cpu"])
try:
    uno.project_([torch.randn(8)], [torch.randn(8)])
except ValueError as e:
    print("raised", e)
"""


def _run_with(level: str) -> str:
    env = {**os.environ, "UNO_CPU_ISA": level}
    env.pop("UNO_BACKEND", None)
    proc = subprocess.run(
        [sys.executable, "-c", UNUSABLE], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_unknown_level_is_reported_and_refused():
    x86_dispatch_build()
    out = _run_with("x86-64-v9")
    assert "error: UNO_CPU_ISA=x86-64-v9 is not a level of this build" in out
    assert "raised uno's cpu backend cannot run: UNO_CPU_ISA=x86-64-v9" in out


def test_backends_reports_the_level():
    x86_dispatch_build()
    import uno
    from uno import _C

    report = uno.backends()["cpu"]
    assert f"ISA {_C.cpu_isa}" in report
    assert ("forced by UNO_CPU_ISA" in report) == bool(_C.cpu_isa_forced)
