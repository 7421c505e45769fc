"""Give every symbol of one ISA level's static library a name of that level (a CMake build step).

``python csrc/isa_localize.py LIBRARY.a LEVEL`` rewrites the archive in place. A level's objects
(csrc/cpu/*.cpp compiled with -DUNO_ISA=LEVEL) name their own code uno::...::isa_LEVEL::..., but
they also emit inline library code under names every level shares (a std::vector constructor,
compiled there with AVX-512) and local clones of it (``[clone .constprop.0]``). The linker would
merge a shared name with the baseline's copy and keep one of them, so baseline code could end up
calling an AVX-512 copy. Renaming each defined symbol that lacks the level's namespace to
``<symbol>.isa_LEVEL`` (a clone suffix: it demangles as ``... [clone .isa_LEVEL]``) keeps every
level's copies apart and makes the level readable from the symbol table of the built library
(tests/packaging/isa_audit.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

# The binutils to use (CMake passes its CMAKE_AR, CMAKE_NM, CMAKE_OBJCOPY).
_TOOLS = (("UNO_AR", "ar"), ("UNO_NM", "nm"), ("UNO_OBJCOPY", "objcopy"))


def main(archive: str, level: str) -> None:
    ar, nm, objcopy = (os.environ.get(v) or d for v, d in _TOOLS)
    marker = f"isa_{level}"
    archive = os.path.abspath(archive)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([ar, "x", archive], cwd=tmp, check=True)
        members = subprocess.run(
            [ar, "t", archive], check=True, capture_output=True, text=True
        ).stdout.split()
        for obj in members:
            path = os.path.join(tmp, obj)
            listing = subprocess.run(
                [nm, "--defined-only", path], check=True, capture_output=True, text=True
            ).stdout
            renames = []
            for line in listing.splitlines():
                fields = line.split()
                if len(fields) != 3 or fields[1] in "aAN" or fields[2].startswith("."):
                    continue
                sym = fields[2]
                if marker not in sym:  # the mangled name holds the namespace as "13isa_x86_64_v3"
                    renames.append(f"{sym} {sym}.{marker}\n")
            if renames:
                table = path + ".syms"
                with open(table, "w") as f:
                    f.writelines(renames)
                subprocess.run([objcopy, f"--redefine-syms={table}", path], check=True)
        os.remove(archive)
        subprocess.run([ar, "rcs", archive, *members], cwd=tmp, check=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
