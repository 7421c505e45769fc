"""The CPU kernels on aarch64, which nothing here runs natively: the portable level of every
csrc/cpu kernel, cross-compiled with Debian's aarch64-linux-gnu-g++ into portable_check.cpp (no
Python, no pybind11) and run under qemu-aarch64. Skipped without the two tools, except with
UNO_REQUIRE_AARCH64=1 (CI's wheel step installs them: .ci/run)."""

from __future__ import annotations

import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CXX = shutil.which("aarch64-linux-gnu-g++")
QEMU = shutil.which("qemu-aarch64")
if (CXX is None or QEMU is None) and os.environ.get("UNO_REQUIRE_AARCH64") == "1":
    raise RuntimeError("UNO_REQUIRE_AARCH64=1 but aarch64-linux-gnu-g++ or qemu-aarch64 is missing")
KERNELS = ("inner", "project", "combine", "optim_step", "ghost_gram")
# The flags CMakeLists.txt gives the portable level (UNO_CPU_FLAGS, no -march).
FLAGS = ["-O3", "-std=gnu++17", f"-I{ROOT / 'csrc' / 'include'}", "-DUNO_ISA=portable",
         "-fopenmp-simd", "-fno-math-errno", "-ffp-contract=off", "-Wall", "-Wextra", "-Werror"]  # fmt: skip


@pytest.mark.slow
@pytest.mark.skipif(CXX is None or QEMU is None, reason="needs g++-aarch64-linux-gnu and qemu-user")
def test_portable_kernels_on_emulated_aarch64(tmp_path):
    assert CXX is not None and QEMU is not None

    def compile_one(name: str) -> Path:
        obj = tmp_path / f"{name}.o"
        src = ROOT / "csrc" / "cpu" / f"{name}.cpp"
        subprocess.run([CXX, "-c", *FLAGS, str(src), "-o", str(obj)], check=True, timeout=600)
        return obj

    with ThreadPoolExecutor(max_workers=2) as pool:
        objs = list(pool.map(compile_one, KERNELS))
    exe = tmp_path / "portable_check"
    main = Path(__file__).with_name("portable_check.cpp")
    subprocess.run([CXX, "-static", "-pthread", *FLAGS, *map(str, objs), str(main), "-o", str(exe)],
                   check=True, timeout=600)  # fmt: skip
    assert (
        "AArch64"
        in subprocess.run(
            ["readelf", "-h", str(exe)], check=True, capture_output=True, text=True
        ).stdout
    )
    run = subprocess.run([QEMU, str(exe)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stdout + run.stderr
