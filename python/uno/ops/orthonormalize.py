"""`uno.orthonormalize`: k raw vectors → a `uno.Basis` (CholeskyQR2 with a CGS2 fallback).

Fast route, CholeskyQR2 with float64 Gram matrices (4 passes over the k vectors, O(k²) work each):
  1. ``G = V Vᵀ`` (float64) → Cholesky with the rank rule → ``M`` (r × k); 2. ``Q₁ = M V``;
  3. ``G₂ = Q₁ Q₁ᵀ ≈ I`` → ``R₂⁻ᵀ``; 4. ``Q = R₂⁻ᵀ Q₁`` in place — skipped when ``max|G₂ − I|`` is already
  within ``pass_tol`` (2·eps·√r of the Basis dtype: what the rounding of a stored Q allows anyway), the usual
  case for well-conditioned vectors.
When a residual is too small for a float64 Gram to resolve (condition number beyond ~1e5, or a vector
near the rank rule's threshold) or the second Gram is far from I, the fallback is re-orthogonalised
classical Gram-Schmidt in vector space (one `Basis.append_` per vector), which keeps orthogonality to
working precision for any conditioning at O(k²) passes. It replaces the Householder fallback of the
textbook: Householder needs a P × k working copy and gives up the multi-tensor layout.
"""

from __future__ import annotations

from typing import List, Optional

import torch
from torch import Tensor

from uno import _backends
from uno.ops import _small
from uno.ops._vectors import HALF_DTYPES, as_pieces, rows_for
from uno.ops.basis import Basis, _orthogonalize_new_row
from uno.ops.reductions import kernel_rows


def _basis_dtype(dtype: torch.dtype, requested: Optional[torch.dtype]) -> torch.dtype:
    dt = requested or (torch.float32 if dtype in HALF_DTYPES else dtype)
    if dt not in (torch.float32, torch.float64):
        raise TypeError(f"a Basis is stored in float32 or float64, got dtype={dt}")
    if dtype == torch.float64 and dt == torch.float32:
        raise TypeError("a float32 Basis cannot hold float64 vectors without losing orthogonality")
    return dt


def _cgs2(be, rows: List[Tensor], out: Tensor, rtol: float) -> int:
    """Vector-space re-orthogonalised Gram-Schmidt of ``rows`` into ``out`` ([k, P]); returns r."""
    r = 0
    offsets, o = [], 0
    for x in rows:
        offsets.append(o)
        o += x.shape[1]
    k = rows[0].shape[0]
    for j in range(k):
        dst = [out[r, o : o + x.shape[1]] for o, x in zip(offsets, rows)]
        for d, x in zip(dst, rows):
            d.copy_(x[j])
        kept = [out[:r, o : o + x.shape[1]] for o, x in zip(offsets, rows)]
        if _orthogonalize_new_row(be, dst, kept, rtol):
            r += 1
    out[r:].zero_()
    return r


def orthonormalize_rows(
    rows: List[Tensor], rtol: float, dtype: torch.dtype, backend: Optional[str]
) -> Tensor:
    """The algorithm on canonical row blocks; returns the ``[r, P]`` orthonormal buffer."""
    device = rows[0].device
    be = _backends.module(_backends.resolve(backend, device))
    rows = kernel_rows(rows)
    if rows[0].dtype != dtype:  # float16/bfloat16 vectors → a float32 Basis: convert once
        rows = [x.to(dtype) for x in rows]
    k = rows[0].shape[0]
    sizes = [x.shape[1] for x in rows]
    numel = sum(sizes)
    packed = be.inner(None, rows, True)
    if not bool(torch.isfinite(packed).all()):
        raise ValueError("the vectors have non-finite entries (inf or nan)")
    m, _, ok = _small.chol_drop(_small.unpack_gram(packed[k + 1 :], k), rtol)
    if ok and m is None:
        return torch.zeros(0, numel, dtype=dtype, device=device)
    if ok and m is not None:
        r = m.shape[0]
        buf = torch.empty(r, numel, dtype=dtype, device=device)
        q = _pieces_of(buf, sizes)
        be.combine(q, rows, m.to(device))
        g2 = _small.unpack_gram(be.inner(None, q, True)[r + 1 :], r)
        err = float((g2 - torch.eye(r, dtype=torch.float64)).abs().max())
        if err <= _small.pass_tol(dtype, r):
            # Q₁ is already orthonormal to working precision: step 4 would not improve it
            return buf
        if err < 0.1:
            m2 = _small.chol_inverse_t(g2)
            if m2 is not None:
                be.combine(q, q, m2.to(device))
                return buf
    buf = torch.zeros(k, numel, dtype=dtype, device=device)
    r = _cgs2(be, rows, buf, rtol)
    return buf[:r].clone() if r < k else buf


def _pieces_of(buf: Tensor, sizes: List[int]) -> List[Tensor]:
    out, o = [], 0
    for n in sizes:
        out.append(buf[:, o : o + n])
        o += n
    return out


@torch.library.custom_op("uno::orthonormalize", mutates_args=())
def _orthonormalize_op(rows: List[Tensor], rtol: float, dtype: torch.dtype, backend: str) -> Tensor:
    return orthonormalize_rows(rows, rtol, dtype, backend or None)


@_orthonormalize_op.register_fake
def _(rows: List[Tensor], rtol: float, dtype: torch.dtype, backend: str) -> Tensor:
    ctx = torch.library.get_ctx()
    r = ctx.new_dynamic_size(min=0, max=rows[0].shape[0])
    return rows[0].new_empty(r, sum(x.shape[1] for x in rows), dtype=dtype)


def orthonormalize(
    vectors: object,
    *,
    rtol: Optional[float] = None,
    dtype: Optional[torch.dtype] = None,
    capacity: Optional[int] = None,
    backend: Optional[str] = None,
) -> Basis:
    """Orthonormalise k vectors into a :class:`uno.Basis`, dropping numerically dependent ones.

    Args:
        vectors: a sequence of k vectors (each a Tensor or a tensor list with the same shapes), or a
            ``(k, *shape)`` Tensor (k vectors of shape ``shape``).
        rtol: the rank rule's tolerance (see :mod:`uno.ops._small`); default from the dtype.
        dtype: the Basis dtype (default: the vectors' dtype; float32 for float16/bfloat16 vectors).
        capacity: room for this many rows, for later :meth:`Basis.append_` without reallocation.
        backend: ``reference``, ``cpu``, ``cuda`` or ``triton`` (default: see :func:`uno.backends`).

    Returns:
        A Basis whose rank ``k`` may be smaller than the number of vectors given. Its span equals the
        span of the kept vectors, and ``Q Qᵀ = I`` to working precision.
    """
    if isinstance(vectors, Tensor):
        if vectors.dim() < 1 or vectors.shape[0] == 0:
            raise ValueError(
                f"vectors must be a (k, *shape) tensor with k >= 1, got shape {tuple(vectors.shape)}"
            )
        like = [vectors[0]]
        rows, _ = rows_for(vectors, like, "vectors")
    elif isinstance(vectors, (list, tuple)) and vectors:
        vecs = [as_pieces(v, f"vectors[{j}]") for j, v in enumerate(vectors)]
        like = vecs[0]
        rows, _ = rows_for(vecs, like, "vectors")
    else:
        raise ValueError(
            "vectors must be a non-empty sequence of vectors or a (k, *shape) tensor, got "
            f"{vectors!r}"[:200]
        )
    src_dtype = like[0].dtype
    dt = _basis_dtype(src_dtype, dtype)
    tol = _small.check_rtol(rtol, src_dtype)
    if torch.is_grad_enabled() and any(r.requires_grad for r in rows):
        rows = [r.detach() for r in rows]
    buf = _orthonormalize_op(rows, tol, dt, backend or "")
    r = buf.shape[0]
    if capacity is not None and capacity > r:
        full = torch.zeros(capacity, buf.shape[1], dtype=dt, device=buf.device)
        full[:r].copy_(buf)
        buf = full
    elif r == 0:
        buf = torch.zeros(1, buf.shape[1], dtype=dt, device=buf.device)
    return Basis(buf, r, [p.shape for p in like], rtol=rtol, backend=backend)
