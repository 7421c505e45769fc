"""k×k float64 linear algebra on the host: Gram unpacking, the rank rule, tolerances.

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
"""

from __future__ import annotations

import math
from typing import List, Optional, Tuple

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


def unpack_gram(packed: Tensor, k: int) -> Tensor:
    """Packed upper triangle (row by row, i <= j) → symmetric (k, k) float64 on the host."""
    g = torch.zeros(k, k, dtype=torch.float64)
    iu = torch.triu_indices(k, k)
    vals = packed.detach().to("cpu", torch.float64)
    g[iu[0], iu[1]] = vals
    g[iu[1], iu[0]] = vals
    return g


def chol_drop(g: Tensor, rtol: float) -> Tuple[Optional[Tensor], List[int], bool]:
    """Cholesky factorisation of a Gram matrix with the rank rule, in float64 on the host.

    Args:
        g: (k, k) float64 Gram matrix of the raw vectors.
        rtol: the rank rule's tolerance.

    Returns:
        ``(m, kept, ok)``. ``m`` is (r, k) with ``Q = m @ V`` orthonormal (zero columns for dropped
        vectors; None when r = 0), ``kept`` the kept indices. ``ok`` is False when some residual falls
        in the range that a float64 Gram cannot resolve (ill-conditioned input): then the caller must
        orthonormalise in vector space.
    """
    k = g.shape[0]
    kept: List[int] = []
    r = torch.zeros(k, k, dtype=torch.float64)  # upper triangular over the kept indices
    rtol2 = rtol * rtol
    for j in range(k):
        gjj = float(g[j, j])
        if gjj <= 0.0:
            if gjj == 0.0:
                continue  # zero vector: dropped, unambiguous
            return None, [], False  # negative diagonal: Gram rounding dominates
        n = len(kept)
        if n:
            coef = torch.linalg.solve_triangular(
                r[:n, :n].T, g[kept, j].reshape(n, 1), upper=False
            ).reshape(n)
            res2 = gjj - float(coef @ coef)
        else:
            coef = torch.zeros(0, dtype=torch.float64)
            res2 = gjj
        ratio = res2 / gjj
        if ratio >= GRAM_SAFE:
            r[:n, n] = coef
            r[n, n] = math.sqrt(res2)
            kept.append(j)
        elif ratio <= rtol2 and rtol2 >= GRAM_NOISE:
            continue  # clearly dependent: dropped
        else:
            return None, [], False
    if not kept:
        return None, [], True
    rr = r[: len(kept), : len(kept)]
    inv = torch.linalg.solve_triangular(
        rr.T, torch.eye(len(kept), dtype=torch.float64), upper=False
    )
    m = torch.zeros(len(kept), k, dtype=torch.float64)
    m[:, kept] = inv  # Q_i = Σ_j inv[i, j] · V_kept[j]
    return m, kept, True


def chol_inverse_t(g: Tensor) -> Optional[Tensor]:
    """``R⁻ᵀ`` for ``g = RᵀR`` (g nearly the identity: the second CholeskyQR pass); None if not SPD."""
    rt, info = torch.linalg.cholesky_ex(g)
    if int(info) != 0:
        return None
    eye = torch.eye(g.shape[0], dtype=torch.float64)
    return torch.linalg.solve_triangular(rt, eye, upper=False)
