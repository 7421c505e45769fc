#!/usr/bin/env bash
# Build, repair and check a release wheel here, as the [tool.cibuildwheel] recipe of pyproject.toml
# does in the manylinux images: pip wheel -> auditwheel repair (+ patchelf) -> auditwheel show ->
# install into a fresh venv with torch==2.13.0 -> smoke tests with every ISA level this CPU supports
# forced -> a report (tag, glibc floor, ISA levels, size).
#
# Usage: scripts/build_wheel.sh [OUTDIR]   (default dist/; the repaired wheel lands in OUTDIR/)
# Environment: UNO_CUDA (default OFF here: a CPU-only wheel, minutes instead of the CUDA fatbin's
# much longer compile; UNO_CUDA=ON builds the fatbin of CMakeLists.txt's UNO_CUDA_ARCHS), PYTHON
# (default python3), UNO_WHEEL_POLICY (default manylinux_2_34_x86_64, the lowest this toolchain
# reaches: see docs/kernels.md), UNO_SMOKE_TESTS (the pytest selection run per level).
# Exits non-zero when any step or check fails.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=$(mkdir -p "${1:-dist}" && cd "${1:-dist}" && pwd)
py=${PYTHON:-python3}
arch=$(uname -m)
policy=${UNO_WHEEL_POLICY:-manylinux_2_34_$arch}
export UNO_CUDA=${UNO_CUDA:-OFF}
smoke_tests=${UNO_SMOKE_TESTS:-tests/packaging tests/kernels/test_project.py tests/kernels/test_combine.py}
work=$(mktemp -d /tmp/uno-wheel.XXXXXX)
trap 'rm -rf "$work"' EXIT

step() { echo "== $*"; }

step "tools: auditwheel and patchelf from PyPI ($work/tools)"
"$py" -m venv "$work/tools"
"$work/tools/bin/python" -m pip install -q --upgrade pip
"$work/tools/bin/python" -m pip install -q auditwheel patchelf
export PATH="$work/tools/bin:$PATH"  # patchelf for auditwheel

step "build: pip wheel . --no-deps (UNO_CUDA=$UNO_CUDA, UNO_CPU_ARCH=dispatch)"
start=$(date +%s)
UNO_CPU_ARCH=dispatch "$work/tools/bin/python" -m pip wheel "$root" --no-deps -w "$work/raw" -q
build_s=$(( $(date +%s) - start ))
echo "built in ${build_s} s"
raw=$(ls "$work"/raw/uno_kernels-*.whl)

step "repair: auditwheel repair --plat $policy"
auditwheel repair --plat "$policy" -w "$work/repaired" "$raw"
wheel=$(ls "$work"/repaired/uno_kernels-*.whl)
auditwheel show "$wheel" | tee "$work/show.txt"
grep -q "\"$policy\"" "$work/show.txt" || { echo "auditwheel show does not confirm $policy" >&2; exit 1; }
cp -f "$wheel" "$out/"
wheel="$out/$(basename "$wheel")"

step "install into a fresh venv with torch==2.13.0"
"$py" -m venv "$work/venv"
vpy="$work/venv/bin/python"
"$vpy" -m pip install -q --upgrade pip
"$vpy" -m pip install -q torch==2.13.0 "$wheel" pytest hypothesis numpy

step "smoke tests of the installed wheel at every ISA level this CPU supports"
# From a directory without python/uno, so that `import uno` is the installed wheel.
cp -r "$root/tests" "$work/tests"
cp "$root/pyproject.toml" "$work/"
cd "$work"
"$vpy" -c "import uno, uno._C as C; assert 'site-packages' in C.__file__, C.__file__; print(uno.backends())"
levels=$("$vpy" -c "import uno._C as C; print(' '.join(C.cpu_isa_supported))")
for level in $levels; do
  step "UNO_CPU_ISA=$level"
  # shellcheck disable=SC2086
  # (test_aarch64.py cross-compiles the sources; it does not depend on the wheel or the level)
  UNO_CPU_ISA=$level UNO_WHEEL="$wheel" "$vpy" -m pytest $smoke_tests -q -x -p no:cacheprovider -m "not gpu" \
    --ignore=tests/packaging/test_aarch64.py
done
cd "$root"

so=$(unzip -Z1 "$wheel" | grep -E '^uno/_C.*\.so$')
unzip -q -o "$wheel" "$so" -d "$work/unpacked"
glibc=$(objdump -T "$work/unpacked/$so" | grep -oE 'GLIBC_[0-9.]+' | sort -uV | tail -1)
built=$("$vpy" -c "import uno._C as C; print(', '.join(C.cpu_isa_built))")
here=$("$vpy" -c "import uno._C as C; print(C.cpu_isa)")
cuda=$("$vpy" -c "import uno._C as C; print(C.cuda_archs if C.with_cuda else 'none (CPU-only wheel)')")
step "report"
cat <<REPORT | tee "$out/wheel_report.txt"
wheel:        $(basename "$wheel")
tag:          $(unzip -p "$wheel" '*.dist-info/WHEEL' | sed -n 's/^Tag: //p' | paste -sd' ')
glibc floor:  $glibc (policy $policy; libstdc++ static, needs: $(readelf -d "$work/unpacked/$so" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p' | paste -sd' '))
ISA levels:   $built (this machine runs $here; smoke tests passed at: $levels)
CUDA archs:   $cuda
size:         $(stat -c %s "$wheel") bytes wheel, $(stat -c %s "$work/unpacked/$so") bytes _C
build time:   ${build_s} s (pip wheel, this machine)
REPORT
