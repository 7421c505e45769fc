"""uno.orthonormalize and uno.Basis: orthonormality, span, rank rule, growth, every backend."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import uno
from backend_params import BACKEND_DEVICES, dtypes_for
from helpers import flat64, oracle_project, rand_pieces


def _q(basis):
    return torch.stack([flat64(basis.vector(j)) for j in range(basis.k)])


def _orth_err(basis):
    q = _q(basis)
    return float((q @ q.T - torch.eye(basis.k, dtype=torch.float64)).abs().max())


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
def test_orthonormal_and_same_span(backend, device):
    gen = torch.Generator().manual_seed(0)
    shapes = [(31,), (6, 5), (0,), (2, 3, 4)]
    for dtype in dtypes_for(backend, device):
        vecs = [rand_pieces(shapes, dtype, device, gen) for _ in range(6)]
        b = uno.orthonormalize(vecs, backend=backend)
        assert b.k == 6
        expect_dtype = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
        assert b.dtype == expect_dtype and b.device.type == device
        eps = torch.finfo(expect_dtype).eps
        assert _orth_err(b) <= 20 * eps * math.sqrt(6), dtype
        # Every input vector lies in the span of the basis.
        for v in vecs:
            r = oracle_project(v, [b.vector(j) for j in range(b.k)])
            assert float(r.norm()) <= 50 * torch.finfo(dtype).eps * float(flat64(v).norm())


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    n=st.integers(1, 97),
    k=st.integers(1, 64),
    dep=st.integers(0, 3),
    seed=st.integers(0, 2**31 - 1),
)
def test_rank_rule_hypothesis(backend, device, n, k, dep, seed):
    """k random vectors in dimension n plus exact combinations: rank = min(k, n)."""
    gen = torch.Generator().manual_seed(seed)
    shapes = [(n,)]
    vecs = [rand_pieces(shapes, torch.float64, device, gen) for _ in range(k)]
    for i in range(dep):
        a, b = vecs[i % k], vecs[(i + 1) % k]
        vecs.append([a[0] * 0.5 - b[0] * 2.0])
    b = uno.orthonormalize(vecs, backend=backend)
    assert b.k == min(k, n)
    assert _orth_err(b) <= 1e-12


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
def test_ill_conditioned_float32(backend, device):
    gen = torch.Generator().manual_seed(2)
    p, k = 500, 6
    u, _ = torch.linalg.qr(torch.randn(p, k, generator=gen, dtype=torch.float64))
    s = torch.logspace(0, -6, k, dtype=torch.float64)
    v = (u * s).T.to(torch.float32)
    b = uno.orthonormalize([v[j].to(device) for j in range(k)], backend=backend)
    assert b.k == k
    assert _orth_err(b) <= 20 * torch.finfo(torch.float32).eps * math.sqrt(k)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_second_pass_only_when_needed(monkeypatch, dtype):
    """CholeskyQR2 skips its in-place second transform when Q₁ is already orthonormal to working
    precision (well-conditioned vectors); with a condition number of 1e3 a float64 Q₁ is not (its
    error is ≈ cond²·eps), and the second pass runs. Every result is orthonormal."""
    from uno import _backends

    be = _backends.module("reference")
    calls = []
    orig = be.combine

    def counting(out, rows, m):
        calls.append(int(m.shape[0]))
        return orig(out, rows, m)

    monkeypatch.setattr(be, "combine", counting)
    gen = torch.Generator().manual_seed(7)
    p, k = 4000, 5
    well = torch.randn(k, p, generator=gen, dtype=torch.float64)
    u, _ = torch.linalg.qr(torch.randn(p, k, generator=gen, dtype=torch.float64))
    w, _ = torch.linalg.qr(torch.randn(k, k, generator=gen, dtype=torch.float64))
    mixed = w @ (u * torch.logspace(0, -3, k, dtype=torch.float64)).T  # cond 1e3, not orthogonal
    tol = 20 * torch.finfo(dtype).eps * math.sqrt(k)
    b = uno.orthonormalize([v.to(dtype) for v in well], backend="reference")
    assert len(calls) == 1 and _orth_err(b) <= tol
    calls.clear()
    b = uno.orthonormalize([v.to(dtype) for v in mixed], backend="reference")
    assert _orth_err(b) <= tol and b.k == k
    if dtype == torch.float64:
        assert len(calls) == 2


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
def test_append_grows_in_place(backend, device):
    gen = torch.Generator().manual_seed(3)
    shapes = [(10, 3), (7,)]
    b = uno.Basis.empty(
        rand_pieces(shapes, torch.float32, device, gen), capacity=2, backend=backend
    )
    assert b.k == 0
    vecs = [rand_pieces(shapes, torch.float32, device, gen) for _ in range(4)]
    for j, v in enumerate(vecs):
        snap = [p.clone() for p in v]
        assert b.append_(v)
        assert b.k == j + 1
        assert all(torch.equal(x, y) for x, y in zip(v, snap)), "append_ modified its argument"
    assert b.capacity >= 4
    assert _orth_err(b) <= 1e-5
    dep = [x - 3 * y for x, y in zip(vecs[0], vecs[2])]
    buf = b.buffer[: b.k].clone()
    assert not b.append_(dep)
    assert b.k == 4 and torch.equal(b.buffer[:4], buf)
    assert not b.append_([torch.zeros(10, 3, device=device), torch.zeros(7, device=device)])
    # Reused across many project_ calls without recomputation.
    g = rand_pieces(shapes, torch.float32, device, gen)
    uno.project_(g, b, backend=backend)
    torch.testing.assert_close(
        flat64(g), oracle_project([p for p in g], vecs), rtol=1e-4, atol=1e-5
    )


def test_basis_api():
    vecs = [[torch.randn(3, 2), torch.randn(4)] for _ in range(3)]
    b = uno.orthonormalize(vecs, capacity=5)
    assert b.k == 3 and b.capacity == 5 and len(b) == 3
    assert b.shapes == (torch.Size([3, 2]), torch.Size([4]))
    assert b.offsets == (0, 6) and b.numel == 10
    rows = b.rows()
    assert [r.shape for r in rows] == [torch.Size([3, 6]), torch.Size([3, 4])]
    assert rows[1].stride() == (10, 1)
    assert b.vector(1)[0].shape == (3, 2)
    with pytest.raises(IndexError):
        b.vector(3)
    assert "k=3" in repr(b)
    c = b.clone()
    c.append_([torch.randn(3, 2), torch.randn(4)])
    assert b.k == 3 and c.k == 4
    g = uno.gram(b)
    torch.testing.assert_close(g, torch.eye(3, dtype=torch.float64), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="shapes"):
        b.append_([torch.randn(6), torch.randn(4)])
    with pytest.raises(TypeError, match="float32 or float64"):
        uno.Basis.empty(torch.randn(3), dtype=torch.float16)
    with pytest.raises(ValueError, match="non-empty"):
        uno.orthonormalize([])
    with pytest.raises(TypeError, match="float64"):
        uno.orthonormalize([torch.randn(3, dtype=torch.float64)], dtype=torch.float32)


def test_all_zero_vectors_give_empty_basis():
    b = uno.orthonormalize([torch.zeros(5), torch.zeros(5)])
    assert b.k == 0
    g = torch.randn(5)
    snap = g.clone()
    uno.project_(g, b)
    assert torch.equal(g, snap)


def test_opcheck_orthonormalize():
    rows = [torch.randn(3, 12), torch.randn(3, 5)]
    torch.library.opcheck(
        torch.ops.uno.orthonormalize.default,
        (rows, 1e-6, torch.float32, ""),
        test_utils=("test_schema", "test_autograd_registration", "test_faketensor"),
    )


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
def test_certified_first_pass_skips_the_measuring_pass(monkeypatch, backend, device):
    """Float32 vectors whose Gram proves Q₁ orthonormal (uno.ops._small.orthogonality_bound): one
    Gram pass in all (the vectors'); ill-conditioned or float64 vectors: a second one measures Q₁.
    Every result is orthonormal to working precision."""
    from uno import _backends

    be = _backends.get(backend, torch.device(device))
    grams = []
    orig = be.inner

    def counting(x, rows, with_gram):
        grams.append(with_gram and x is None)
        return orig(x, rows, with_gram)

    monkeypatch.setattr(be, "inner", counting)
    gen = torch.Generator().manual_seed(3)
    shapes = [(300, 7), (11,), (2, 50)]
    for dtype, cond, passes in [
        (torch.float32, 1.0, 1),
        (torch.float32, 1e4, 2),
        (torch.float64, 1.0, 2),
    ]:
        vecs = [rand_pieces(shapes, torch.float64, "cpu", gen) for _ in range(4)]
        vecs[1] = [a + b / cond for a, b in zip(vecs[0], vecs[1])]
        grams.clear()
        b = uno.orthonormalize([[p.to(dtype).to(device) for p in v] for v in vecs], backend=backend)
        assert b.k == 4 and sum(grams) == passes, (dtype, cond)
        eps = torch.finfo(dtype).eps
        # certified: within pass_tol (2·eps·√r), as a measured Q₁ that skips step 4 would be
        tol = 2 * eps * math.sqrt(4) if passes == 1 else 20 * eps * math.sqrt(4)
        assert _orth_err(b) <= tol, (dtype, cond)


def _peak_bytes(prof) -> int:
    """The most bytes torch had allocated at once inside the profiled block (its allocations and
    frees in time order, each counted once, by the op that made it: an op's ``cpu_memory_usage``
    includes its children's, e.g. ``aten::zeros`` over ``aten::empty``)."""
    live = peak = 0
    events = [e for e in prof.events() if e.self_cpu_memory_usage]
    for e in sorted(events, key=lambda e: e.time_range.start):
        live += e.self_cpu_memory_usage
        peak = max(peak, live)
    return peak


@pytest.mark.parametrize("case", ["well conditioned", "ill conditioned", "a duplicate"])
@pytest.mark.parametrize(
    "backend,device", [p for p in BACKEND_DEVICES if p.values == ("cpu", "cpu")]
)  # fmt: skip
def test_no_allocation_proportional_to_p_beyond_the_result(backend, device, case):
    """Separate vectors are read where they lie (the row table): at no moment does the call hold
    more than one result-sized buffer — no ``cat``/``stack`` of the inputs and no Q₁ beside Q₂,
    whether the first pass is certified, a row is dropped, or CholeskyQR gives way to Gram-Schmidt
    (the ill-conditioned case here). torch's profiler sees torch's allocations; the C++ kernels allocate nothing that
    grows with P."""
    from torch.profiler import ProfilerActivity, profile

    gen = torch.Generator().manual_seed(0)
    vecs = [
        [torch.randn(400, 500, generator=gen), torch.randn(1000, generator=gen)] for _ in range(8)
    ]
    if case == "ill conditioned":
        vecs[1] = [a + 1e-5 * b for a, b in zip(vecs[0], vecs[1])]
    elif case == "a duplicate":
        vecs[2] = [a.clone() for a in vecs[0]]
    p = 400 * 500 + 1000
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        b = uno.orthonormalize(vecs, backend=backend)
    assert b.k == (7 if case == "a duplicate" else 8)
    assert b.buffer.numel() == b.k * p
    big = [e.self_cpu_memory_usage for e in prof.events() if e.self_cpu_memory_usage >= p]
    assert big and all(n in (8 * p * 4, b.k * p * 4) for n in big), big
    assert b.k * p * 4 <= _peak_bytes(prof) < b.k * p * 4 + 64 * 1024
