"""Inspection of the built core (and, with UNO_WHEEL=path, of the repaired wheel): the instructions
of each ISA level stay in that level's code (isa_audit.py), and the library needs no glibc, GLIBCXX
or shared library beyond the manylinux policy the wheel is tagged with (docs/kernels.md)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import zipfile

import pytest
from _lib import core_path, x86_dispatch_build
from isa_audit import audit

# manylinux_2_34: the floor GCC 12 on glibc 2.36 honestly reaches. libstdc++ is linked statically
# (no GLIBCXX), arc4random comes from csrc/compat (no GLIBC_2.36), and since glibc 2.34 moved
# pthread_create & co. into libc, linking against any glibc >= 2.34 needs GLIBC_2.34.
GLIBC_FLOOR = (2, 34)
POLICY = "manylinux_2_34"
# Shared libraries every manylinux policy lets a wheel take from the system.
ALLOWED_NEEDED = {"libc.so.6", "libm.so.6", "libgcc_s.so.1", "ld-linux-x86-64.so.2",
                  "ld-linux-aarch64.so.1", "libpthread.so.0", "libdl.so.2", "librt.so.1"}  # fmt: skip

needs_binutils = pytest.mark.skipif(
    shutil.which("objdump") is None or shutil.which("readelf") is None,
    reason="needs binutils (objdump, readelf)",
)


def _versions(path: str) -> dict[str, set[tuple[int, ...]]]:
    out = subprocess.run(["objdump", "-T", path], check=True, capture_output=True, text=True).stdout
    found: dict[str, set[tuple[int, ...]]] = {}
    for lib, ver in re.findall(r"\b(GLIBC|GLIBCXX|CXXABI|GCC)_([0-9.]+)\b", out):
        found.setdefault(lib, set()).add(tuple(int(x) for x in ver.split(".")))
    return found


@needs_binutils
def test_isa_levels_stay_in_their_code():
    x86_dispatch_build()
    a = audit(core_path())
    assert a.violations == [], a.violations[:10]
    # the levels are real: AVX2 code in v3, AVX-512 registers in v4, neither in the baseline
    assert a.vector.get("baseline", 0) == 0
    assert a.vector.get("x86-64-v3", 0) > 1000 and a.zmm.get("x86-64-v3", 0) == 0
    assert a.zmm.get("x86-64-v4", 0) > 1000


@needs_binutils
def test_symbol_versions_within_policy():
    vers = _versions(core_path())
    assert max(vers["GLIBC"]) <= GLIBC_FLOOR, sorted(vers["GLIBC"])
    assert "GLIBCXX" not in vers and "CXXABI" not in vers, "libstdc++ should be linked statically"
    assert max(vers.get("GCC", {(0,)})) <= (4, 2, 0)


@needs_binutils
def test_needed_libraries_are_allowed():
    out = subprocess.run(["readelf", "-d", core_path()], check=True, capture_output=True, text=True)
    needed = set(re.findall(r"Shared library: \[([^\]]+)\]", out.stdout))
    assert needed <= ALLOWED_NEEDED, needed - ALLOWED_NEEDED


@pytest.mark.skipif(not os.environ.get("UNO_WHEEL"), reason="UNO_WHEEL (a repaired wheel) not set")
def test_wheel_is_manylinux_tagged():
    wheel = os.environ["UNO_WHEEL"]
    name = os.path.basename(wheel)
    assert f"-{POLICY}_" in name, name
    assert not name.endswith("-linux_x86_64.whl"), name
    with zipfile.ZipFile(wheel) as z:
        tags = [ln for ln in z.read(next(n for n in z.namelist() if n.endswith(".dist-info/WHEEL")))
                .decode().splitlines() if ln.startswith("Tag:")]  # fmt: skip
        libs = [n for n in z.namelist() if re.match(r"uno/_C.*\.so$", n)]
    assert tags and all(POLICY in t for t in tags), tags
    assert len(libs) == 1, libs
