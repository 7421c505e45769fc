"""Which instructions of a built ``_C`` library run at which CPU ISA level (``objdump -d``).

A function belongs to level x86-64-v3 or x86-64-v4 when its demangled name contains the level's
namespace, ``isa_x86_64_v3`` / ``isa_x86_64_v4``: csrc/include/uno/isa.h puts every kernel and every
inline helper of a level's compile there, and csrc/isa_localize.py renames the library code the
level's objects emit to ``<name> [clone .isa_x86_64_v3]``. Everything else, including the statically linked
libstdc++, must run on an x86-64-v2 CPU: no VEX/EVEX instruction (AVX, AVX2, FMA, AVX-512), no
BMI1/BMI2/LZCNT/MOVBE instruction. Code of the v3 namespace must in turn use no AVX-512 (zmm or
mask registers, xmm16-31/ymm16-31). Usable as ``python tests/packaging/isa_audit.py LIB.so``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass, field

_FUNC = re.compile(r"^[0-9a-f]+ <(.+)>:$")
# x86-64-v3 additions that are not SIMD: BMI1, BMI2, LZCNT, MOVBE.
_V3_SCALAR = re.compile(
    r"^(andn|bextr|blsi|blsmsk|blsr|bzhi|mulx|pdep|pext|rorx|sarx|shlx|shrx|lzcnt|movbe)\b"
)
_AVX512 = re.compile(r"%zmm|%k[0-7]\b|%[xy]mm(1[6-9]|2[0-9]|3[01])\b|\{%k")


@dataclass
class Audit:
    """Instruction counts per level and the instructions found where they must not be."""

    counts: dict[str, int] = field(default_factory=dict)  # functions per level
    vector: dict[str, int] = field(default_factory=dict)  # AVX+ instructions per level
    zmm: dict[str, int] = field(default_factory=dict)  # AVX-512 instructions per level
    violations: list[str] = field(default_factory=list)  # "function: instruction"


def level_of(name: str) -> str:
    """The ISA level of a function from its demangled name (baseline when no level namespace)."""
    for lvl in ("x86_64_v4", "x86_64_v3"):
        if f"isa_{lvl}" in name:
            return lvl.replace("_", "-", 1).replace("_", "-")
    return "baseline"


def _is_avx(mnemonic: str, operands: str) -> bool:
    # VEX/EVEX-encoded instructions are the ones whose AT&T mnemonic starts with "v" and that touch
    # vector registers (vzeroupper has none); "verr"/"verw" are old system instructions.
    return (
        mnemonic.startswith("v")
        and mnemonic not in ("verr", "verw")
        and ("mm" in operands or mnemonic == "vzeroupper")
    )


def audit(path: str) -> Audit:
    """Disassembles ``path`` and classifies every instruction by the level of its function."""
    out = subprocess.run(
        ["objdump", "-d", "-C", "--no-show-raw-insn", path],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    a = Audit()
    func, lvl = "?", "baseline"
    for line in out.splitlines():
        m = _FUNC.match(line)
        if m:
            func, lvl = m.group(1), level_of(m.group(1))
            a.counts[lvl] = a.counts.get(lvl, 0) + 1
            continue
        parts = line.split("\t")
        if len(parts) < 2 or not parts[0].strip().endswith(":"):
            continue
        insn = parts[1].strip()
        mnemonic, _, operands = insn.partition(" ")
        avx, v512 = _is_avx(mnemonic, operands), bool(_AVX512.search(operands))
        a.vector[lvl] = a.vector.get(lvl, 0) + int(avx)
        a.zmm[lvl] = a.zmm.get(lvl, 0) + int(v512)
        if lvl == "baseline" and (avx or v512 or _V3_SCALAR.match(mnemonic)):
            a.violations.append(f"{func}: {insn}")
        elif lvl == "x86-64-v3" and v512:
            a.violations.append(f"{func}: {insn}")
    return a


if __name__ == "__main__":
    res = audit(sys.argv[1])
    print(f"functions per level: {res.counts}")
    print(
        f"AVX/AVX2/AVX-512 instructions per level: {res.vector}; AVX-512 register uses: {res.zmm}"
    )
    for v in res.violations[:20]:
        print("VIOLATION", v)
    sys.exit(1 if res.violations else 0)
