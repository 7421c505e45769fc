#!/usr/bin/env bash
# GPU check for a lent machine, one short prepared run: build uno with the CUDA kernels, run the tests
# marked gpu (tests/kernels/test_cuda_primitives.py and tests/optim/test_optim_cuda.py first, then the
# cuda/triton parameters of every backend-parametrized test), then the quick microbenchmarks and the uno step-cost
# experiment on the device. Every step has its own time cap and all of them share one budget
# (GPU_CHECK_BUDGET_S, default 470 s, i.e. under 8 minutes with the machine probe); a step that the
# budget no longer covers is skipped and reported. Run from the repo root:
#     scripts/gpu_check.sh            # logs to $OUT if set, else /tmp/uno_gpu_check
# The machine is offline: missing Python packages come from wheels carried in .whl/ (pip --no-index),
# else from the default index when one is reachable.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
OUT=${OUT:-/tmp/uno_gpu_check}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
deadline=$(($(date +%s) + ${GPU_CHECK_BUDGET_S:-470}))
status=0

step() { echo "=== $(date +%T) $*" | tee -a "$OUT/summary.txt"; }
result() {
  echo "    -> $1 (rc=$2)" | tee -a "$OUT/summary.txt"
  [ "$2" = 0 ] || status=1
}
# bounded CAP_S LOG CMD...: run CMD under `timeout min(CAP_S, budget left)`, output to $OUT/LOG;
# returns 124 when it ran out of time, 125 when the budget was already spent (not run).
bounded() {
  local cap=$1 log=$2 left
  shift 2
  left=$((deadline - $(date +%s)))
  if [ "$left" -lt 15 ]; then
    echo "    skipped: the time budget is spent" | tee -a "$OUT/summary.txt"
    return 125
  fi
  [ "$cap" -lt "$left" ] || cap=$left
  timeout "$cap" "$@" >"$OUT/$log" 2>&1
}
need() { # need MODULE [PACKAGE]: import MODULE, else install PACKAGE from .whl/ or the index
  local mod=$1 pkg=${2:-$1}
  "$PY" -c "import $mod" 2>/dev/null && return 0
  { timeout 60 "$PY" -m pip install -q --no-index --find-links .whl "$pkg" ||
    timeout 60 "$PY" -m pip install -q "$pkg"; } >>"$OUT/pip.log" 2>&1 ||
    echo "could not install $pkg (see pip.log)"
}

step "machine"
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  "$PY" --version
  command -v nvcc && nvcc --version | tail -2
  nproc
} 2>&1 | tee "$OUT/machine.txt"

step "python packages"
for mod in torch triton pytest hypothesis scipy pybind11; do need "$mod"; done
need scikit_build_core scikit-build-core
"$PY" -c "import torch; print('torch', torch.__version__, torch.version.cuda, torch.cuda.get_device_name())"

step "build (UNO_CUDA=ON)"
export UNO_CUDA=ON CMAKE_BUILD_PARALLEL_LEVEL
CMAKE_BUILD_PARALLEL_LEVEL=$(nproc)
t0=$(date +%s)
bounded 240 build.log "$PY" -m pip install --no-build-isolation --no-deps -e .
rc=$?
if [ "$rc" != 0 ] && [ "$rc" != 124 ] && [ "$rc" != 125 ]; then
  # Fallback: the developer build (CMake directly), used through PYTHONPATH=python.
  echo "pip install failed; trying a direct CMake build" | tee -a "$OUT/summary.txt"
  pybind11_dir=$("$PY" -c "import pybind11; print(pybind11.get_cmake_dir())")
  bounded 30 build-configure.log cmake -S . -B build/gpu-check -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DUNO_CUDA=ON -Dpybind11_DIR="$pybind11_dir" -DPython_EXECUTABLE="$(command -v "$PY")" \
    -DSKBUILD_PROJECT_VERSION=0.1.0 &&
    bounded 240 build-cmake.log cmake --build build/gpu-check -j "$(nproc)" &&
    cp -f build/gpu-check/_C*.so python/uno/ &&
    export PYTHONPATH="$PWD/python${PYTHONPATH:+:$PYTHONPATH}"
  rc=$?
fi
result "build in $(($(date +%s) - t0)) s" $rc
tail -5 "$OUT"/build*.log
"$PY" -c "import uno, uno._C as C; print('with_cuda', C.with_cuda, 'archs', C.cuda_archs); \
print(C.registered); print(uno.backends())" 2>&1 | tee -a "$OUT/summary.txt"

# The device-only tests first (the CUDA primitives and the optimizer step), then every other gpu-marked
# test (the cuda and triton parameters of the backend-parametrized tests, Triton compiles included).
CUDA_TESTS=(tests/kernels/test_cuda_primitives.py tests/optim/test_optim_cuda.py)
step "pytest -m gpu: ${CUDA_TESTS[*]}"
bounded 90 pytest_cuda.log "$PY" -m pytest "${CUDA_TESTS[@]}" -m gpu -q --no-header \
  -p no:cacheprovider --durations=5 --junitxml "$OUT/pytest_cuda.xml"
result "pytest cuda tests" $?
tail -15 "$OUT/pytest_cuda.log"

step "pytest -m gpu: the rest"
deselect=()
for f in "${CUDA_TESTS[@]}"; do deselect+=(--ignore "$f"); done
bounded 150 pytest.log "$PY" -m pytest tests "${deselect[@]}" -m gpu -q --no-header \
  -p no:cacheprovider --durations=10 --junitxml "$OUT/pytest.xml"
result "pytest -m gpu" $?
tail -15 "$OUT/pytest.log"

step "uno bench optim --quick (cuda)"
bounded 60 bench_optim.log "$PY" -m uno.bench optim --device cuda --quick --csv "$OUT/optim_cuda.csv"
result "bench optim" $?
tail -12 "$OUT/bench_optim.log"

step "uno bench project --quick (cuda)"
bounded 60 bench_project.log "$PY" -m uno.bench project --device cuda --quick \
  --csv "$OUT/project_cuda.csv"
result "bench project" $?
tail -12 "$OUT/bench_project.log"

step "experiments/step_cost.py (cuda): uno vs surgery vs the paper-faithful step (issue 6)"
bounded 90 step_cost.log "$PY" experiments/step_cost.py --device cuda --steps 5 --rounds 3 \
  --csv "$OUT/step_cost_cuda.csv"
result "step cost" $?
tail -12 "$OUT/step_cost.log"

step "done (status $status); logs in $OUT"
exit $status
