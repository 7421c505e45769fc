"""The algorithms of the ops on canonical row blocks, over one backend's primitives.

Every function takes ``be``, the backend module :func:`uno._backends.get` returned for the call, and
canonical inputs (vector pieces, ``(k, n_t)`` row blocks, see :mod:`uno.ops._vectors`); the op bodies
of :mod:`uno.ops.library` and the public functions' eager fast paths call them.

``project_rows_`` (``uno.project_``), two passes over memory in the common case:

* Pass A, ``inner``: the coefficients ``c = V g`` and ``‖g‖²`` (with raw vectors also their Gram matrix
  ``G = V Vᵀ``, so that ``Q = M V`` with ``M`` from a Cholesky of G is orthonormal without ever
  materialising Q). If ``‖Q g‖ <= tol·‖g‖`` g is already orthogonal and is left bit-for-bit untouched.
* Pass B, ``project``: ``g ← g − Vᵀ y`` (``y = c`` for a Basis, ``Mᵀ M c`` for raw vectors), which
  returns the coefficients of the *new* g in the same pass. When g lay almost inside the span, rounding
  leaves a component of order ``eps·‖g_old‖`` that is large against the small ``‖g_new‖``: the returned
  coefficients show it and another pass removes it (classical Gram-Schmidt, twice is enough; at most
  ``MAX_PASSES`` passes).

Raw vectors that are too ill-conditioned for the Gram route (see :mod:`uno.ops._small`) are first
orthonormalised into a temporary buffer (the only one proportional to P this op ever allocates).
A grad with non-finite entries is left as it is (so that mixed-precision inf checks still see it).

``orthonormalize_rows`` (``uno.orthonormalize``), CholeskyQR2 with float64 Gram matrices (4 passes
over the k vectors, O(k²) work each):
  1. ``G = V Vᵀ`` (float64) → Cholesky with the rank rule → ``M`` (r × k); 2. ``Q₁ = M V``;
  3. ``G₂ = Q₁ Q₁ᵀ ≈ I`` → ``R₂⁻ᵀ``; 4. ``Q = R₂⁻ᵀ Q₁`` in place — skipped when ``max|G₂ − I|`` is already
  within ``pass_tol`` (2·eps·√r of the Basis dtype: what the rounding of a stored Q allows anyway), the
  usual case for well-conditioned vectors. Step 3 itself is skipped when a rounding-error bound
  computed from G and M alone (:func:`uno.ops._small.orthogonality_bound`) already proves
  ``max|G₂ − I|`` within ``pass_tol``: float32 vectors with a well-conditioned Gram (for k = 8 random
  VAE-sized vectors the bound is ~1.05·eps against 2·eps·√8), so the call reads the vectors twice and
  writes Q once.
When a residual is too small for a float64 Gram to resolve (condition number beyond ~1e5, or a vector
near the rank rule's threshold) or the second Gram is far from I, the fallback is re-orthogonalised
classical Gram-Schmidt in vector space (``orthogonalize_new_row`` per vector, as ``Basis.append_``),
which keeps orthogonality to working precision for any conditioning at O(k²) passes. It replaces the
Householder fallback of the textbook: Householder needs a P × k working copy and gives up the
multi-tensor layout.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import List, Optional, Sequence

import torch
from torch import Tensor

from uno._abi import wide_dtype
from uno._backends._layout import Pieces, RowBlocks
from uno._backends._rowtable import RowTable
from uno.ops import _small
from uno.ops._checks import check_disjoint, check_no_overlap, check_no_overlap_span, check_writable

MAX_PASSES = 4  # classical Gram-Schmidt passes of one call at most (twice is enough; margin)


def pass_tol(dtype: torch.dtype, k: int) -> float:
    """When ``‖Q x‖ <= pass_tol·‖x‖`` x counts as orthogonal to the basis and no further pass runs.

    A float x that is exactly orthogonal before rounding to ``dtype`` shows ``|<q_j, x>| <= eps/2·‖x‖``
    per direction, so ``‖Q x‖ <= sqrt(k)·eps/2·‖x‖``; the factor 2 above that leaves room for the
    float64 reductions' own rounding.
    """
    return 2.0 * float(torch.finfo(dtype).eps) * math.sqrt(max(k, 1))


def for_backend(be: ModuleType, rows: Sequence[Tensor]) -> List[Tensor]:
    """``rows`` as backend ``be`` reads them: a :class:`RowTable` stays one where the backend reads
    row tables (``ROW_TABLES``), else it becomes its stacked ``(k, n_t)`` blocks."""
    if isinstance(rows, RowTable) and not getattr(be, "ROW_TABLES", False):
        return rows.stacked()
    return list(rows) if not isinstance(rows, list) else rows


def op_rows(rows: Sequence[Tensor]) -> List[Tensor]:
    """``rows`` as a custom op's schema takes them: plain ``(k, n_t)`` tensors (a RowTable stacked)."""
    return rows.stacked() if isinstance(rows, RowTable) else list(rows)


def row_count(rows: Sequence[Tensor]) -> int:
    """k, the number of rows of a row set (blocks or a table)."""
    return rows.k if isinstance(rows, RowTable) else int(rows[0].shape[0])


def row_sizes(rows: Sequence[Tensor]) -> List[int]:
    """The piece sizes ``n_t`` of a row set."""
    return list(rows.ns) if isinstance(rows, RowTable) else [int(x.shape[1]) for x in rows]


def kernel_rows(rows: Sequence[Tensor]) -> List[Tensor]:
    """Rows as the kernels accept them: unit element stride and non-overlapping rows."""
    if isinstance(rows, (RowBlocks, RowTable)):
        return rows  # validated when made
    out = []
    for r in rows:
        if r.stride(1) != 1 or (r.shape[0] > 1 and r.stride(0) < r.shape[1]):
            r = r.contiguous()
        out.append(r)
    return out


def flat(x: Sequence[Tensor]) -> List[Tensor]:
    """Read-only 1-D views of the pieces (a copy only for non-contiguous pieces)."""
    return [p.reshape(-1) if p.is_contiguous() else p.contiguous().reshape(-1) for p in x]


def inner(be: ModuleType, x: List[Tensor], rows: Sequence[Tensor], with_gram: bool) -> Tensor:
    """The ``inner`` primitive on the ops' inputs (x: any-shaped pieces or empty; rows: row blocks)."""
    return be.inner(flat(x) if x else None, kernel_rows(for_backend(be, rows)), with_gram)


# -- project_ -----------------------------------------------------------------------------------------
def _run_passes(
    be: ModuleType,
    xs: List[Tensor],
    rows: List[Tensor],
    c: List[float],
    n: float,
    m: Optional[Tensor],
    tol: float,
) -> None:
    """Passes B, C, ...: subtract until the residual coefficients are at rounding level.

    Kahan-Parlett "twice is enough": when a re-orthogonalisation pass (the second or later) still
    shrinks the norm by more than half, what is left is rounding noise of a vector that lies in the
    span to working precision, and the exact answer, zero, is written.

    The coefficients are Python floats (``c``; ``m`` as nested lists): O(k²) host arithmetic instead
    of torch ops on k-element tensors, which right after a kernel run from cold caches.
    """
    k = row_count(rows)
    device = rows[0].device
    mt: Optional[List[List[float]]] = m.tolist() if m is not None else None
    passes = 0
    while True:
        # coefficients in an orthonormal basis of the span
        cq = c if mt is None else [math.fsum(a * b for a, b in zip(row, c)) for row in mt]
        if math.sqrt(math.fsum(v * v for v in cq)) <= tol * math.sqrt(max(n, 0.0)):
            return
        if passes == MAX_PASSES:
            return
        y = (
            cq
            if mt is None
            else [math.fsum(mt[i][j] * cq[i] for i in range(len(mt))) for j in range(k)]
        )
        yt = torch.tensor(y, dtype=torch.float64)
        out = be.project(xs, rows, yt if device.type == "cpu" else yt.to(device)).tolist()
        passes += 1
        c, n_new = out[:k], out[k]
        if passes >= 2 and n_new < 0.25 * n:
            for x in xs:
                x.zero_()
            return
        n = n_new


def project_rows_(
    be: ModuleType, grad: List[Tensor], rows: List[Tensor], orthonormal: bool, rtol: float
) -> None:
    """``uno.project_`` on canonical inputs: grad pieces (any shape) and (k, n_t) row blocks."""
    xs: List[Tensor]
    rows = for_backend(be, rows)
    # Fast path for a Basis on the pointer-based backends: every piece's layout is read once for the
    # overlap check and both passes (the per-piece Python cost dominates below ~1e6 elements).
    basis_span = rows.span if isinstance(rows, RowBlocks) else None
    pieces = Pieces.of(grad) if basis_span is not None and be.NAME in ("cpu", "cuda") else None
    if pieces is not None and basis_span is not None:
        check_no_overlap_span(pieces.ptrs, pieces.ns, pieces.esz, basis_span, "basis")
        xs = pieces  # the kernels take pointers and sizes: no 1-D views needed
    else:
        for i, g in enumerate(grad):
            check_writable(g, f"grad[{i}]")
        if isinstance(rows, RowTable):  # separate vectors: every piece of every vector is checked
            check_disjoint(
                [(f"grad[{i}]", g) for i, g in enumerate(grad)],
                rows.named("basis"),
                "project_ writes grad in place, so grad must not alias itself or the basis",
            )
        else:
            check_no_overlap(grad, rows, "basis")
        # 1-D views of the grad pieces; non-contiguous pieces go through a copy written back after.
        xs = [g.view(-1) if g.is_contiguous() else g.contiguous().view(-1) for g in grad]
    rows = kernel_rows(rows)
    k = row_count(rows)
    if k == 0:
        return
    tol = pass_tol(grad[0].dtype, k)

    out = be.inner(xs, rows, not orthonormal).tolist()  # host math on Python floats
    c, n = out[:k], out[k]
    if not math.isfinite(n):
        return  # non-finite grad: left untouched (documented)
    if not _small.all_finite(out):
        raise ValueError("basis has non-finite entries (inf or nan)")
    m: Optional[Tensor] = None
    if not orthonormal:
        m, _, ok = _small.chol_drop(_small.gram_of(out[k + 1 :], k), rtol)
        if not ok:
            q = orthonormalize_rows(be, rows, rtol, wide_dtype(rows[0].dtype))
            if q.shape[0] == 0:
                return
            qrows = pieces_of(q, row_sizes(rows))
            out = be.inner(xs, qrows, False).tolist()
            _run_passes(be, xs, qrows, out[: q.shape[0]], out[-1], None, tol)
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


# -- orthonormalize and Basis.append_ ------------------------------------------------------------------
def pieces_of(buf: Tensor, sizes: List[int]) -> List[Tensor]:
    """The ``(r, n_t)`` column blocks of an ``(r, sum(sizes))`` buffer."""
    out, o = [], 0
    for n in sizes:
        out.append(buf[:, o : o + n])
        o += n
    return out


def orthonormalize_rows(
    be: ModuleType, rows: List[Tensor], rtol: float, dtype: torch.dtype
) -> Tensor:
    """CholeskyQR2 with a CGS2 fallback on canonical row blocks; returns the ``[r, P]`` buffer.

    The Gram pass of Q₁ is skipped when :func:`uno.ops._small.orthogonality_bound` already proves it
    orthonormal, except on a backend whose sums run over other ranks' elements (``GLOBAL_SUMS``:
    the bound needs their count).
    """
    certify = not getattr(be, "GLOBAL_SUMS", False)
    device = rows[0].device
    rows = kernel_rows(for_backend(be, rows))
    if rows[0].dtype != dtype:  # float16/bfloat16 vectors → a float32 Basis: convert once
        rows = [x.to(dtype) for x in op_rows(rows)]
    k = row_count(rows)
    sizes = row_sizes(rows)
    numel = sum(sizes)
    packed = be.inner(None, rows, True).tolist()  # host math on Python floats (uno.ops._small)
    if not _small.all_finite(packed):
        raise ValueError("the vectors have non-finite entries (inf or nan)")
    g = _small.gram_of(packed[k + 1 :], k)
    m, kept, ok = _small.chol_drop(g, rtol)
    if ok and m is None:
        return torch.zeros(0, numel, dtype=dtype, device=device)
    if ok and m is not None:
        r = m.shape[0]
        buf = torch.empty(r, numel, dtype=dtype, device=device)
        q = pieces_of(buf, sizes)
        be.combine(q, rows, m.to(device))
        if certify and _small.orthogonality_bound(g, m, kept, numel, dtype) <= pass_tol(dtype, r):
            return buf  # proven orthonormal to working precision: no pass measures it
        g2 = _small.gram_of(be.inner(None, q, True).tolist()[r + 1 :], r)
        err = _small.max_off_identity(g2)
        if err <= pass_tol(dtype, r):
            # Q₁ is already orthonormal to working precision: step 4 would not improve it
            return buf
        if err < 0.1:
            m2 = _small.chol_inverse_t(g2)
            if m2 is not None:
                be.combine(q, q, m2.to(device))
                return buf
        del buf, q  # freed before the fallback's buffer: one result-sized buffer alive at a time
    buf = torch.zeros(k, numel, dtype=dtype, device=device)
    r = _cgs2(be, rows, buf, rtol)
    return buf[:r].clone() if r < k else buf


def _cgs2(be: ModuleType, rows: List[Tensor], out: Tensor, rtol: float) -> int:
    """Vector-space re-orthogonalised Gram-Schmidt of ``rows`` into ``out`` ([k, P]); returns r."""
    r = 0
    sizes = row_sizes(rows)
    offsets, o = [], 0
    for n in sizes:
        offsets.append(o)
        o += n
    k = row_count(rows)
    for j in range(k):
        dst = [out[r, o : o + n] for o, n in zip(offsets, sizes)]
        for t, d in enumerate(dst):
            d.copy_(rows.piece(t, j) if isinstance(rows, RowTable) else rows[t][j])
        kept = [out[:r, o : o + n] for o, n in zip(offsets, sizes)]
        if orthogonalize_new_row(be, dst, kept, rtol):
            r += 1
    out[r:].zero_()
    return r


def orthogonalize_new_row(
    be: ModuleType, new: List[Tensor], rows: List[Tensor], rtol: float
) -> bool:
    """Orthogonalise ``new`` (pieces of one buffer row) against ``rows`` (k >= 0) and normalise it.

    Returns False when the rank rule drops it (its residual is ``<= rtol`` times its norm).
    """
    as_rows = [p.view(1, -1) for p in new]
    k = rows[0].shape[0] if rows else 0
    if k == 0:
        n0 = float(be.inner(new, as_rows, False)[1])
        n = n0
    else:
        out = be.inner(new, rows, False)
        c, n0 = out[:k], float(out[k])
        n = n0
        tol = pass_tol(new[0].dtype, k)
        for _ in range(MAX_PASSES):
            if not math.isfinite(n) or float(c.norm()) <= tol * math.sqrt(n):
                break
            out = be.project(new, rows, c)
            c, n = out[:k], float(out[k])
    if not math.isfinite(n0) or not math.isfinite(n):
        raise ValueError("the vector has non-finite entries (inf or nan); it cannot join a basis")
    if n0 == 0.0 or n <= (rtol * rtol) * n0:
        return False
    scale = torch.tensor([[1.0 / math.sqrt(n)]], dtype=torch.float64, device=new[0].device)
    be.combine(as_rows, as_rows, scale)
    return True
