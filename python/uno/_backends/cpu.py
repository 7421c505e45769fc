"""The cpu backend: the primitives of docs/kernels.md as the C++ kernels of csrc/cpu/.

The adapter passes data pointers, row strides and sizes of the pieces to ``uno._C`` (no copy, no
concatenation) together with a float64 output buffer of ``W`` values; the kernels split the element
range into ``torch.get_num_threads()`` fixed chunks (deterministic for a given thread count) and release
the GIL while they run.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import Tensor

from uno._backends._layout import (
    check_pair,
    code,
    coefficients,
    row_layout,
    row_ptrs,
    vector_ptrs,
)


def _lib() -> Any:
    from uno import _C

    return _C


def _threads() -> int:
    return max(1, int(torch.get_num_threads()))


_CPU = torch.device("cpu")


def inner(x: Optional[Sequence[Tensor]], rows: Sequence[Tensor], with_gram: bool) -> Tensor:
    """``[<row_j, x>]_j, |x|^2`` (and the packed upper Gram triangle) in float64; see docs/kernels.md.

    Args:
        x: ``T`` contiguous 1-D CPU tensors of ``n_t`` elements, or ``None``.
        rows: ``T`` CPU tensors of shape ``(k, n_t)`` with ``stride(1) == 1``.
        with_gram: append ``G[i, j] = <row_i, row_j>`` for ``i <= j``, row by row.

    Returns:
        float64 ``(k + 1 + (k(k+1)/2 if with_gram else 0),)`` CPU tensor.
    """
    k = int(rows[0].shape[0]) if len(rows) else 0
    lds, ns = row_layout(rows, k, "rows", "cpu")
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
        x_ptrs,
        row_ptrs(rows),
        lds,
        ns,
        k,
        bool(with_gram),
        x_code,
        row_code,
        int(out.data_ptr()),
        _threads(),
    )
    return out


def project(x: Sequence[Tensor], rows: Sequence[Tensor], y: Tensor) -> Tensor:
    """In place ``x <- x - sum_j y_j row_j``; returns ``[<row_j, x_new>]_j, |x_new|^2`` (float64).

    Args:
        x: ``T`` contiguous 1-D CPU tensors, updated in place (float64 arithmetic, rounded once).
        rows: ``T`` CPU tensors of shape ``(k, n_t)`` with ``stride(1) == 1``.
        y: ``(k,)`` coefficients (converted to float64).

    Returns:
        float64 ``(k + 1,)``: the inner products of the stored x with every row, then its squared norm.
    """
    k = int(rows[0].shape[0]) if len(rows) else 0
    lds, ns = row_layout(rows, k, "rows", "cpu")
    x_ptrs = vector_ptrs(x, ns, _CPU, "x")
    check_pair(x[0].dtype, rows[0].dtype)
    y64 = coefficients(y, (k,), _CPU, "y")
    out = torch.empty(k + 1, dtype=torch.float64)
    _lib().project_cpu(
        x_ptrs,
        row_ptrs(rows),
        lds,
        ns,
        k,
        int(y64.data_ptr()),
        code(x[0].dtype, "x"),
        code(rows[0].dtype, "rows"),
        int(out.data_ptr()),
        _threads(),
    )
    return out


def combine(out: Sequence[Tensor], rows: Sequence[Tensor], m: Tensor) -> None:
    """Write ``out[t] = m @ rows[t]`` for every piece (float64 arithmetic, rounded once).

    Args:
        out: ``T`` CPU tensors of shape ``(r, n_t)``, ``stride(1) == 1``, rows' dtype; may be the same
            memory as ``rows`` (r <= k, same row stride and offsets).
        rows: ``T`` CPU tensors of shape ``(k, n_t)`` with ``stride(1) == 1``.
        m: ``(r, k)`` matrix (converted to float64).
    """
    k = int(rows[0].shape[0]) if len(rows) else 0
    if m.dim() != 2 or m.shape[1] != k:
        raise ValueError(f"m has shape {tuple(m.shape)}, expected (r, {k})")
    r = int(m.shape[0])
    lds, ns = row_layout(rows, k, "rows", "cpu")
    out_lds, out_ns = row_layout(out, r, "out", "cpu")
    if out_ns != ns:
        raise ValueError(f"out pieces have {out_ns} columns, rows have {ns}")
    if out[0].dtype != rows[0].dtype:
        raise TypeError(f"out has dtype {out[0].dtype}, expected rows' dtype {rows[0].dtype}")
    m64 = coefficients(m, (r, k), _CPU, "m")
    _lib().combine_cpu(
        [int(o.data_ptr()) for o in out],
        out_lds,
        [int(rr.data_ptr()) for rr in rows],
        lds,
        ns,
        k,
        r,
        int(m64.data_ptr()),
        code(rows[0].dtype, "rows"),
        _threads(),
    )
