"""The CPU kernels' issue-20 code paths against float64 oracles (docs/kernels.md, "How the CPU kernels
reach memory speed"): the one-sweep register kernels of `inner` and `project` for k <= 4
(csrc/include/uno/sweep.h) at lengths around the lane groups, 16-bit x, thread splits and the
element-wise bits across ISA levels; `combine`'s panel-streamed (k <= 24) and blocked paths with
their non-temporal stores (aligned and unaligned outputs give the same bits); `_C.fma_peak_cpu`.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from backend_params import TOL
from uno import _backends

cpu = _backends.module("cpu")
_C = pytest.importorskip("uno._C")

# Around the lane groups (32 lanes at x86-64-v4, 16 at v3, 8 at v2; two vectors per sum for k > 1),
# a multi-chunk length, and an empty piece.
LENGTHS = [1, 7, 31, 32, 33, 63, 64, 65, 1000, 0, 300_007]


def _pieces(ns, dtype, gen, scale=1.0):
    return [(scale * torch.randn(n, generator=gen, dtype=torch.float64)).to(dtype) for n in ns]


def _basis_rows(ns, k, dtype, gen):
    """k rows over the pieces as slices of one [k, P + pad] buffer (a Basis' layout), offset 1."""
    buf = torch.randn(k, sum(ns) + 5, generator=gen, dtype=torch.float64).to(dtype)
    out, o = [], 1
    for n in ns:
        out.append(buf[:, o : o + n])
        o += n
    return out


def _oracle_inner(x, rows):
    k = rows[0].shape[0]
    d = torch.zeros(k, dtype=torch.float64)
    nn = torch.zeros((), dtype=torch.float64)
    for xx, rr in zip(x, rows):
        d += rr.double() @ xx.double()
        nn += xx.double() @ xx.double()
    return torch.cat([d, nn[None]])


@pytest.mark.parametrize("k", [1, 2, 3, 4])
@pytest.mark.parametrize(
    "x_dtype,r_dtype",
    [(torch.float32,) * 2, (torch.float64,) * 2, (torch.float16, torch.float32),
     (torch.bfloat16, torch.float32)],
    ids=["f32", "f64", "f16-f32", "bf16-f32"],
)  # fmt: skip
def test_inner_sweep_matches_oracle(k, x_dtype, r_dtype):
    gen = torch.Generator().manual_seed(10 * k)
    x = _pieces(LENGTHS, x_dtype, gen)
    rows = _basis_rows(LENGTHS, k, r_dtype, gen)
    got = cpu.inner(x, rows, False)
    want = _oracle_inner(x, rows)
    tol = TOL[torch.float64] if r_dtype == torch.float64 else dict(rtol=1e-9, atol=1e-9)
    assert torch.allclose(got, want, **tol), (got, want)


@pytest.mark.parametrize("k", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_project_sweep_matches_oracle(k, dtype):
    gen = torch.Generator().manual_seed(k)
    x = _pieces(LENGTHS, dtype, gen)
    rows = _basis_rows(LENGTHS, k, dtype, gen)
    y = torch.randn(k, generator=gen, dtype=torch.float64)
    # x - sum_j y_j row_j in float64, products added in the order j = 0 .. k-1, rounded once
    want_x = []
    for xx, rr in zip(x, rows):
        s = y[0] * rr[0].double()
        for j in range(1, k):
            s = s + y[j] * rr[j].double()
        want_x.append((xx.double() - s).to(dtype))
    out = cpu.project(x, rows, y)
    for got, want in zip(x, want_x):
        assert torch.equal(got, want)  # element-wise: the scalar code's bits exactly
    want_out = _oracle_inner(want_x, rows)
    tol = TOL[torch.float64] if dtype == torch.float64 else dict(rtol=1e-9, atol=1e-9)
    assert torch.allclose(out, want_out, **tol)


@pytest.mark.parametrize("k", [1, 3, 4])
def test_sweeps_deterministic_across_threads(k):
    """Fixed chunks per thread count: the same bits for 1, 2, 1 threads (x) and per count (sums)."""
    gen = torch.Generator().manual_seed(3)
    ns = [300_001, 17, 200_003]
    x0 = _pieces(ns, torch.float32, gen)
    rows = _basis_rows(ns, k, torch.float32, gen)
    y = torch.randn(k, generator=gen, dtype=torch.float64) * 1e-3
    before = torch.get_num_threads()
    res = []
    try:
        for th in (1, 2, 1, 2):
            torch.set_num_threads(th)
            x = [a.clone() for a in x0]
            res.append((cpu.inner(x, rows, False), cpu.project(x, rows, y), x))
    finally:
        torch.set_num_threads(before)
    for a, b in ((res[0], res[2]), (res[1], res[3])):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    for xs in (res[1][2], res[2][2], res[3][2]):  # the update is element-wise: any thread count
        assert all(torch.equal(p, q) for p, q in zip(xs, res[0][2]))


_LEVELS_SCRIPT = """
import hashlib, torch
from uno._backends import cpu as be
hx, hc = hashlib.sha256(), hashlib.sha256()
for k in (1, 2, 3, 4):
    for dt in (torch.float32, torch.float64):
        g = torch.Generator().manual_seed(k)
        x = [torch.randn(n, generator=g, dtype=dt) for n in (1, 33, 70_001)]
        rows = [torch.randn(k, n, generator=g, dtype=dt) for n in (1, 33, 70_001)]
        want = sum(r.double() @ p.double() for r, p in zip(rows, x))
        assert torch.allclose(be.inner(x, rows, False)[:k], want, rtol=1e-9, atol=1e-9)
        be.project(x, rows, torch.randn(k, generator=g, dtype=torch.float64))
        for p in x:
            hx.update(p.numpy().tobytes())
for dt in (torch.float32, torch.float64):
    for k in (16, 33):
        g = torch.Generator().manual_seed(k)
        rows = torch.randn(k, 1024 + 16 * 7 + 5, generator=g).to(dt)
        m = torch.randn(k, k, generator=g, dtype=torch.float64)
        out = torch.empty_like(rows)
        be.combine([out], [rows], m)
        tol = 1e-5 if dt == torch.float32 else 1e-11
        assert torch.allclose(out.double(), (m @ rows.double()).to(dt).double(), rtol=tol, atol=tol)
        hc.update(out.numpy().tobytes())
print(hx.hexdigest(), hc.hexdigest())
"""


def _digests(level: str) -> list[str]:
    env = dict(os.environ, UNO_CPU_ISA=level)
    res = subprocess.run([sys.executable, "-c", _LEVELS_SCRIPT], env=env, capture_output=True,
                         text=True, check=True)  # fmt: skip
    return res.stdout.split()


def test_levels_agree_with_oracle_and_elementwise_bits():
    """At every level this CPU supports (forced): inner and combine match float64 oracles;
    project's x (unfused) has the same bits at every level, combine's outputs (explicit FMAs,
    v4's non-temporal float stores vs v3's plain ones) at v3 and v4."""
    levels = [v for v in ("x86-64-v2", "x86-64-v3", "x86-64-v4")
              if v in getattr(_C, "cpu_isa_supported", [])]  # fmt: skip
    if len(levels) < 2:
        pytest.skip("this CPU or build has fewer than two x86-64 levels")
    got = {lvl: _digests(lvl) for lvl in levels}
    assert len({d[0] for d in got.values()}) == 1
    fma = [got[v][1] for v in ("x86-64-v3", "x86-64-v4") if v in got]
    assert len(set(fma)) == 1 and len(fma[0]) == 64


@pytest.mark.parametrize("k", [8, 16, 24, 25, 64])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_combine_aligned_and_unaligned_outputs_agree(k, dtype):
    """A 64-byte aligned float output takes the non-temporal stores at x86-64-v4, an output one
    element off does not: the same bits, and both equal to the float64 oracle within tolerance;
    streamed (k <= 24) and blocked (k > 24) paths, a tail shorter than a panel, in place too."""
    gen = torch.Generator().manual_seed(k)
    n = 16 * 200 + 9
    rows = torch.randn(k, n, generator=gen, dtype=torch.float64).to(dtype)
    m = torch.randn(k, k, generator=gen, dtype=torch.float64)
    aligned = torch.empty(k, n, dtype=dtype)  # torch's allocations are 64-byte aligned, ld = n
    assert aligned.data_ptr() % 64 == 0
    shifted = torch.empty(k, n + 1, dtype=dtype)[:, 1:]
    cpu.combine([aligned], [rows], m)
    cpu.combine([shifted], [rows], m)
    assert torch.equal(aligned, shifted)
    want = (m @ rows.double()).to(dtype)
    assert torch.allclose(aligned.double(), want.double(), **TOL[dtype])
    inplace = rows.clone()
    cpu.combine([inplace], [inplace], m)
    assert torch.equal(inplace, aligned)


def test_combine_streamed_and_blocked_deterministic_across_threads():
    gen = torch.Generator().manual_seed(5)
    for k in (16, 33):
        rows = [torch.randn(k, 100_003, generator=gen), torch.randn(k, 4_099, generator=gen)]
        m = torch.randn(k, k, generator=gen, dtype=torch.float64)
        outs = []
        before = torch.get_num_threads()
        try:
            for th in (1, 2):
                torch.set_num_threads(th)
                o = [torch.empty_like(r) for r in rows]
                cpu.combine(o, rows, m)
                outs.append(o)
        finally:
            torch.set_num_threads(before)
        assert all(torch.equal(a, b) for a, b in zip(*outs)), k


def test_fma_peak_counts_and_refuses_bad_arguments():
    lanes = {"x86-64-v4": 8, "x86-64-v3": 4}.get(_C.cpu_isa, None)
    for th in (1, 2):
        got = _C.fma_peak_cpu(1000, th)
        assert got > 0 and got % (1000 * th) == 0
        if lanes is not None:  # 2 * kTileRows chains of kVecD lanes: 16 x 8 at v4, 12 x 4 at v3
            assert got == 1000 * th * {8: 16 * 8, 4: 12 * 4}[lanes]
    with pytest.raises(ValueError, match="iters"):
        _C.fma_peak_cpu(0, 1)
    with pytest.raises(ValueError, match="num_threads"):
        _C.fma_peak_cpu(10, 0)
