#!/usr/bin/env bash
# GPU check for a lent machine (one short run, under ~8 minutes): build uno with the CUDA kernels, check the
# cuda primitives against the reference (dtypes, k, many/empty pieces, in-place combine, determinism, CUDA
# graph capture), the gpu-marked tests, the projected Adam step (<= 2 kernels per step, no host sync,
# determinism, reference agreement, CUDA graph replay against eager steps), then the quick optim and
# project benchmarks and the uno step-cost bench on the GPU. Run from the repo root:
#     scripts/gpu_check.sh            # logs to $OUT if set, else /tmp/uno_gpu_check
# The machine is offline: missing Python packages come from wheels carried in .whl/ (pip --no-index),
# else from the default index when one is reachable.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/uno_gpu_check}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
status=0
step() { echo "=== $(date +%T) $*" | tee -a "$OUT/summary.txt"; }
result() { echo "    -> $1 (rc=$2)" | tee -a "$OUT/summary.txt"; [ "$2" = 0 ] || status=1; }

step "machine"
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; "$PY" --version
  command -v nvcc && nvcc --version | tail -2; nproc; } 2>&1 | tee "$OUT/machine.txt"

step "python packages"
for mod in torch triton pytest hypothesis scipy; do
  if ! "$PY" -c "import $mod" 2>/dev/null; then
    pkg=$mod
    { "$PY" -m pip install -q --no-index --find-links .whl "$pkg" || "$PY" -m pip install -q "$pkg"; } \
      >>"$OUT/pip.log" 2>&1 || echo "could not install $pkg (see pip.log)"
  fi
done
for mod in scikit_build_core pybind11; do
  "$PY" -c "import $mod" 2>/dev/null || { "$PY" -m pip install -q --no-index --find-links .whl \
    "${mod//_/-}" || "$PY" -m pip install -q "${mod//_/-}"; } >>"$OUT/pip.log" 2>&1
done
"$PY" -c "import torch; print('torch', torch.__version__, torch.version.cuda, torch.cuda.get_device_name())"

step "build (UNO_CUDA=ON)"
export UNO_CUDA=ON CMAKE_BUILD_PARALLEL_LEVEL=$(nproc)
t0=$(date +%s)
if "$PY" -m pip install --no-build-isolation --no-deps -e . >"$OUT/build.log" 2>&1; then
  rc=0
else
  # Fallback: the developer build (CMake directly), used through PYTHONPATH=python.
  echo "pip install failed; trying a direct CMake build" | tee -a "$OUT/build.log"
  pybind11_dir=$("$PY" -c "import pybind11; print(pybind11.get_cmake_dir())")
  cmake -S . -B build/gpu-check -G Ninja -DCMAKE_BUILD_TYPE=Release -DUNO_CUDA=ON \
    -Dpybind11_DIR="$pybind11_dir" -DPython_EXECUTABLE="$(command -v "$PY")" \
    -DSKBUILD_PROJECT_VERSION=0.1.0 >>"$OUT/build.log" 2>&1 &&
    cmake --build build/gpu-check -j "$(nproc)" >>"$OUT/build.log" 2>&1 &&
    cp -f build/gpu-check/_C*.so python/uno/ && export PYTHONPATH="$PWD/python${PYTHONPATH:+:$PYTHONPATH}"
  rc=$?
fi
result "build in $(($(date +%s) - t0)) s" $rc
tail -5 "$OUT/build.log"
"$PY" -c "import uno, uno._C as C; print('with_cuda', C.with_cuda, 'archs', C.cuda_archs); \
print(C.registered); print(uno.backends())" 2>&1 | tee -a "$OUT/summary.txt"

step "cuda primitives vs reference"
timeout 180 "$PY" - >"$OUT/primitives.log" 2>&1 <<'EOF'
import itertools, sys, torch
from uno._backends import cuda as cu
from uno import reference as ref

dev = torch.device("cuda")
torch.manual_seed(0)
fails = []
TOL = {torch.float32: 1e-5, torch.float64: 1e-12, torch.float16: 3e-3, torch.bfloat16: 2e-2}

def check(name, got, want, tol):
    err = (got.double() - want.double()).abs().max().item() if want.numel() else 0.0
    scale = max(1.0, want.double().abs().max().item() if want.numel() else 1.0)
    ok = err <= tol * scale
    print(f"{'ok  ' if ok else 'FAIL'} {name}: err {err:.3e} (scale {scale:.2e})")
    if not ok:
        fails.append(name)

def make(sizes, k, xd, rd, basis_layout):
    x = [torch.randn(n, device=dev, dtype=xd) for n in sizes]
    if basis_layout:  # one [k, P] buffer, rows[t] = Q[:, o_t:o_t+n_t] (ld = P)
        Q = torch.randn(k, sum(sizes) + 3, device=dev, dtype=rd)
        rows, o = [], 1
        for n in sizes:
            rows.append(Q[:, o:o + n]); o += n
    else:
        rows = [torch.randn(k, n, device=dev, dtype=rd) for n in sizes]
    return x, rows

pairs = [(torch.float32,) * 2, (torch.float64,) * 2, (torch.float16,) * 2, (torch.bfloat16,) * 2,
         (torch.float16, torch.float32), (torch.bfloat16, torch.float32)]
shapes = {"one": [100_003], "mixed": [0, 1, 7, 1025, 4096, 33_333, 0, 250_001],
          "many": [((i * 37) % 300) + (i % 3 == 0) * 5000 for i in range(150)]}
for (xd, rd), k, (sname, sizes), bl in itertools.product(
        pairs, [1, 3, 8, 17, 33, 40], shapes.items(), [False, True]):
    if sname == "many" and (k not in (3, 33) or xd != torch.float32):
        continue
    if sname == "one" and k in (17, 40) and xd != torch.float32:
        continue
    tag = f"{str(xd)[6:]}/{str(rd)[6:]} k={k} {sname} {'basis' if bl else 'rows'}"
    tol = TOL[xd] if xd in (torch.float16, torch.bfloat16) else TOL[rd]
    x, rows = make(sizes, k, xd, rd, bl)
    for g in (False, True):
        check(f"inner g={g} {tag}", cu.inner(x, rows, g), ref.inner(x, rows, g), TOL[rd] * 10)
        if g:
            check(f"inner x=None {tag}", cu.inner(None, rows, True), ref.inner(None, rows, True), TOL[rd] * 10)
    y = torch.randn(k, device=dev, dtype=torch.float64) * 0.1
    x2 = [t.clone() for t in x]
    got = cu.project(x, rows, y)
    want = ref.project(x2, rows, y)
    check(f"project {tag}", got, want, tol * 10)
    check(f"project x {tag}", torch.cat([t.double() for t in x]), torch.cat([t.double() for t in x2]), tol)
    if xd == rd:
        for r in (1, k):
            m = torch.randn(r, k, device=dev, dtype=torch.float64)
            out = [torch.empty(r, n, device=dev, dtype=rd) for n in sizes]
            out2 = [torch.empty(r, n, device=dev, dtype=rd) for n in sizes]
            cu.combine(out, rows, m); ref.combine(out2, rows, m)
            check(f"combine r={r} {tag}", torch.cat([o.flatten() for o in out]), torch.cat([o.flatten() for o in out2]), tol * 10)
        # in place: out is rows' own memory (first r <= k rows)
        m = torch.randn(max(1, k - 1), k, device=dev, dtype=torch.float64)
        want = [torch.empty(m.shape[0], n, device=dev, dtype=rd) for n in sizes]
        ref.combine(want, rows, m)
        cu.combine([r_[: m.shape[0]] for r_ in rows], rows, m)
        check(f"combine in-place {tag}", torch.cat([r_[: m.shape[0]].flatten() for r_ in rows]), torch.cat([w.flatten() for w in want]), tol * 10)

# determinism and CUDA-graph capture
x, rows = make([3_000_001, 17, 65_536], 5, torch.float32, torch.float32, True)
a = cu.inner(x, rows, True); b = cu.inner(x, rows, True)
print("deterministic inner:", torch.equal(a, b)); fails += [] if torch.equal(a, b) else ["determinism"]
y = torch.randn(5, device=dev, dtype=torch.float64) * 0.1
xs = [t.clone() for t in x]
s = torch.cuda.Stream(); s.wait_stream(torch.cuda.current_stream())
with torch.cuda.stream(s):
    cu.project(xs, rows, y)  # warm-up outside capture
torch.cuda.current_stream().wait_stream(s)
xs = [t.clone() for t in x]
graph = torch.cuda.CUDAGraph()
with torch.cuda.graph(graph):
    res = cu.project(xs, rows, y)
for t, t0 in zip(xs, x):
    t.copy_(t0)
graph.replay(); torch.cuda.synchronize()
x2 = [t.clone() for t in x]
check("project in CUDA graph", res, ref.project(x2, rows, y), 1e-4)
print("FAILED:", fails) if fails else print("ALL OK")
sys.exit(1 if fails else 0)
EOF
rc=$?; result "primitives" $rc
grep -E "FAIL|ALL OK|Error|error" "$OUT/primitives.log" | head -20

step "pytest -m gpu"
timeout 240 "$PY" -m pytest -m gpu -q --no-header -p no:cacheprovider >"$OUT/pytest.log" 2>&1
rc=$?; result "pytest" $rc
tail -15 "$OUT/pytest.log"

step "ProjectedAdam on CUDA: <= 2 kernels per step, no host sync, determinism, CUDA graph replay"
timeout 180 "$PY" - >"$OUT/optim.log" 2>&1 <<'EOF'
# One ProjectedAdam step with a basis of k <= 16 rows over <= 256 pieces must be at most 2 kernel
# launches (coefficients with their reduction folded in, then the write with the step-count increment
# folded in), make no host synchronisation, be deterministic, match the reference backend, and replay
# in a CUDA graph exactly as eager steps do. The fallbacks (k > 16, > 256 pieces) are counted too.
import sys, torch, uno
from torch.profiler import ProfilerActivity, profile
from uno.optim import ProjectedAdam, ProjectedSGD

dev = torch.device("cuda")
fails = []
SHAPES = [(512, 256), (256,), (1000, 10), (10,)] + [(((i * 37) % 300) + 1,) for i in range(150)]
SHAPES300 = [(((i * 37) % 300) + 1,) for i in range(299)] + [(3000, 7)]  # 2 launch groups

def ok(name, cond, info=""):
    print(f"{'ok  ' if cond else 'FAIL'} {name} {info}")
    if not cond:
        fails.append(name)

def make(shapes, seed=0):  # parameters with fixed gradients, the same for the same seed
    g = torch.Generator().manual_seed(seed)
    ps = []
    for s in shapes:
        p = torch.randn(s, generator=g).to(dev).requires_grad_()
        p.grad = torch.randn(s, generator=g).to(dev)
        ps.append(p)
    return ps

def make_basis(shapes, k, seed=1):
    g = torch.Generator().manual_seed(seed)
    return uno.orthonormalize(
        [[torch.randn(s, generator=g).to(dev) for s in shapes] for _ in range(k)])

def gpu_events(opt):
    opt.step(); torch.cuda.synchronize()  # warm-up: states and this stream's counter exist
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        opt.step(); torch.cuda.synchronize()
    return [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]

# GPU ops (kernels; memsets/memcpys count too and should be none) per step:
# (name, class, kwargs, shapes, k, expected)
cases = [
    ("adam k=1 grad", ProjectedAdam, {}, SHAPES, 1, 2),
    ("adam k=4 grad", ProjectedAdam, {}, SHAPES, 4, 2),
    ("adam k=4 update amsgrad", ProjectedAdam, dict(project="update", amsgrad=True), SHAPES, 4, 2),
    ("adamw k=16 update", ProjectedAdam, dict(project="update", weight_decay=0.1,
                                              decoupled_weight_decay=True), SHAPES, 16, 2),
    ("adam no basis", ProjectedAdam, {}, SHAPES, 0, 1),
    ("sgd momentum k=4", ProjectedSGD, dict(momentum=0.9), SHAPES, 4, 2),
    ("fallback: adam k=32 (2 row tiles)", ProjectedAdam, {}, SHAPES, 32, 3),
    ("fallback: adam k=4, 300 pieces (2 groups)", ProjectedAdam, {}, SHAPES300, 4, 4),
]
for name, cls, kw, shapes, k, want in cases:
    basis = make_basis(shapes, k) if k else None
    names = gpu_events(cls(make(shapes), lr=1e-3, basis=basis, backend="cuda", **kw))
    ok(f"GPU ops per step, {name}: {len(names)} (expected {want})", len(names) <= want,
       str(sorted({n[:70] for n in names})))

# no host synchronisation (sync debug mode "error" raises on any synchronising call)
for project in ("grad", "update"):
    opt = ProjectedAdam(make(SHAPES), lr=1e-3, project=project, basis=make_basis(SHAPES, 4),
                        backend="cuda")
    opt.step(); torch.cuda.synchronize()
    err = None
    torch.cuda.set_sync_debug_mode("error")
    try:
        opt.step(); opt.step()
    except RuntimeError as e:
        err = e
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()
    ok(f"no host sync in eager steps ({project})", err is None, repr(err)[:300] if err else "")

# determinism (bitwise, two runs) and agreement with the reference backend, one and two groups
for shapes, tag in ((SHAPES, "154 pieces"), (SHAPES300, "300 pieces")):
    for project in ("grad", "update"):
        basis = make_basis(shapes, 4)
        runs = []
        for backend in ("cuda", "cuda", "reference"):
            ps = make(shapes)
            opt = ProjectedAdam(ps, lr=1e-2, weight_decay=0.01, decoupled_weight_decay=True,
                                project=project, basis=basis, backend=backend)
            for _ in range(3):
                opt.step()
            runs.append((ps, opt))
        (a, oa), (b, _), (r, orf) = runs
        ok(f"deterministic ({project}, {tag})", all(torch.equal(x, y) for x, y in zip(a, b)))
        err = max((x - y).abs().max().item() for x, y in zip(a, r))
        serr = max((oa.state[x]["exp_avg"] - orf.state[y]["exp_avg"]).abs().max().item()
                   for x, y in zip(a, r))
        ok(f"cuda vs reference ({project}, {tag})", err <= 1e-5 and serr <= 1e-5,
           f"max |dp| {err:.2e}, max |d exp_avg| {serr:.2e}")
        steps = {float(oa.state[p]["step"]) for p in a}
        ok(f"step counts after 3 steps ({project}, {tag})", steps == {3.0}, str(steps))

# a skipped step (found_inf on the device) moves nothing, not even the step counts
ps = make(SHAPES)
opt = ProjectedAdam(ps, lr=1e-2, project="update", basis=make_basis(SHAPES, 4), backend="cuda")
opt.step()
before = [p.detach().clone() for p in ps]
st_before = [{key: v.clone() for key, v in opt.state[p].items()} for p in ps]
opt.step(found_inf=torch.ones((), device=dev))
torch.cuda.synchronize()
same = all(torch.equal(p, q) for p, q in zip(ps, before)) and all(
    torch.equal(opt.state[p][key], v) for p, st in zip(ps, st_before) for key, v in st.items())
ok("found_inf: params, states and step counts unchanged", same)

# CUDA graph: capture one step, replay it 3 times beside 3 eager steps of a twin; bitwise equal
for project in ("grad", "update"):
    basis = make_basis(SHAPES, 4)
    pe, pg = make(SHAPES), make(SHAPES)
    oe = ProjectedAdam(pe, lr=1e-2, project=project, basis=basis, backend="cuda")
    og = ProjectedAdam(pg, lr=1e-2, project=project, basis=basis, backend="cuda")
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        og.step()  # warm-up outside capture: creates the states
    torch.cuda.current_stream().wait_stream(s)
    oe.step()
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            og.step()
        for _ in range(3):
            graph.replay()
            oe.step()
        torch.cuda.synchronize()
        keys = ("exp_avg", "exp_avg_sq", "step")
        same = all(torch.equal(a, b) for a, b in zip(pe, pg)) and all(
            torch.equal(oe.state[a][key], og.state[b][key]) for a, b in zip(pe, pg) for key in keys)
        diff = max((a - b).abs().max().item() for a, b in zip(pe, pg))
        ok(f"CUDA graph replay == eager steps ({project}, 3 replays)", same,
           f"max |dp| {diff:.2e}, step {float(og.state[pg[0]]['step'])}")
    except Exception as e:  # a diagnostic: report and go on
        ok(f"CUDA graph capture ({project})", False, f"{type(e).__name__}: {e}")
print("FAILED:", fails) if fails else print("ALL OK")
sys.exit(1 if fails else 0)
EOF
rc=$?; result "optim on cuda" $rc
grep -E "FAIL|ALL OK|Error|error" "$OUT/optim.log" | head -30

step "bench_optim --quick (cuda)"
timeout 150 "$PY" bench/bench_optim.py --device cuda --quick >"$OUT/bench_optim.log" 2>&1
rc=$?; result "bench_optim" $rc
tail -12 "$OUT/bench_optim.log"

step "bench_project --quick"
if [ -f bench/bench_project.py ]; then
  timeout 120 "$PY" bench/bench_project.py --device cuda --quick >"$OUT/bench.log" 2>&1
  rc=$?; result "bench" $rc
  tail -30 "$OUT/bench.log"
else
  echo "    bench/bench_project.py absent: skipped" | tee -a "$OUT/summary.txt"
fi

step "bench_uno_step (cuda): uno vs surgery vs paper-faithful step cost (issue 6, the paper's machine class)"
timeout 150 "$PY" bench/bench_uno_step.py --device cuda --steps 5 --rounds 3 \
  --csv "$OUT/step_cost_cuda.csv" >"$OUT/bench_uno_step.log" 2>&1
rc=$?; result "bench_uno_step" $rc
tail -12 "$OUT/bench_uno_step.log"

step "done (status $status); logs in $OUT"
exit $status
