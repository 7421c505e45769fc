"""Where the compiled core under test lives, and running the ISA smoke script against it."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence

import pytest

HERE = Path(__file__).resolve().parent
SMOKE = HERE / "isa_smoke.py"


def core_path() -> str:
    """The ``_C`` library the tests import (a wheel's, a dev build's), or a skip without one."""
    try:
        from uno import _C
    except ImportError as e:  # pragma: no cover - depends on the build
        pytest.skip(f"no compiled core: {e}")
    return str(_C.__file__)


def x86_dispatch_build() -> list[str]:
    """The built x86-64 levels, or a skip when this is not an x86-64 build with ISA dispatch."""
    from uno import _C

    if platform.machine() not in ("x86_64", "AMD64") or "x86-64-v2" not in _C.cpu_isa_built:
        pytest.skip(f"not an x86-64 dispatch build (levels {list(_C.cpu_isa_built)})")
    return list(_C.cpu_isa_built)


def run_smoke(level: Optional[str], prefix: Sequence[str] = (), timeout: float = 300) -> dict:
    """Runs isa_smoke.py on the core (under ``prefix``, e.g. qemu) with UNO_CPU_ISA=level."""
    env = dict(os.environ)
    env.pop("UNO_CPU_ISA", None)
    if level is not None:
        env["UNO_CPU_ISA"] = level
    if "-cpu" in prefix:
        # numpy's OpenBLAS picks its kernels from the CPU it detects, and under qemu-user on some
        # hosts it detects wrongly: on a Zen 5 host (2026-12-02) `import numpy` died with SIGILL
        # under -cpu Nehalem, and its matmul under -cpu SandyBridge. Name the emulated core.
        env["OPENBLAS_CORETYPE"] = prefix[list(prefix).index("-cpu") + 1]
    proc = subprocess.run(
        [*prefix, sys.executable, str(SMOKE), core_path()],
        env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert lines, f"no report (rc {proc.returncode}): {proc.stdout}\n{proc.stderr[-2000:]}"
    report = json.loads(lines[-1])
    assert proc.returncode == 0, f"smoke checks failed: {report}"
    return report
