"""The host-side k×k float64 math of ``uno.ops._small``: the Cholesky with the rank rule on Python
floats (k <= PY_CHOL_MAX) against the LAPACK path (larger k) and against the definition."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from uno.ops import _small


def _vectors(k: int, n: int, seed: int, dependent: list[int], zero: list[int]) -> torch.Tensor:
    """k float64 vectors of length n; ``dependent`` ones are combinations of the vectors before
    them, ``zero`` ones are zero."""
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(k, n, generator=gen, dtype=torch.float64)
    for j in zero:
        v[j] = 0.0
    for j in sorted(dependent):
        if j > 0:
            v[j] = torch.randn(j, generator=gen, dtype=torch.float64) @ v[:j]
    return v


def _packed(v: torch.Tensor) -> list[float]:
    g = v @ v.T
    iu = torch.triu_indices(g.shape[0], g.shape[0])
    return g[iu[0], iu[1]].tolist()


@settings(max_examples=60, deadline=None)
@given(
    k=st.integers(1, 12),
    seed=st.integers(0, 2**16),
    dep=st.lists(st.integers(0, 11), max_size=3),
    zero=st.lists(st.integers(0, 11), max_size=2),
)
def test_python_and_lapack_paths_agree(k, seed, dep, zero):
    v = _vectors(k, 64, seed, [j for j in dep if j < k], [j for j in zero if j < k])
    g = _small.gram_of(_packed(v), k)
    m_py, kept_py, ok_py = _small._chol_drop_py(g, 1e-6)
    m_la, kept_la, ok_la = _small._chol_drop_lapack(torch.tensor(g, dtype=torch.float64), 1e-6)
    assert (kept_py, ok_py) == (kept_la, ok_la)
    assert (m_py is None) == (m_la is None)
    if m_py is not None and m_la is not None:
        assert m_py.shape == (len(kept_py), k)
        assert torch.allclose(m_py, m_la, rtol=1e-9, atol=1e-12 * float(m_la.abs().max()))
        # the rank rule: independent vectors kept, dependent and zero ones dropped
        dropped = {j for j in dep if 0 < j < k} | {z for z in zero if z < k}
        assert set(kept_py) == set(range(k)) - dropped
        q = m_py @ v  # orthonormal rows spanning the kept vectors
        assert torch.allclose(q @ q.T, torch.eye(len(kept_py), dtype=torch.float64), atol=1e-9)


def test_chol_drop_picks_the_path_by_k(monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(
        _small, "_chol_drop_py", lambda g, r: calls.append("py") or (None, [], True)
    )
    monkeypatch.setattr(
        _small, "_chol_drop_lapack", lambda g, r: calls.append("lapack") or (None, [], True)
    )
    for k in (1, _small.PY_CHOL_MAX, _small.PY_CHOL_MAX + 1):
        _small.chol_drop([[1.0] * k for _ in range(k)], 1e-7)
    assert calls == ["py", "py", "lapack"]


@pytest.mark.parametrize("k", [_small.PY_CHOL_MAX + 8])
def test_large_k_keeps_independent_and_drops_dependent(k):
    v = _vectors(k, 3 * k, 1, dependent=[5, k - 1], zero=[2])
    m, kept, ok = _small.chol_drop(_small.gram_of(_packed(v), k), 1e-6)
    assert ok and m is not None
    assert kept == [j for j in range(k) if j not in (2, 5, k - 1)]
    q = m @ v
    assert torch.allclose(q @ q.T, torch.eye(len(kept), dtype=torch.float64), atol=1e-9)


def test_ill_conditioned_gram_is_handed_to_vector_space():
    """A residual the float64 Gram cannot resolve (ratio between rtol² and GRAM_SAFE): ok False."""
    v = _vectors(2, 16, 3, [], [])
    v[1] = v[0] + 1e-6 * v[1]  # residual ratio ~1e-12: below GRAM_SAFE, above rtol² = 1e-14
    m, kept, ok = _small.chol_drop(_small.gram_of(_packed(v), 2), 1e-7)
    assert (m, kept, ok) == (None, [], False)


def test_negative_diagonal_and_all_zero():
    assert _small.chol_drop([[-1.0]], 1e-7) == (None, [], False)
    assert _small.chol_drop([[0.0, 0.0], [0.0, 0.0]], 1e-7) == (None, [], True)


def test_gram_helpers():
    g = _small.gram_of([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 3)
    assert g == [[1.0, 2.0, 3.0], [2.0, 4.0, 5.0], [3.0, 5.0, 6.0]]
    assert _small.max_off_identity([[1.0, -1e-3], [-1e-3, 0.5]]) == 0.5
    assert _small.all_finite([0.0, 1e300]) and not _small.all_finite([0.0, math.nan])
    assert not _small.all_finite([math.inf])


def _measured_and_bound(v32: torch.Tensor, rtol: float = 4.8e-7) -> tuple[float, float, int]:
    """``max|Q Qᵀ − I|`` of ``Q = fl32(m @ V)`` (combine's arithmetic: float64 sums, one rounding)
    and :func:`orthogonality_bound` for the same data."""
    k, n = v32.shape
    v64 = v32.double()
    g = _small.gram_of(_packed(v64), k)
    m, kept, ok = _small.chol_drop(g, rtol)
    assert ok and m is not None
    q = (m @ v64).to(torch.float32).double()
    err = float((q @ q.T - torch.eye(len(kept), dtype=torch.float64)).abs().max())
    return err, _small.orthogonality_bound(g, m, kept, n, torch.float32), len(kept)


@settings(max_examples=60, deadline=None)
@given(
    k=st.integers(1, 10),
    n=st.integers(10, 3000),
    log_cond=st.floats(0.0, 4.0),
    log_scale=st.floats(-20.0, 20.0),
    seed=st.integers(0, 2**16),
)
def test_orthogonality_bound_holds(k, n, log_cond, log_scale, seed):
    """The bound is never below the error it bounds, for any conditioning, norm spread and size."""
    gen = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(n, k, generator=gen, dtype=torch.float64))
    w, _ = torch.linalg.qr(torch.randn(k, k, generator=gen, dtype=torch.float64))
    s = torch.logspace(0, -log_cond, k, dtype=torch.float64)
    scales = torch.logspace(-log_scale / 2, log_scale / 2, k, dtype=torch.float64)
    v = (scales[:, None] * (w @ (u * s).T)).to(torch.float32)
    err, bound, _ = _measured_and_bound(v)
    assert err <= bound


def test_orthogonality_bound_adversarial_rounding():
    """Entries that all round the same way (every value half an ulp above a float32): the error the
    float32 storage adds is as large as it gets, and still within the bound."""
    n = 4096
    base = torch.full((n,), 1.0 + 2.0**-23, dtype=torch.float64)  # ulp(1) = 2⁻²³
    v = torch.stack([base, base * torch.linspace(1.0, 2.0, n, dtype=torch.float64)])
    err, bound, _ = _measured_and_bound(v.to(torch.float32))
    assert err <= bound


def test_orthogonality_bound_size():
    """Random well-conditioned float32 vectors: within the tolerance that lets orthonormalize skip
    the measuring pass (pass_tol = 2·eps·√r). With a condition number of about 1e4 the bound no
    longer certifies Q₁ (whether Q₁ happens to be orthonormal there depends on the BLAS's rounding:
    2.2e-7 on an Intel Xeon VM, above pass_tol on a Zen 4 one); at 5e4 Q₁ is not orthonormal to
    working precision (3–6e-6 over ten seeds, 5–9 × pass_tol) and the bound does not claim it is."""
    from uno.ops._rows import pass_tol

    gen = torch.Generator().manual_seed(0)
    v = torch.randn(8, 100_000, generator=gen).to(torch.float32)
    err, bound, r = _measured_and_bound(v)
    eps = torch.finfo(torch.float32).eps
    assert err <= bound <= 1.2 * eps < pass_tol(torch.float32, r)
    w = v.clone()
    w[1] = w[0] + 1e-4 * w[1]  # condition number ~1e4: the bound refuses to certify
    err, bound, r = _measured_and_bound(w)
    assert err <= bound and pass_tol(torch.float32, r) < bound
    v[1] = v[0] + 2e-5 * v[1]  # ~5e4: Q₁ needs CholeskyQR2's second transform
    err, bound, r = _measured_and_bound(v)
    assert pass_tol(torch.float32, r) < err <= bound
