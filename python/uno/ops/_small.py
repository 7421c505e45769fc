"""k×k float64 linear algebra on the host, on Python floats: Gram unpacking, the rank rule.

The kernels reduce P-long vectors to k×k float64 Gram matrices; everything below works on those and
costs O(k³), independent of the vector length.

Rank rule (used by ``orthonormalize``, ``Basis.append_`` and ``project_`` with raw vectors): vectors
are taken in order; vector j is kept when the norm of its residual after removing the span of the
vectors kept before it is larger than ``rtol · ‖v_j‖``, and dropped (numerically dependent) otherwise.
Zero vectors are always dropped. The default ``rtol`` is ``4·eps(dtype)`` of the vectors' dtype for
float32/float16/bfloat16 (float32: 4.8e-7, so a float32 basis with condition number 1e6 keeps every
direction while a vector that is an exact combination of others, up to float32 rounding, is dropped) and
``1e-13`` for float64 (≈ 450·eps: the residual of a dependent float64 vector after re-orthogonalised
Gram-Schmidt is a few hundred ulps at worst).

Certified CholeskyQR (:func:`orthogonality_bound`): CholeskyQR2 measures the Gram of its first
result Q₁ = fl(M V) (one more pass over the r output vectors) to decide whether a second transform is
needed. With the Gram computed in float64 from float32 vectors, a rounding-error bound computed from
the k×k data alone, O(k²) host arithmetic, often already proves ``max |Q₁ Q₁ᵀ − I|`` within the
tolerance that measurement would accept; the pass is then skipped. The bound holds for any summation
order (the backends differ there), so it does not depend on which backend ran the kernels.
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

# Residual ratios (res²/‖v‖²) at or above this are resolved reliably from a float64 Gram matrix
# (relative error of res² ≲ k·eps64/1e-10): Cholesky-based methods may use the Gram route. Below it the
# decision and the transform are done in vector space (re-orthogonalised Gram-Schmidt), which stays
# accurate to working precision for any conditioning.
GRAM_SAFE = 1e-10
# A Gram-space "drop" is only trusted when rtol² is far above the Gram's own rounding noise.
GRAM_NOISE = 1e-13


def eps(dtype: torch.dtype) -> float:
    return float(torch.finfo(dtype).eps)


def default_rtol(dtype: torch.dtype) -> float:
    """The rank rule's default tolerance for vectors stored in ``dtype`` (see the module docstring)."""
    return 1e-13 if dtype == torch.float64 else 4.0 * eps(dtype)


def check_rtol(rtol: Optional[float], dtype: torch.dtype) -> float:
    if rtol is None:
        return default_rtol(dtype)
    if not isinstance(rtol, (int, float)) or not math.isfinite(rtol) or not 0.0 <= rtol < 1.0:
        raise ValueError(f"rtol must be a finite number in [0, 1), got {rtol!r}")
    return float(rtol)


#: Up to this many vectors the Cholesky with the rank rule runs on Python floats (a few microseconds
#: per vector, no torch op). Above it, one LAPACK call per vector costs less than the O(k³/6) Python
#: arithmetic; both paths follow the same rule and differ in the last bits of ``m`` only.
PY_CHOL_MAX = 32

Gram = List[List[float]]


def gram_of(packed: Sequence[float], k: int) -> Gram:
    """Packed upper triangle (row by row, i <= j) → the symmetric k×k Gram as nested Python lists.

    The host math below reads a few dozen entries per vector: as Python floats that costs less than
    the torch ops it would take on (k, k) tensors, which, right after a kernel has streamed P-long
    vectors through the caches, run from cold caches at tens of microseconds each.
    """
    g = [[0.0] * k for _ in range(k)]
    o = 0
    for i in range(k):
        row = g[i]
        for j in range(i, k):
            row[j] = g[j][i] = float(packed[o])
            o += 1
    return g


def all_finite(values: Sequence[float]) -> bool:
    return all(map(math.isfinite, values))


def max_off_identity(g: Gram) -> float:
    """``max |g - I|`` over the entries of a symmetric Gram (how far a basis is from orthonormal)."""
    err = 0.0
    for i, row in enumerate(g):
        for j in range(i, len(row)):
            err = max(err, abs(row[j] - (1.0 if i == j else 0.0)))
    return err


def chol_drop(g: Gram, rtol: float) -> Tuple[Optional[Tensor], List[int], bool]:
    """Cholesky factorisation of a Gram matrix with the rank rule, in float64 on the host.

    Args:
        g: the k×k Gram matrix of the raw vectors (:func:`gram_of`).
        rtol: the rank rule's tolerance.

    Returns:
        ``(m, kept, ok)``. ``m`` is (r, k) float64 with ``Q = m @ V`` orthonormal (zero columns for
        dropped vectors; None when r = 0), ``kept`` the kept indices. ``ok`` is False when some
        residual falls in the range that a float64 Gram cannot resolve (ill-conditioned input): then
        the caller must orthonormalise in vector space.
    """
    if len(g) > PY_CHOL_MAX:
        return _chol_drop_lapack(torch.tensor(g, dtype=torch.float64), rtol)
    return _chol_drop_py(g, rtol)


def _rank_rule(res2: float, gjj: float, rtol2: float) -> Optional[bool]:
    """Keep (True), drop (False) or undecidable from the Gram (None) for a residual² ``res2``."""
    ratio = res2 / gjj
    if ratio >= GRAM_SAFE:
        return True
    if ratio <= rtol2 and rtol2 >= GRAM_NOISE:
        return False  # clearly dependent
    return None


def _chol_drop_py(g: Gram, rtol: float) -> Tuple[Optional[Tensor], List[int], bool]:
    """:func:`chol_drop` on Python floats: column by column, ``Rᵀ c = g[kept, j]`` by forward
    substitution (c the coefficients of vector j in the kept vectors' orthonormal basis)."""
    k = len(g)
    kept: List[int] = []
    cols: List[List[float]] = []  # cols[i] = column i of R over the kept rows: R[0..i, i]
    rtol2 = rtol * rtol
    for j in range(k):
        gjj = g[j][j]
        if gjj <= 0.0:
            if gjj == 0.0:
                continue  # zero vector: dropped, unambiguous
            return None, [], False  # negative diagonal: Gram rounding dominates
        coef: List[float] = []
        for i, ci in enumerate(cols):
            acc = g[kept[i]][j]
            for l_ in range(i):
                acc -= ci[l_] * coef[l_]
            coef.append(acc / ci[i])
        res2 = gjj - math.fsum(c * c for c in coef) if coef else gjj
        keep = _rank_rule(res2, gjj, rtol2)
        if keep is None:
            return None, [], False
        if keep:
            coef.append(math.sqrt(res2))
            cols.append(coef)
            kept.append(j)
    if not kept:
        return None, [], True
    # m's kept columns hold L⁻¹ for L = Rᵀ (lower triangular, L[i][l] = cols[i][l]): row i by
    # forward substitution over the rows above it.
    n = len(kept)
    inv: List[List[float]] = []
    for i in range(n):
        li, row = cols[i], [0.0] * n
        for c in range(i + 1):
            acc = 1.0 if c == i else 0.0
            for l_ in range(c, i):
                acc -= li[l_] * inv[l_][c]
            row[c] = acc / li[i]
        inv.append(row)
    m = [[0.0] * k for _ in range(n)]
    for i in range(n):
        for c, j in enumerate(kept):
            m[i][j] = inv[i][c]
    return torch.tensor(m, dtype=torch.float64), kept, True


def _chol_drop_lapack(g: Tensor, rtol: float) -> Tuple[Optional[Tensor], List[int], bool]:
    """:func:`chol_drop` for large k: one triangular solve per vector on (k, k) tensors."""
    k = g.shape[0]
    kept: List[int] = []
    r = torch.zeros(k, k, dtype=torch.float64)  # upper triangular over the kept indices
    rtol2 = rtol * rtol
    for j in range(k):
        gjj = float(g[j, j])
        if gjj <= 0.0:
            if gjj == 0.0:
                continue
            return None, [], False
        n = len(kept)
        if n:
            coef = torch.linalg.solve_triangular(
                r[:n, :n].T, g[kept, j].reshape(n, 1), upper=False
            ).reshape(n)
            res2 = gjj - float(coef @ coef)
        else:
            coef = torch.zeros(0, dtype=torch.float64)
            res2 = gjj
        keep = _rank_rule(res2, gjj, rtol2)
        if keep is None:
            return None, [], False
        if keep:
            r[:n, n] = coef
            r[n, n] = math.sqrt(res2)
            kept.append(j)
    if not kept:
        return None, [], True
    rr = r[: len(kept), : len(kept)]
    inv = torch.linalg.solve_triangular(
        rr.T, torch.eye(len(kept), dtype=torch.float64), upper=False
    )
    m = torch.zeros(len(kept), k, dtype=torch.float64)
    m[:, kept] = inv  # Q_i = Σ_j inv[i, j] · V_kept[j]
    return m, kept, True


def chol_inverse_t(g: Gram) -> Optional[Tensor]:
    """``R⁻ᵀ`` for ``g = RᵀR`` (g nearly the identity: the second CholeskyQR pass); None if not SPD."""
    rt, info = torch.linalg.cholesky_ex(torch.tensor(g, dtype=torch.float64))
    if int(info) != 0:
        return None
    eye = torch.eye(len(g), dtype=torch.float64)
    return torch.linalg.solve_triangular(rt, eye, upper=False)


#: The unit roundoff of float64.
U64 = 2.0**-53


def _gamma(n: int) -> float:
    """γ_n = n·u/(1 − n·u) for float64: the relative error bound of n floating-point operations."""
    nu = n * U64
    return nu / (1.0 - nu) if nu < 0.5 else math.inf


def orthogonality_bound(
    g: Gram, m: Tensor, kept: Sequence[int], numel: int, dtype: torch.dtype
) -> float:
    """An upper bound on ``max |Q Qᵀ − I|`` for ``Q = fl(m @ V)`` stored in ``dtype``, from the
    float64 Gram ``g`` of the k vectors V (``numel`` entries each) and the ``m`` that
    :func:`chol_drop` made of it (kept rows ``kept``), without reading Q.

    Notation: D the kept vectors' norms, X = m's kept columns (X ≈ L⁻¹ for the Cholesky factor
    L Lᵀ of the kept vectors' Gram), r the rank, u_T the unit roundoff of ``dtype`` and
    γ_n = n·u₆₄/(1 − n·u₆₄). The Gram's float64 sums (any order) leave every entry of D⁻¹ΔG D⁻¹
    within γ_numel; the Cholesky's backward error is γ_{r+1}|L||Lᵀ| and the triangular inverse's
    residual ``X L − I`` is within η = γ_{4r}·r·‖XD‖_F² (γ_{4r}: room for blocked LAPACK solves).
    So for exact products ``X V``:

        ‖X G Xᵀ − I‖₂ <= e = 2η + η² + ‖XD‖_F²·r·(γ_numel + γ_{r+1}).

    ``combine`` then sums k float64 products per entry and rounds once to ``dtype``: row i of Q is
    off by at most δ = γ_k·√r·‖XD‖_F + u_T·√(1 + e) (+ the subnormal floor √numel·tiny_T), which
    moves an entry of Q Qᵀ by at most 2δ√(1 + e) + δ². The sum of the two, times 1.01 for the
    second-order factors left out (all below 1e-6 relative wherever the bound is small enough to be
    used), is returned.
    """
    k, r = len(g), len(kept)
    if r == 0:
        return 0.0
    rows = m.tolist()
    norms = [math.sqrt(g[j][j]) for j in kept]
    xd2 = math.fsum((row[j] * d) ** 2 for row in rows for j, d in zip(kept, norms))
    eta = _gamma(4 * r) * r * xd2
    e = 2.0 * eta + eta * eta + xd2 * r * (_gamma(numel) + _gamma(r + 1))
    fi = torch.finfo(dtype)
    u_t = float(fi.eps) / 2.0
    delta = _gamma(k) * math.sqrt(r * xd2) + u_t * math.sqrt(1.0 + e) + math.sqrt(numel) * fi.tiny
    return 1.01 * (e + 2.0 * delta * math.sqrt(1.0 + e) + delta * delta)
