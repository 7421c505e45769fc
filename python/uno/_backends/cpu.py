"""The cpu backend: the primitives of docs/kernels.md as the C++ kernels of csrc/cpu/.

Every function passes data pointers, row strides and sizes of the pieces to ``uno._C`` (no copy, no
concatenation) together with a float64 output buffer; rows may also be a
:class:`~uno._backends._rowtable.RowTable` (k separate vectors: one pointer per piece and row, never
stacked); the kernels split the element range into
``torch.get_num_threads()`` fixed chunks (deterministic for a given thread count) and release the GIL
while they run. Arguments and results are those of the spec, :mod:`uno.reference`.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from uno._abi import PHASE_WRITE, StepArgs
from uno._backends._layout import (
    check_combine,
    check_pair,
    code,
    coefficients,
    ghost_kwargs,
    ghost_out,
    row_layout,
    row_ptrs,
    step_kwargs,
    vector_ptrs,
)
from uno._backends._rowtable import RowTable

NAME = "cpu"
#: The kernels read row tables (``RowTable``: one pointer per piece and row), so the ops layer
#: passes separate vectors without stacking them (:func:`uno.ops._rows.for_backend`).
ROW_TABLES = True
_CPU = torch.device("cpu")


def _check_isa() -> None:
    """Refuse to load when ``_C`` could not honour ``UNO_CPU_ISA`` (docs/kernels.md, ISA levels).

    ``_C`` chooses the kernels' ISA level once, at its import; an unknown, unbuilt or unsupported
    ``UNO_CPU_ISA`` leaves it without CPU kernels (and ``uno.backends()`` says why) but importable,
    so the first CPU op raises here instead of running at a level nobody asked for.
    """
    try:
        from uno import _C
    except ImportError:  # pragma: no cover - the registry reports a missing core
        return
    err = getattr(_C, "cpu_isa_error", "")
    if err:
        raise ValueError(f"uno's cpu backend cannot run: {err}")


_check_isa()


def _lib() -> Any:
    from uno import _C

    return _C


def _kernel(name: str) -> Any:
    """``_C.<name>``, or a RuntimeError that says how to get it (an older compiled core)."""
    fn = getattr(_lib(), name, None)
    if fn is None:
        raise RuntimeError(
            f"uno._C lacks {name} (built before its csrc/cpu file existed?); rebuild the compiled "
            "core or use backend='reference'"
        )
    return fn


def _threads() -> int:
    return max(1, int(torch.get_num_threads()))


def _rows_args(rows: Sequence[Tensor]) -> Tuple[int, List[int], List[int], List[int]]:
    """``(k, row_ptrs, lds, ns)`` of a row set: ``(k, n_t)`` blocks (one pointer per piece) or a
    RowTable (``T * k`` pointers; ``lds`` then unread, passed as the sizes)."""
    if isinstance(rows, RowTable):
        if len(rows) and rows[0].device.type != "cpu":
            raise ValueError(f"this backend needs cpu tensors, got rows on {rows[0].device}")
        return rows.k, rows.ptrs, rows.ns, rows.ns
    k = int(rows[0].shape[0]) if len(rows) else 0
    lds, ns = row_layout(rows, k, "rows", "cpu")
    return k, row_ptrs(rows), lds, ns


def inner(x: Optional[Sequence[Tensor]], rows: Sequence[Tensor], with_gram: bool) -> Tensor:
    """``[<row_j, x>]_j, |x|^2`` (and the packed upper Gram triangle) in float64, on the CPU."""
    k, rptrs, lds, ns = _rows_args(rows)
    row_code = code(rows[0].dtype, "rows")
    if x is not None:
        x_ptrs = vector_ptrs(x, ns, _CPU, "x")
        check_pair(x[0].dtype, rows[0].dtype)
        x_code = code(x[0].dtype, "x")
    else:
        x_ptrs, x_code = [], row_code
    width = k + 1 + (k * (k + 1) // 2 if with_gram else 0)
    out = torch.empty(width, dtype=torch.float64)
    _lib().inner_cpu(
        x_ptrs, rptrs, lds, ns, k, bool(with_gram), x_code, row_code,
        int(out.data_ptr()), _threads(),
    )  # fmt: skip
    return out


def project(x: Sequence[Tensor], rows: Sequence[Tensor], y: Tensor) -> Tensor:
    """In place ``x <- x - sum_j y_j row_j``; returns ``[<row_j, x_new>]_j, |x_new|^2`` (float64)."""
    k, rptrs, lds, ns = _rows_args(rows)
    x_ptrs = vector_ptrs(x, ns, _CPU, "x")
    check_pair(x[0].dtype, rows[0].dtype)
    y64 = coefficients(y, (k,), _CPU, "y")
    out = torch.empty(k + 1, dtype=torch.float64)
    _lib().project_cpu(
        x_ptrs, rptrs, lds, ns, k, int(y64.data_ptr()), code(x[0].dtype, "x"),
        code(rows[0].dtype, "rows"), int(out.data_ptr()), _threads(),
    )  # fmt: skip
    return out


def combine(out: Sequence[Tensor], rows: Sequence[Tensor], m: Tensor) -> None:
    """Write ``out[t] = m @ rows[t]`` for every piece (float64 arithmetic, rounded once); ``out`` may
    be the memory of ``rows`` (r <= k, same row stride and offsets); ``rows`` may be a RowTable."""
    if isinstance(rows, RowTable):
        k, rptrs, lds, ns = _rows_args(rows)
        if m.dim() != 2 or m.shape[1] != k:
            raise ValueError(f"m has shape {tuple(m.shape)}, expected (r, {k})")
        r = int(m.shape[0])
        out_lds, out_ns = row_layout(out, r, "out", "cpu")
        if out_ns != ns:
            raise ValueError(f"out pieces have {out_ns} columns, rows have {ns}")
        if out[0].dtype != rows[0].dtype:
            raise TypeError(f"out has dtype {out[0].dtype}, expected rows' dtype {rows[0].dtype}")
    else:
        k, r, lds, ns, out_lds = check_combine(out, rows, m, "cpu")
        rptrs = row_ptrs(rows)
    m64 = coefficients(m, (r, k), _CPU, "m")
    _lib().combine_cpu(
        [int(o.data_ptr()) for o in out], out_lds, rptrs, lds, ns, k, r,
        int(m64.data_ptr()), code(rows[0].dtype, "rows"), _threads(),
    )  # fmt: skip


def optim_step(a: StepArgs) -> Tensor:
    """One phase of the fused optimizer step (csrc/cpu/optim_step.cpp)."""
    fn = _kernel("optim_step_cpu")
    out = torch.zeros(a.k if a.phase != PHASE_WRITE else 0, dtype=torch.float64)
    kwargs, keep = step_kwargs(a, _CPU)
    fn(
        **kwargs,
        out_ptr=int(out.data_ptr()) if a.phase != PHASE_WRITE else 0,
        num_threads=_threads(),
    )
    del keep  # the converted scalars outlived the kernel
    return out


def ghost_gram(
    a: Tensor, g: Tensor, a2: Optional[Tensor], g2: Optional[Tensor], diag: bool
) -> Tensor:
    """The ghost Gram matrix of one factored layer (csrc/cpu/ghost_gram.cpp)."""
    fn = _kernel("ghost_gram_cpu")
    out = ghost_out(a, a2, diag)
    fn(**ghost_kwargs(a, g, a2, g2, diag, out), num_threads=_threads())
    return out
