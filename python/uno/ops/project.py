"""`uno.project_`: remove from a gradient its component in the span of a basis, in place.

Algorithm (two passes over memory in the common case, see docs/kernels.md for the primitives):

* Pass A, ``inner``: the coefficients ``c = V g`` and ``‖g‖²`` (with raw vectors also their Gram matrix
  ``G = V Vᵀ``, so that ``Q = M V`` with ``M`` from a Cholesky of G is orthonormal without ever
  materialising Q). If ``‖Q g‖ <= tol·‖g‖`` g is already orthogonal and is left bit-for-bit untouched.
* Pass B, ``project``: ``g ← g − Vᵀ y`` (``y = c`` for a Basis, ``Mᵀ M c`` for raw vectors), which
  returns the coefficients of the *new* g in the same pass. When g lay almost inside the span, rounding
  leaves a component of order ``eps·‖g_old‖`` that is large against the small ``‖g_new‖``: the returned
  coefficients show it and another pass removes it (classical Gram-Schmidt, twice is enough; at most
  ``MAX_PASSES`` passes).

Raw vectors that are too ill-conditioned for the Gram route (see :mod:`uno.ops._small`) are first
orthonormalised into a temporary Basis (the only buffer proportional to P this op ever allocates).
A grad with non-finite entries is left as it is (so that mixed-precision inf checks still see it).
"""

from __future__ import annotations

import math
from typing import List, Optional

import torch
from torch import Tensor

from uno import _backends
from uno._backends._layout import Pieces, RowBlocks
from uno.ops import _small
from uno.ops._checks import check_no_overlap, check_no_overlap_span, check_writable
from uno.ops._eager import bump_versions, direct_ok
from uno.ops._vectors import HALF_DTYPES, VectorLike, as_pieces, check_basis_for, rows_for
from uno.ops.basis import Basis
from uno.ops.orthonormalize import orthonormalize_rows
from uno.ops.reductions import kernel_rows


def _run_passes(
    be, xs: List[Tensor], rows: List[Tensor], c: Tensor, n: float, m: Optional[Tensor], tol: float
) -> None:
    """Passes B, C, ...: subtract until the residual coefficients are at rounding level.

    Kahan-Parlett "twice is enough": when a re-orthogonalisation pass (the second or later) still
    shrinks the norm by more than half, what is left is rounding noise of a vector that lies in the
    span to working precision, and the exact answer, zero, is written.
    """
    k = rows[0].shape[0]
    passes = 0
    while True:
        cq = c if m is None else m @ c  # coefficients in an orthonormal basis of the span
        if float(cq.norm()) <= tol * math.sqrt(max(n, 0.0)) or passes == _small.MAX_PASSES:
            return
        y = cq if m is None else m.T @ cq
        out = be.project(xs, rows, y.to(device=rows[0].device))
        passes += 1
        c, n_new = out[:k].cpu(), float(out[k])
        if passes >= 2 and n_new < 0.25 * n:
            for x in xs:
                x.zero_()
            return
        n = n_new


def project_rows_(
    grad: List[Tensor], rows: List[Tensor], orthonormal: bool, rtol: float, backend: Optional[str]
) -> None:
    """The algorithm on canonical inputs: grad pieces (any shape) and (k, n_t) row blocks."""
    device = grad[0].device
    name = _backends.resolve(backend, device)
    be = _backends.module(name)
    xs: List[Tensor]
    # Fast path for a Basis on the pointer-based backends: every piece's layout is read once for the
    # overlap check and both passes (the per-piece Python cost dominates below ~1e6 elements).
    basis_span = rows.span if isinstance(rows, RowBlocks) else None
    pieces = Pieces.of(grad) if basis_span is not None and name in ("cpu", "cuda") else None
    if pieces is not None and basis_span is not None:
        check_no_overlap_span(pieces.ptrs, pieces.ns, pieces.esz, basis_span, "basis")
        xs = pieces  # the kernels take pointers and sizes: no 1-D views needed
    else:
        for i, g in enumerate(grad):
            check_writable(g, f"grad[{i}]")
        check_no_overlap(grad, rows, "basis")
        # 1-D views of the grad pieces; non-contiguous pieces go through a copy written back after.
        xs = [g.view(-1) if g.is_contiguous() else g.contiguous().view(-1) for g in grad]
    rows = kernel_rows(rows)
    k = rows[0].shape[0]
    if k == 0:
        return
    tol = _small.pass_tol(grad[0].dtype, k)

    out = be.inner(xs, rows, not orthonormal).cpu()
    c, n = out[:k], float(out[k])
    if not math.isfinite(n):
        return  # non-finite grad: left untouched (documented)
    if not bool(torch.isfinite(out).all()):
        raise ValueError("basis has non-finite entries (inf or nan)")
    m: Optional[Tensor] = None
    if not orthonormal:
        m, _, ok = _small.chol_drop(_small.unpack_gram(out[k + 1 :], k), rtol)
        if not ok:
            qdt = torch.float32 if rows[0].dtype in HALF_DTYPES else rows[0].dtype
            q = orthonormalize_rows(rows, rtol, qdt, backend)
            if q.shape[0] == 0:
                return
            sizes = [x.shape[1] for x in rows]
            qrows, o = [], 0
            for s in sizes:
                qrows.append(q[:, o : o + s])
                o += s
            out = be.inner(xs, qrows, False).cpu()
            _run_passes(be, xs, qrows, out[: q.shape[0]], float(out[-1]), None, tol)
            _write_back(grad, xs)
            return
        if m is None:
            return  # every basis vector is zero: the span is {0}
    _run_passes(be, xs, rows, c, n, m, tol)
    _write_back(grad, xs)


def _write_back(grad: List[Tensor], xs: List[Tensor]) -> None:
    for g, x in zip(grad, xs):
        if not g.is_contiguous():
            g.copy_(x.view(g.shape))


@torch.library.custom_op("uno::project_", mutates_args=("grad",))
def _project_op(
    grad: List[Tensor], rows: List[Tensor], orthonormal: bool, rtol: float, backend: str
) -> None:
    project_rows_(grad, rows, orthonormal, rtol, backend or None)


@_project_op.register_fake
def _(grad: List[Tensor], rows: List[Tensor], orthonormal: bool, rtol: float, backend: str) -> None:
    return None


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
    write. A grad with inf/nan entries is left unchanged.
    """
    pieces = as_pieces(grad, "grad")
    rows: List[Tensor]
    if isinstance(basis, Basis) and not torch.compiler.is_compiling():
        check_basis_for(basis, pieces, "basis")
        rows, orthonormal = basis._row_blocks(), True  # cached views with their layout read once
    else:
        rows, orthonormal = rows_for(basis, pieces, "basis")
    tol = _small.check_rtol(rtol, rows[0].dtype if not orthonormal else pieces[0].dtype)
    if direct_ok(pieces, rows):  # plain eager call: skip the dispatcher's per-tensor layers
        project_rows_(pieces, rows, orthonormal, tol, backend or None)
        bump_versions(pieces)
        return
    _project_op(pieces, list(rows), orthonormal, tol, backend or "")  # the op takes plain lists
