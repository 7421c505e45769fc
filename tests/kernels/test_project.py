"""The `project` primitive of every backend against the reference, the property test over piece lists
and the adapters' layout checks.

The ops tests exercise the primitives through `uno.project_` & co.; these tests pin the contract itself
(docs/kernels.md): row strides (a Basis slice vs a user's (k, *shape) tensor), zero-size pieces,
half-precision x with float32 rows, determinism, thread counts, and the errors of the adapters.
"""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import HealthCheck, given, settings

from backend_params import TOL, dtypes_for
from kernels.cases import FAST, SHAPES, _row_dtype, _rows_for, _x_for
from uno import _backends
from uno._backends import reference


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
