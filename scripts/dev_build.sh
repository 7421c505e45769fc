#!/usr/bin/env bash
# Developer build: compile uno._C with CMake into build/dev-<name> and copy it next to python/uno so that
# `PYTHONPATH=python python -c "import uno"` uses it. Usage: scripts/dev_build.sh [name] [UNO_CUDA=OFF|AUTO|ON]
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:-default}
cuda=${2:-OFF}
py=${PYTHON:-python}
pybind11_dir=$("$py" -c "import pybind11; print(pybind11.get_cmake_dir())")
cmake -S . -B "build/dev-$name" -G Ninja -DCMAKE_BUILD_TYPE=Release -DUNO_CUDA="$cuda" \
  -Dpybind11_DIR="$pybind11_dir" -DPython_EXECUTABLE="$(command -v "$py")" -DSKBUILD_PROJECT_VERSION=0.1.0 >/dev/null
cmake --build "build/dev-$name" -j 2
so=$(ls "build/dev-$name"/_C*.so)
if [ "${NO_COPY:-0}" = "1" ]; then echo "built $so (not copied: NO_COPY=1)"; exit 0; fi
# Copy then rename: a process that has the old module loaded keeps its (now unlinked) file; copying over
# it in place would change the pages under that process and crash it.
dest="python/uno/$(basename "$so")"
cp -f "$so" "$dest.tmp.$$" && mv -f "$dest.tmp.$$" "$dest"
echo "built $so -> python/uno/"
