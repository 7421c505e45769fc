"""Row tables (k separate vectors read in place, docs/kernels.md) and combine's blocked micro-kernel.

The CPU kernels take a row set either as one pointer per piece with a row stride, or as a table of
one pointer per (piece, row). The table reads the same elements in the same order, so every result
is bit-identical to the stacked blocks'; these tests hold the two layouts and the float64 oracle
against each other, and the C++ entry points' refusals of malformed tables.
"""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import HealthCheck, given, settings

from backend_params import TOL
from uno import _backends
from uno._backends._rowtable import RowTable

cpu = pytest.importorskip("uno._backends.cpu")
_C = pytest.importorskip("uno._C")


def _vectors(ns, k, dtype, gen, *, transposed=False):
    """k vectors as separate tensors (pieces of sizes ns); transposed: non-contiguous pieces."""
    out = []
    for _ in range(k):
        v = []
        for n in ns:
            x = torch.randn(n, generator=gen, dtype=torch.float64).to(dtype)
            v.append(x.view(1, n).t() if transposed else x)  # (n, 1): a non-contiguous layout
        out.append(v)
    return out


def _table(vecs):
    return RowTable.of(vecs, [p.shape for p in vecs[0]], "v")


@given(
    ns=st.lists(st.integers(0, 300), min_size=1, max_size=5),
    k=st.integers(2, 7),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_table_is_bit_identical_to_stacked(ns, k, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    vecs = _vectors(ns, k, dtype, gen)
    table = _table(vecs)
    stacked = table.stacked()
    x = [torch.randn(n, generator=gen, dtype=torch.float64).to(dtype) for n in ns]
    assert torch.equal(cpu.inner(x, table, True), cpu.inner(x, stacked, True))
    y = torch.randn(k, generator=gen, dtype=torch.float64)
    xa, xb = [t.clone() for t in x], [t.clone() for t in x]
    assert torch.equal(cpu.project(xa, table, y), cpu.project(xb, stacked, y))
    assert all(torch.equal(a, b) for a, b in zip(xa, xb))
    m = torch.randn(k - 1, k, generator=gen, dtype=torch.float64)
    oa = [torch.empty(k - 1, n, dtype=dtype) for n in ns]
    ob = [torch.empty(k - 1, n, dtype=dtype) for n in ns]
    cpu.combine(oa, table, m)
    cpu.combine(ob, stacked, m)
    assert all(torch.equal(a, b) for a, b in zip(oa, ob))


def test_table_keeps_separate_vectors_in_place():
    gen = torch.Generator().manual_seed(0)
    vecs = _vectors([5, 7], 3, torch.float32, gen)
    table = _table(vecs)
    assert table.ptrs == [vecs[j][t].data_ptr() for t in range(2) for j in range(3)]
    with pytest.raises(TypeError, match="read-only"):
        table.append(torch.zeros(1))


def test_table_of_non_contiguous_pieces():
    gen = torch.Generator().manual_seed(1)
    vecs = _vectors([6, 9], 3, torch.float64, gen, transposed=True)
    table = _table(vecs)
    x = [torch.randn(6, 1, dtype=torch.float64), torch.randn(9, 1, dtype=torch.float64)]
    want = torch.stack([torch.cat([(p.reshape(-1) * xx.reshape(-1)) for p, xx in zip(v, x)]).sum()
                        for v in vecs])  # fmt: skip
    got = cpu.inner([t.reshape(-1) for t in x], table, False)
    assert torch.allclose(got[:3], want, **TOL[torch.float64])


@pytest.mark.parametrize("fn", ["inner_cpu", "project_cpu"])
def test_c_refuses_malformed_tables(fn):
    x = torch.randn(4, dtype=torch.float64)
    rows = [torch.randn(4, dtype=torch.float64) for _ in range(3)]
    y = torch.zeros(3, dtype=torch.float64)
    out = torch.empty(10, dtype=torch.float64)
    ptrs = [r.data_ptr() for r in rows]
    f = getattr(_C, fn)
    mid = [] if fn == "inner_cpu" else [y.data_ptr()]
    args = lambda p: (  # noqa: E731
        [x.data_ptr()], p, [4], [4], 3, *([False] if fn == "inner_cpu" else []), *mid, 1, 1,
        out.data_ptr(), 1,
    )  # fmt: skip
    snap = x.clone()
    with pytest.raises(ValueError, match="differ in length"):
        f(*args(ptrs[:2]))
    with pytest.raises(ValueError, match="row 1 has a null data pointer"):
        f(*args([ptrs[0], 0, ptrs[2]]))
    assert torch.equal(x, snap)  # refused before any write


def test_optim_step_refuses_tables():
    """optim_step reads a Basis (strided rows) only: a T * k pointer list is an error there."""
    from uno._abi import KIND_SGD, PHASE_GRAD_COEF, StepArgs

    p = [torch.randn(4)]
    g = [torch.randn(4)]
    a = StepArgs(p, g, [], [], [], [], [torch.randn(2, 4)], None, None, None, KIND_SGD,
                 PHASE_GRAD_COEF, [0.1, 0.0, 0.0, 0.0], 0)  # fmt: skip
    from uno._backends._layout import step_kwargs

    kw, _keep = step_kwargs(a, torch.device("cpu"))
    kw["row_ptrs"] = [kw["row_ptrs"][0], kw["row_ptrs"][0] + 16]
    out = torch.zeros(2, dtype=torch.float64)
    with pytest.raises(ValueError, match="differ in length"):
        _C.optim_step_cpu(**kw, out_ptr=out.data_ptr(), num_threads=1)


# -- combine's register-blocked micro-kernel (k > 4) ------------------------------------------------
@pytest.mark.parametrize("k", [5, 8, 16, 33, 64])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("inplace", [False, True], ids=["out", "inplace"])
def test_blocked_combine_matches_oracle(k, dtype, inplace):
    gen = torch.Generator().manual_seed(k)
    ns = [1, 31, 3000 + 5, 0, 17]  # tails shorter than a tile, blocks longer than one
    total = sum(ns) + 3
    buf = torch.randn(k, total, generator=gen, dtype=torch.float64).to(dtype)
    rows, o = [], 3
    for n in ns:
        rows.append(buf[:, o : o + n])
        o += n
    for r in sorted({1, k // 2, k - 1, k}):
        m = torch.randn(r, k, generator=gen, dtype=torch.float64)
        src = [rr.clone() for rr in rows]
        want = [(m @ rr.double()) for rr in src]
        out = [rr[:r] for rr in rows] if inplace else [torch.empty(r, n, dtype=dtype) for n in ns]
        cpu.combine(out, rows, m)
        for oo, w in zip(out, want):
            assert torch.allclose(oo.double(), w.to(dtype).double(), **TOL[dtype])
        if inplace:  # the rows past r are untouched
            for rr, s in zip(rows, src):
                assert torch.equal(rr[r:], s[r:])
            for rr, s in zip(rows, src):
                rr.copy_(s)


def test_blocked_combine_is_deterministic_across_threads():
    """Element-wise outputs: the same bits for every thread count (and run to run)."""
    gen = torch.Generator().manual_seed(7)
    rows = [torch.randn(16, 300_001, generator=gen)]
    m = torch.randn(16, 16, generator=gen, dtype=torch.float64)
    outs = []
    before = torch.get_num_threads()
    try:
        for th in (1, 2, 1):
            torch.set_num_threads(th)
            o = [torch.empty(16, 300_001)]
            _backends.module("cpu").combine(o, rows, m)
            outs.append(o[0])
    finally:
        torch.set_num_threads(before)
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


_ISA_SCRIPT = """
import hashlib, torch
from uno._backends import cpu as be
g = torch.Generator().manual_seed(0)
rows = torch.randn(16, 1007, generator=g, dtype=torch.float64)
m = torch.randn(16, 16, generator=g, dtype=torch.float64)
out = torch.empty(16, 1007, dtype=torch.float64)
be.combine([out], [rows], m)
print(hashlib.sha256(out.numpy().tobytes()).hexdigest())
"""


def test_blocked_combine_same_bits_at_v3_and_v4():
    """Explicit FMAs at both levels (docs/kernels.md): the micro-kernel's float64 outputs agree."""
    import os
    import subprocess
    import sys

    if not {"x86-64-v3", "x86-64-v4"} <= set(getattr(_C, "cpu_isa_supported", [])):
        pytest.skip("this CPU or build lacks x86-64-v3 or v4")
    digests = []
    for level in ("v3", "v4"):
        env = dict(os.environ, UNO_CPU_ISA=level)
        res = subprocess.run([sys.executable, "-c", _ISA_SCRIPT], env=env, capture_output=True,
                             text=True, check=True)  # fmt: skip
        digests.append(res.stdout.strip())
    assert digests[0] == digests[1] and len(digests[0]) == 64
