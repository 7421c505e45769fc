"""`uno.orthonormalize`: k raw vectors → a `uno.Basis` (CholeskyQR2 with a CGS2 fallback).

The algorithm is :func:`uno.ops._rows.orthonormalize_rows` (its docstring has the details); this
module validates the vectors and calls the ``uno::orthonormalize`` op (:mod:`uno.ops.library`).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from uno import _backends
from uno._abi import wide_dtype
from uno._backends._rowtable import RowTable
from uno.ops import _dist, _rows, _small, library
from uno.ops._vectors import as_pieces, rows_for
from uno.ops.basis import Basis


def _basis_dtype(dtype: torch.dtype, requested: Optional[torch.dtype]) -> torch.dtype:
    dt = requested or wide_dtype(dtype)
    if dt not in (torch.float32, torch.float64):
        raise TypeError(f"a Basis is stored in float32 or float64, got dtype={dt}")
    if dtype == torch.float64 and dt == torch.float32:
        raise TypeError("a float32 Basis cannot hold float64 vectors without losing orthogonality")
    return dt


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

    DTensor vectors (FSDP2 parameters' shapes and placements) give a distributed Basis: each rank
    keeps its shards and every reduction is summed over the mesh (docs/distributed.md).

    Returns:
        A Basis whose rank ``k`` may be smaller than the number of vectors given. Its span equals the
        span of the kept vectors, and ``Q Qᵀ = I`` to working precision.
    """
    lay = None
    if isinstance(vectors, Tensor):
        if _dist.is_dtensor(vectors):
            raise TypeError(
                "vectors is one (k, *shape) DTensor; give DTensor vectors as a sequence of k "
                "vectors (each a DTensor or a list of DTensors, e.g. shaped like the parameters)"
            )
        if vectors.dim() < 1 or vectors.shape[0] == 0:
            raise ValueError(
                f"vectors must be a (k, *shape) tensor with k >= 1, got shape {tuple(vectors.shape)}"
            )
        like = [vectors[0]]
        rows, _ = rows_for(vectors, like, "vectors")
    elif isinstance(vectors, (list, tuple)) and vectors:
        vecs = [as_pieces(v, f"vectors[{j}]") for j, v in enumerate(vectors)]
        if _dist.is_dtensor(vecs[0][0]):  # DTensor vectors: this rank's shards, reductions summed
            lay = _dist.layout_of(vecs[0], "vectors[0]")
            vecs = _dist.localize_like(vecs, lay, "vectors")
        like = vecs[0]
        rows, _ = rows_for(vecs, like, "vectors", table=lay is None, checked=True)
    else:
        raise ValueError(
            "vectors must be a non-empty sequence of vectors or a (k, *shape) tensor, got "
            f"{vectors!r}"[:200]
        )
    src_dtype = like[0].dtype
    dt = _basis_dtype(src_dtype, dtype)
    tol = _small.check_rtol(rtol, src_dtype)
    if torch.is_grad_enabled() and any(r.requires_grad for r in rows):
        rows = rows.detached() if isinstance(rows, RowTable) else [r.detach() for r in rows]
    if lay is None:
        buf = library.orthonormalize(rows, tol, dt, backend)
    else:
        be = _dist.Reduced(_backends.get(backend, rows[0].device), lay)
        buf = _rows.orthonormalize_rows(be, rows, tol, dt)  # type: ignore[arg-type]
    r = buf.shape[0]
    if capacity is not None and capacity > r:
        full = torch.zeros(capacity, buf.shape[1], dtype=dt, device=buf.device)
        full[:r].copy_(buf)
        buf = full
    elif r == 0:
        buf = torch.zeros(1, buf.shape[1], dtype=dt, device=buf.device)
    return Basis(buf, r, [p.shape for p in like], rtol=rtol, backend=backend, dist=lay)
