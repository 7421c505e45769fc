"""The CUDA backend's primitives against the reference on the device (``-m gpu``; skipped without CUDA).

Wider than the backend-parametrized tests: every dtype pair the kernels take (half-precision x with
float32 rows too), k across the row-tile boundaries (1 … 40), one large piece, mixed sizes with empty
pieces, 150 small pieces (several launch groups), rows as slices of one [k, P] buffer (a Basis, row
stride P) or as separate (k, n) blocks; combine out of place and in place; determinism; a projection
captured in a CUDA graph and replayed.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from uno import _backends

pytestmark = pytest.mark.gpu

F16, BF16, F32, F64 = torch.float16, torch.bfloat16, torch.float32, torch.float64
#: Largest error allowed, relative to max(1, max |want|), per dtype of the rounded result.
TOL = {F32: 1e-5, F64: 1e-12, F16: 3e-3, BF16: 2e-2}
#: (x dtype, rows dtype) pairs of the kernels' dtype policy.
PAIRS = [(F32, F32), (F64, F64), (F16, F16), (BF16, BF16), (F16, F32), (BF16, F32)]
SIZES = {
    "one": [100_003],
    "mixed": [0, 1, 7, 1025, 4096, 33_333, 0, 250_001],
    "many": [((i * 37) % 300) + (i % 3 == 0) * 5000 for i in range(150)],
}


def _cases():
    for (xd, rd), k, shape, layout in itertools.product(
        PAIRS, [1, 3, 8, 17, 33, 40], SIZES, ["rows", "basis"]
    ):
        if shape == "many" and (k not in (3, 33) or xd != F32):
            continue
        if shape == "one" and k in (17, 40) and xd != F32:
            continue
        tag = f"{str(xd)[6:]}-{str(rd)[6:]}-k{k}-{shape}-{layout}"
        yield pytest.param(xd, rd, k, SIZES[shape], layout == "basis", id=tag)


CASES = list(_cases())


@pytest.fixture(scope="module")
def cu():
    info = _backends.info("cuda")
    assert "cuda" in info.devices, f"a CUDA device but no cuda backend: {info.reason}"
    return _backends.module("cuda")


@pytest.fixture(scope="module")
def ref():
    return _backends.module("reference")


def _close(got, want, tol):
    got, want = got.double(), want.double()
    err = (got - want).abs().max().item() if want.numel() else 0.0
    scale = max(1.0, want.abs().max().item() if want.numel() else 1.0)
    assert err <= tol * scale, f"max error {err:.3e} > {tol:.1e} x {scale:.2e}"


def _flat(pieces):
    return torch.cat([p.reshape(-1).double() for p in pieces])


def _make(sizes, k, xd, rd, basis_layout, seed=0):
    torch.manual_seed(seed)
    dev = torch.device("cuda")
    x = [torch.randn(n, device=dev, dtype=xd) for n in sizes]
    if basis_layout:  # rows[t] = Q[:, o_t : o_t + n_t] of one [k, P + 3] buffer (row stride != n_t)
        q = torch.randn(k, sum(sizes) + 3, device=dev, dtype=rd)
        rows, o = [], 1
        for n in sizes:
            rows.append(q[:, o : o + n])
            o += n
    else:
        rows = [torch.randn(k, n, device=dev, dtype=rd) for n in sizes]
    return x, rows


def _result_tol(xd, rd):
    return TOL[xd] if xd in (F16, BF16) else TOL[rd]


@pytest.mark.parametrize("xd,rd,k,sizes,basis_layout", CASES)
def test_inner(cu, ref, xd, rd, k, sizes, basis_layout):
    x, rows = _make(sizes, k, xd, rd, basis_layout)
    for with_gram in (False, True):
        _close(cu.inner(x, rows, with_gram), ref.inner(x, rows, with_gram), TOL[rd] * 10)
    _close(cu.inner(None, rows, True), ref.inner(None, rows, True), TOL[rd] * 10)


@pytest.mark.parametrize("xd,rd,k,sizes,basis_layout", CASES)
def test_project(cu, ref, xd, rd, k, sizes, basis_layout):
    x, rows = _make(sizes, k, xd, rd, basis_layout)
    y = torch.randn(k, device="cuda", dtype=F64) * 0.1
    x2 = [t.clone() for t in x]
    tol = _result_tol(xd, rd)
    _close(cu.project(x, rows, y), ref.project(x2, rows, y), tol * 10)
    _close(_flat(x), _flat(x2), tol)  # the projected x, written in place


@pytest.mark.parametrize(
    "xd,rd,k,sizes,basis_layout", [c for c in CASES if c.values[0] == c.values[1]]
)
def test_combine(cu, ref, xd, rd, k, sizes, basis_layout):
    _, rows = _make(sizes, k, xd, rd, basis_layout)
    tol = TOL[rd] * 10
    for r in (1, k):
        m = torch.randn(r, k, device="cuda", dtype=F64)
        got = [torch.empty(r, n, device="cuda", dtype=rd) for n in sizes]
        want = [torch.empty(r, n, device="cuda", dtype=rd) for n in sizes]
        cu.combine(got, rows, m)
        ref.combine(want, rows, m)
        _close(_flat(got), _flat(want), tol)
    # in place: out is the first r <= k rows of rows' own memory
    m = torch.randn(max(1, k - 1), k, device="cuda", dtype=F64)
    r = m.shape[0]
    want = [torch.empty(r, n, device="cuda", dtype=rd) for n in sizes]
    ref.combine(want, rows, m)
    cu.combine([t[:r] for t in rows], rows, m)
    _close(_flat([t[:r] for t in rows]), _flat(want), tol)


def _big_case():
    return _make([3_000_001, 17, 65_536], 5, F32, F32, True, seed=1)


def test_inner_is_deterministic(cu):
    x, rows = _big_case()
    assert torch.equal(cu.inner(x, rows, True), cu.inner(x, rows, True))


def test_project_in_cuda_graph(cu, ref):
    """A projection captured in a CUDA graph and replayed gives the eager reference result."""
    x, rows = _big_case()
    y = torch.randn(5, device="cuda", dtype=F64) * 0.1
    xs = [t.clone() for t in x]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        cu.project(xs, rows, y)  # warm-up outside the capture
    torch.cuda.current_stream().wait_stream(side)
    xs = [t.clone() for t in x]
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        res = cu.project(xs, rows, y)
    for t, t0 in zip(xs, x):
        t.copy_(t0)
    graph.replay()
    torch.cuda.synchronize()
    x2 = [t.clone() for t in x]
    _close(res, ref.project(x2, rows, y), 1e-4)
    _close(_flat(xs), _flat(x2), 1e-4)
