"""`uno.project_`: remove from a gradient its component in the span of a basis, in place.

The algorithm (two passes over memory in the common case) is :func:`uno.ops._rows.project_rows_`;
this module validates the arguments and calls the ``uno::project_`` op (:mod:`uno.ops.library`).
"""

from __future__ import annotations

from typing import List, Optional

import torch
from torch import Tensor

from uno import _backends
from uno.ops import _dist, _rows, _small, library
from uno.ops._checks import check_not_in_graph
from uno.ops._vectors import VectorLike, as_pieces, check_basis_for, local_vectors, rows_for
from uno.ops.basis import Basis


def project_(
    grad: VectorLike,
    basis: object,
    *,
    rtol: Optional[float] = None,
    backend: Optional[str] = None,
) -> None:
    """In place ``grad ← grad − Π grad``, Π the orthogonal projector onto the span of ``basis``.

    Args:
        grad: one vector: a Tensor or a sequence of Tensors (e.g. ``[p.grad for p in params]``);
            the pieces are never concatenated.
        basis: a :class:`uno.Basis` (fastest: reused without recomputation), or raw vectors given like
            grad: for a Tensor grad, a Tensor of grad's shape (one vector) or of shape
            ``(k, *grad.shape)``; for a tensor-list grad, a list with the same shapes (one vector) or a
            sequence of k such lists. Raw vectors need not be orthogonal or independent: dependent
            directions are dropped by the rank rule (``rtol``, see :mod:`uno.ops._small`).
        rtol: the rank rule's tolerance for raw vectors (ignored for a Basis).
        backend: ``reference``, ``cpu``, ``cuda`` or ``triton``; default: ``UNO_BACKEND`` or the
            device's fastest (see :func:`uno.backends`).

    After the call grad is orthogonal to every basis vector to working precision, also when it lay
    almost inside the span; the basis is unchanged. Bad input raises TypeError/ValueError before any
    write. A grad that requires grad while grad mode is on raises RuntimeError (the op is not
    differentiable: autograd would not see the write); ``p.grad`` never requires grad. A grad with
    inf/nan entries is left unchanged.

    DTensor grads (FSDP2's sharded gradients, ``Replicate()`` pieces): the basis must be a Basis built
    over DTensors distributed alike, or raw DTensor vectors; every rank projects its own shard and
    the reductions are summed over the mesh (docs/distributed.md).
    """
    pieces = as_pieces(grad, "grad")
    check_not_in_graph(
        enumerate(pieces), "grad[{}]", "uno.project_",
        "project gradients (p.grad does not require grad) or detached tensors, or call under "
        "torch.no_grad() to edit tensors of a graph in place",
    )  # fmt: skip
    if _dist.is_dtensor(pieces[0]):
        return _project_dist(pieces, basis, rtol, backend)
    rows: List[Tensor]
    if isinstance(basis, Basis):
        check_basis_for(basis, pieces, "basis")
        # cached views with their layout read once (traced: plain views)
        rows = basis.rows() if torch.compiler.is_compiling() else basis._row_blocks()
        orthonormal = True
    else:
        rows, orthonormal = rows_for(basis, pieces, "basis", table=True)
    tol = _small.check_rtol(rtol, rows[0].dtype if not orthonormal else pieces[0].dtype)
    library.project_(pieces, rows, orthonormal, tol, backend)


def _project_dist(
    pieces: List[Tensor], basis: object, rtol: Optional[float], backend: Optional[str]
) -> None:
    """:func:`project_` of DTensor pieces: the same algorithm on the local shards, its reductions
    all-reduced (one collective per pass, :class:`uno.ops._dist.Reduced`)."""
    xs, lay = _dist.localize(pieces, "grad")
    rows: List[Tensor]
    if isinstance(basis, Basis):
        check_basis_for(basis, xs, "basis", lay)
        rows, orthonormal = basis._row_blocks(), True
    else:
        rows, orthonormal = rows_for(local_vectors(basis, lay, "basis"), xs, "basis")
    tol = _small.check_rtol(rtol, rows[0].dtype if not orthonormal else xs[0].dtype)
    be = _dist.Reduced(_backends.get(backend, xs[0].device), lay)
    _rows.project_rows_(be, xs, rows, orthonormal, tol)  # type: ignore[arg-type]
    library.bump_versions(xs)
