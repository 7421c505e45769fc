"""The three kernel primitives (docs/kernels.md) of every backend against the reference.

The ops tests exercise the primitives through `uno.project_` & co.; these tests pin the contract itself:
row strides (a Basis slice vs a user's (k, *shape) tensor), zero-size pieces, half-precision x with
float32 rows, in-place `combine`, determinism, thread counts, and the errors of the adapters.
"""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import HealthCheck, given, settings

from conftest import BACKEND_DEVICES, TOL, dtypes_for
from uno import _backends
from uno._backends import reference

FAST = [p for p in BACKEND_DEVICES if p.values[0] != "reference"]


def _rows_for(ns, k, dtype, device, *, strided: bool, gen):
    """k rows over pieces of sizes ns: slices of one [k, P + pad] buffer (strided) or (k, n_t) blocks."""
    if strided:
        total = sum(ns) + 7  # a row stride that is not the piece size
        buf = torch.randn(k, total, generator=gen, dtype=torch.float64).to(device, dtype)
        out, o = [], 3
        for n in ns:
            out.append(buf[:, o : o + n])
            o += n
        return out
    return [torch.randn(k, n, generator=gen, dtype=torch.float64).to(device, dtype) for n in ns]


def _x_for(ns, dtype, device, gen):
    return [torch.randn(n, generator=gen, dtype=torch.float64).to(device, dtype) for n in ns]


def _row_dtype(x_dtype):
    return torch.float32 if x_dtype in (torch.float16, torch.bfloat16) else x_dtype


SHAPES = [[1], [0, 5], [37, 0, 129, 1], [4096 + 3, 11, 1537]]


@pytest.mark.parametrize("backend,device", FAST)
@pytest.mark.parametrize("ns", SHAPES, ids=lambda s: "-".join(map(str, s)))
@pytest.mark.parametrize("k", [1, 3, 8])
@pytest.mark.parametrize("strided", [False, True], ids=["blocks", "strided"])
def test_inner_matches_reference(backend, device, ns, k, strided):
    mod = _backends.module(backend)
    gen = torch.Generator().manual_seed(k * 7 + len(ns))
    for dtype in dtypes_for(backend, device):
        rows = _rows_for(ns, k, _row_dtype(dtype), device, strided=strided, gen=gen)
        x = _x_for(ns, dtype, device, gen)
        for with_gram in (False, True):
            for xx in (x, None):
                got = mod.inner(xx, rows, with_gram).cpu()
                want = reference.inner(xx, rows, with_gram).cpu()
                assert got.dtype == torch.float64 and got.shape == want.shape
                scale = want.abs().max().clamp_min(1.0)
                assert torch.allclose(got, want, rtol=1e-10, atol=1e-10 * float(scale)), (
                    f"{dtype} with_gram={with_gram} x={'yes' if xx else 'None'}: "
                    f"max err {(got - want).abs().max():.3e}"
                )


@pytest.mark.parametrize("backend,device", FAST)
@pytest.mark.parametrize("ns", SHAPES, ids=lambda s: "-".join(map(str, s)))
@pytest.mark.parametrize("k", [1, 4])
@pytest.mark.parametrize("strided", [False, True], ids=["blocks", "strided"])
def test_project_matches_reference(backend, device, ns, k, strided):
    mod = _backends.module(backend)
    gen = torch.Generator().manual_seed(100 + k + len(ns))
    for dtype in dtypes_for(backend, device):
        rows = _rows_for(ns, k, _row_dtype(dtype), device, strided=strided, gen=gen)
        rows_before = [r.clone() for r in rows]
        x = _x_for(ns, dtype, device, gen)
        x_ref = [t.clone() for t in x]
        y = torch.randn(k, generator=gen, dtype=torch.float64).to(device)
        got = mod.project(x, rows, y).cpu()
        want = reference.project(x_ref, rows, y).cpu()
        tol = TOL[dtype]
        for a, b in zip(x, x_ref):
            # Both compute in float64 and round once: at most one ulp apart.
            assert torch.allclose(a.double(), b.double(), **tol)
        # The returned measurements are of the stored x (compare against what the kernel stored).
        measured = reference.inner(x, rows, False).cpu()
        scale = measured.abs().max().clamp_min(1.0)
        assert torch.allclose(got, measured, rtol=1e-10, atol=1e-10 * float(scale))
        assert torch.allclose(
            got, want, rtol=tol["rtol"] * 10, atol=tol["atol"] * 10 * float(scale)
        )
        for r, r0 in zip(rows, rows_before):
            assert torch.equal(r, r0), "project must not modify the rows"


@pytest.mark.parametrize("backend,device", FAST)
@pytest.mark.parametrize("ns", SHAPES, ids=lambda s: "-".join(map(str, s)))
@pytest.mark.parametrize("k,r", [(1, 1), (2, 1), (2, 2), (3, 2), (4, 4), (5, 3), (6, 6), (9, 5)])
@pytest.mark.parametrize("inplace", [False, True], ids=["out", "inplace"])
def test_combine_matches_reference(backend, device, ns, k, r, inplace):
    mod = _backends.module(backend)
    gen = torch.Generator().manual_seed(200 + k * r + len(ns))
    for dtype in (torch.float32, torch.float64):
        rows = _rows_for(ns, k, dtype, device, strided=True, gen=gen)
        m = torch.randn(r, k, generator=gen, dtype=torch.float64).to(device)
        want = [(m @ rr.double()).to(dtype) for rr in rows]
        if inplace:
            out = [rr[:r] for rr in rows]  # the first r rows of the same memory
        else:
            out = [torch.empty(r, rr.shape[1], dtype=dtype, device=device) for rr in rows]
        mod.combine(out, rows, m)
        for o, w in zip(out, want):
            assert torch.allclose(o.double(), w.double(), **TOL[dtype])


@pytest.mark.parametrize("backend,device", FAST)
def test_reductions_deterministic(backend, device):
    mod = _backends.module(backend)
    gen = torch.Generator().manual_seed(5)
    # The Triton interpreter is slow: a smaller vector there (still several programs).
    ns = [10_003, 17, 5_000] if (backend, device) == ("triton", "cpu") else [100_003, 17, 50_000]
    rows = _rows_for(ns, 4, torch.float32, device, strided=True, gen=gen)
    x = _x_for(ns, torch.float32, device, gen)
    first = mod.inner(x, rows, True)
    for _ in range(3):
        assert torch.equal(mod.inner(x, rows, True), first)


def test_cpu_backend_honours_thread_count():
    if "cpu" not in _backends.info("cpu").devices:
        pytest.skip(_backends.info("cpu").reason)
    mod = _backends.module("cpu")
    gen = torch.Generator().manual_seed(9)
    ns = [300_001, 7, 123_457]
    rows = _rows_for(ns, 3, torch.float32, "cpu", strided=True, gen=gen)
    x = _x_for(ns, torch.float32, "cpu", gen)
    want = reference.inner(x, rows, True)
    old = torch.get_num_threads()
    try:
        results = {}
        for n in (1, 2, 3, 8):
            torch.set_num_threads(n)
            results[n] = mod.inner(x, rows, True)
            assert torch.equal(mod.inner(x, rows, True), results[n]), "not deterministic"
            assert torch.allclose(results[n], want, rtol=1e-11, atol=1e-9)
    finally:
        torch.set_num_threads(old)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ns=st.lists(st.integers(0, 300), min_size=1, max_size=6),
    k=st.integers(1, 9),
    seed=st.integers(0, 2**16),
)
def test_cpu_primitives_property(ns, k, seed):
    """Hypothesis over piece lists: inner/project/combine of the cpu backend equal the reference."""
    if "cpu" not in _backends.info("cpu").devices:
        pytest.skip(_backends.info("cpu").reason)
    mod = _backends.module("cpu")
    gen = torch.Generator().manual_seed(seed)
    rows = _rows_for(ns, k, torch.float64, "cpu", strided=bool(seed % 2), gen=gen)
    x = _x_for(ns, torch.float64, "cpu", gen)
    assert torch.allclose(mod.inner(x, rows, True), reference.inner(x, rows, True), atol=1e-10)
    y = torch.randn(k, generator=gen, dtype=torch.float64)
    x2 = [t.clone() for t in x]
    got = mod.project(x, rows, y)
    want = reference.project(x2, rows, y)
    assert torch.allclose(got, want, atol=1e-10)
    for a, b in zip(x, x2):
        assert torch.allclose(a, b, atol=1e-12)
    m = torch.randn(k, k, generator=gen, dtype=torch.float64)
    want_c = [m @ r for r in rows]
    mod.combine(rows, rows, m)
    for a, b in zip(rows, want_c):
        assert torch.allclose(a, b, atol=1e-11)


# ---- adapter errors: a clear exception before any write ----


@pytest.mark.parametrize("backend,device", [p for p in FAST if p.values[1] == "cpu"])
def test_adapter_rejects_bad_layouts(backend, device):
    mod = _backends.module(backend)
    rows = [torch.randn(2, 10)]
    x = [torch.randn(10)]
    y = torch.zeros(2, dtype=torch.float64)
    before = x[0].clone()
    with pytest.raises((ValueError, TypeError)):
        mod.project([torch.randn(20)[::2]], rows, y)  # non-contiguous x
    with pytest.raises((ValueError, TypeError)):
        mod.project([torch.randn(9)], rows, y)  # size mismatch
    with pytest.raises((ValueError, TypeError)):
        mod.project(x, [torch.randn(10, 2).T], y)  # column stride != 1
    with pytest.raises((ValueError, TypeError)):
        mod.project([x[0].double()], rows, y)  # float64 x with float32 rows
    with pytest.raises((ValueError, TypeError)):
        mod.inner([torch.randn(10)], [torch.randn(2, 10).half()], False)  # float32 x, half rows
    assert torch.equal(x[0], before)


def test_cpu_adapter_rejects_int_and_mixed_dtypes():
    if "cpu" not in _backends.info("cpu").devices:
        pytest.skip(_backends.info("cpu").reason)
    mod = _backends.module("cpu")
    with pytest.raises(TypeError, match="dtype"):
        mod.inner([torch.ones(4, dtype=torch.int32)], [torch.ones(1, 4, dtype=torch.int32)], False)
    with pytest.raises(TypeError, match="mixes dtypes"):
        mod.inner(None, [torch.ones(1, 4), torch.ones(1, 4, dtype=torch.float64)], True)
    with pytest.raises(ValueError, match="empty"):
        mod.inner(None, [], True)
    with pytest.raises(ValueError, match=r"\(r, 2\)"):
        mod.combine([torch.ones(1, 4)], [torch.ones(2, 4)], torch.ones(1, 3, dtype=torch.float64))


def test_cpu_kernels_validate_raw_arguments():
    """The _C entry points check their lists themselves (a ValueError, never a crash)."""
    if "cpu" not in _backends.info("cpu").devices:
        pytest.skip(_backends.info("cpu").reason)
    from uno import _C

    out = torch.zeros(3, dtype=torch.float64)
    r = torch.ones(2, 4)
    with pytest.raises(ValueError, match="null"):
        _C.inner_cpu([], [0], [4], [4], 2, False, 0, 0, int(out.data_ptr()), 1)
    with pytest.raises(ValueError, match="row stride"):
        _C.inner_cpu([], [r.data_ptr()], [2], [4], 2, False, 0, 0, int(out.data_ptr()), 1)
    with pytest.raises(ValueError, match="k must be"):
        _C.inner_cpu([], [r.data_ptr()], [4], [4], 0, False, 0, 0, int(out.data_ptr()), 1)
    with pytest.raises(ValueError, match="differ in length"):
        _C.inner_cpu([], [r.data_ptr()], [4, 4], [4], 2, False, 0, 0, int(out.data_ptr()), 1)
    with pytest.raises(ValueError, match="num_threads"):
        _C.inner_cpu([], [r.data_ptr()], [4], [4], 2, False, 0, 0, int(out.data_ptr()), 0)
    with pytest.raises((ValueError, TypeError)):
        _C.inner_cpu([], [r.data_ptr()], [4], [4], 2, False, 0, 7, int(out.data_ptr()), 1)
