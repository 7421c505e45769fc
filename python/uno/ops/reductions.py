"""`uno.dot`, `uno.dot_norms`, `uno.gram`, `uno.cos2`: one-pass multi-tensor reductions with float64
accumulation.

All four are thin wrappers over one custom op, ``uno::inner`` (the `inner` primitive of
docs/kernels.md): the inner products of a vector x with k row vectors, ‖x‖², and optionally the Gram
matrix of the rows, in a single pass over memory. DTensor vectors (FSDP2 shards) are reduced over
their local shards and summed over the mesh with one ``all_reduce`` (docs/distributed.md).
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence

import torch
from torch import Tensor

from uno import _backends
from uno.ops import _dist, _rows, library
from uno.ops._vectors import VectorLike, as_pieces, check_same_device, rows_for
from uno.ops.basis import Basis


def _check_no_autograd(*vs: Sequence[Tensor]) -> None:
    if torch.is_grad_enabled() and any(p.requires_grad for v in vs for p in v):
        raise RuntimeError(
            "uno reductions are not differentiable; call them on detached tensors (x.detach()) or "
            "under torch.no_grad(), or use torch ops where a gradient must flow"
        )


def _inner(
    x: List[Tensor], rows: List[Tensor], with_gram: bool, backend: Optional[str], lay: Any
) -> Tensor:
    """``uno::inner``, or for DTensor vectors (``lay``) the same over the local shards, summed."""
    if lay is None:
        return library.inner(x, rows, with_gram, backend)
    be = _dist.Reduced(_backends.get(backend, rows[0].device), lay)
    return _rows.inner(be, x, rows, with_gram)  # type: ignore[arg-type]


def _pair(a: VectorLike, b: VectorLike) -> tuple[List[Tensor], List[Tensor], Any]:
    """The pieces of two vectors that must match piece for piece (shape, device, dtype; no autograd)
    and, for DTensor vectors, their layout (the pieces are then the local shards)."""
    pa = as_pieces(a, "a")
    pb = as_pieces(b, "b")
    lay = None
    if _dist.is_dtensor(pa[0]) or _dist.is_dtensor(pb[0]):
        pa, lay = _dist.localize(pa, "a") if _dist.is_dtensor(pa[0]) else (pa, None)
        if lay is None or not _dist.is_dtensor(pb[0]):
            raise TypeError("a and b must both be DTensor vectors or both plain, got one of each")
        pb = _dist.localize_like([pb], lay, "b")[0]
    if [p.shape for p in pa] != [p.shape for p in pb]:
        raise ValueError(
            f"a and b differ in shape: {[tuple(p.shape) for p in pa]} vs {[tuple(p.shape) for p in pb]}"
        )
    check_same_device(pa[0].device, pb[0].device, "b")
    if pa[0].dtype != pb[0].dtype:
        raise TypeError(f"a and b differ in dtype: {pa[0].dtype} and {pb[0].dtype}")
    _check_no_autograd(pa, pb)
    return pa, pb, lay


def dot(a: VectorLike, b: VectorLike, *, backend: Optional[str] = None) -> Tensor:
    """Inner product ``<a, b>`` of two vectors given as Tensors or tensor lists.

    Returns:
        0-d float64 tensor on the vectors' device (accumulated in float64).
    """
    pa, pb, lay = _pair(a, b)
    out = _inner(pa, [p.reshape(1, -1) for p in pb], False, backend, lay)
    return out[0]


def gram(
    vectors: object, *, like: Optional[VectorLike] = None, backend: Optional[str] = None
) -> Tensor:
    """Gram matrix ``G[i, j] = <v_i, v_j>`` of k vectors, accumulated in float64.

    Args:
        vectors: a sequence of k vectors (each a Tensor or a tensor list), a ``(k, *shape)`` Tensor, or
            a :class:`uno.Basis`.
        like: the piece structure when ``vectors`` is a ``(k, *shape)`` Tensor (default: its rows).

    Returns:
        ``(k, k)`` float64 tensor on the vectors' device.
    """
    lay = None
    if isinstance(vectors, Basis):
        rows, lay = vectors.rows(), vectors.dist
        if vectors.k == 0:
            return torch.zeros(0, 0, dtype=torch.float64, device=vectors.device)
    elif isinstance(vectors, Tensor):
        if _dist.is_dtensor(vectors):
            raise TypeError("give DTensor vectors to gram as a sequence of vectors or a Basis")
        if vectors.dim() < 1:
            raise ValueError("vectors must have a leading k dimension, got a 0-d tensor")
        ref = like if like is not None else vectors[0] if vectors.shape[0] else None
        if ref is None:
            return torch.zeros(0, 0, dtype=torch.float64, device=vectors.device)
        rows, _ = rows_for(vectors, as_pieces(ref, "like"), "vectors")
    elif isinstance(vectors, (list, tuple)) and vectors:
        vecs = [as_pieces(v, f"vectors[{j}]") for j, v in enumerate(vectors)]
        if _dist.is_dtensor(vecs[0][0]):
            lay = _dist.layout_of(vecs[0], "vectors[0]")
            vecs = _dist.localize_like(vecs, lay, "vectors")
        rows, _ = rows_for(vecs, vecs[0], "vectors")
    else:
        raise ValueError(
            "vectors must be a non-empty sequence of vectors, a (k, ...) Tensor or a Basis"
        )
    _check_no_autograd(rows)
    k = rows[0].shape[0]
    out = _inner([], rows, True, backend, lay)
    tri = out[k + 1 :]
    iu = torch.triu_indices(k, k, device=tri.device)
    g = torch.zeros(k, k, dtype=torch.float64, device=tri.device)
    g[iu[0], iu[1]] = tri
    g[iu[1], iu[0]] = tri
    return g


def dot_norms(a: VectorLike, b: VectorLike, *, backend: Optional[str] = None) -> Tensor:
    """``(<a, b>, ‖a‖², ‖b‖²)`` of two separate vectors in one pass, without stacking them.

    One ``uno::inner`` call with ``b`` as its single row and the row's Gram (``‖b‖²``): the three
    numbers a cosine, a projection coefficient or docs/method.md's c² need, for the cost of one read of
    each vector instead of three separate :func:`dot` calls (which read each vector twice).

    Args:
        a, b: vectors given as Tensors or tensor lists with the same piece shapes and dtype.
        backend: ``reference``, ``cpu``, ``cuda`` or ``triton`` (default: see :func:`uno.backends`).

    Returns:
        ``(3,)`` float64 tensor ``[<a, b>, ‖a‖², ‖b‖²]`` on the vectors' device (float64 sums).
    """
    pa, pb, lay = _pair(a, b)
    return _inner(pa, [p.reshape(1, -1) for p in pb], True, backend, lay)[:3]


def cos2(
    a: VectorLike, b: VectorLike, *, eps: float = 1e-30, backend: Optional[str] = None
) -> Tensor:
    """Squared cosine ``<a, b>² / (‖a‖²‖b‖² + eps)`` in one pass (docs/method.md's c²).

    ``eps`` guards zero vectors: two zero vectors give 0, not nan.

    Returns:
        0-d float64 tensor.
    """
    ab, aa, bb = dot_norms(a, b, backend=backend)
    return ab * ab / (aa * bb + eps)
