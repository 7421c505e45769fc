"""The triton backend: the primitives of docs/kernels.md as Triton kernels, one launch per piece.

Each launch adds its programs' float64 partial sums to the rows of one ``[max_programs, W]`` scratch
buffer (launches of a call run in stream order); the result is ``scratch.sum(0)``: no atomics, a
fixed partition and a fixed order, hence deterministic. Nothing proportional to the vector length is
allocated and no piece is copied or concatenated.
"""

from __future__ import annotations

import contextlib
from typing import ContextManager, Optional, Sequence

import torch
from torch import Tensor

from uno import _triton as cfg
from uno._backends._layout import row_layout, vector_ptrs
from uno._triton.combine import combine_piece
from uno._triton.inner import inner_piece
from uno._triton.project import project_piece


def _device_guard(device: torch.device) -> ContextManager[object]:
    # Triton launches on the current CUDA device, which need not be the pieces' device.
    if device.type == "cuda":
        return torch.cuda.device(device)
    return contextlib.nullcontext()


def inner(x: Optional[Sequence[Tensor]], rows: Sequence[Tensor], with_gram: bool) -> Tensor:
    """``[<row_j, x>]_j, |x|^2`` (and the packed upper Gram triangle) in float64; see docs/kernels.md.

    Args:
        x: ``T`` contiguous 1-D tensors of ``n_t`` elements, or ``None``.
        rows: ``T`` tensors of shape ``(k, n_t)`` with ``stride(1) == 1``.
        with_gram: append ``G[i, j] = <row_i, row_j>`` for ``i <= j``, row by row.

    Returns:
        float64 ``(k + 1 + (k(k+1)/2 if with_gram else 0),)`` on the pieces' device.
    """
    k = rows[0].shape[0]
    device = rows[0].device
    width = k + 1 + (k * (k + 1) // 2 if with_gram else 0)
    _, ns = row_layout(rows, k, "rows", device.type)
    if x is not None:
        vector_ptrs(x, ns, device, "x")
    cfg.check_dtypes(x[0].dtype if x is not None else rows[0].dtype, rows[0].dtype)
    n_programs = cfg.max_programs(device)
    part = torch.zeros(n_programs, width, dtype=torch.float64, device=device)
    with _device_guard(device):
        for t, r in enumerate(rows):
            inner_piece(part, x[t] if x is not None else None, r, with_gram, n_programs)
    return part.sum(0)


def project(x: Sequence[Tensor], rows: Sequence[Tensor], y: Tensor) -> Tensor:
    """In place ``x <- x - sum_j y_j row_j``; returns ``[<row_j, x_new>]_j, |x_new|^2`` (float64).

    Args:
        x: ``T`` contiguous 1-D tensors, updated in place (rounded once to their dtype).
        rows: ``T`` tensors of shape ``(k, n_t)`` with ``stride(1) == 1``.
        y: float64 ``(k,)`` on the pieces' device.

    Returns:
        float64 ``(k + 1,)``: the inner products of the stored x with every row, then its squared norm.
    """
    k = rows[0].shape[0]
    device = rows[0].device
    _, ns = row_layout(rows, k, "rows", device.type)
    vector_ptrs(x, ns, device, "x")
    if y.numel() != k:
        raise ValueError(f"y has {y.numel()} elements, expected k={k}")
    cfg.check_dtypes(x[0].dtype, rows[0].dtype)
    y64 = y.to(device=device, dtype=torch.float64).contiguous()
    n_programs = cfg.max_programs(device)
    part = torch.zeros(n_programs, k + 1, dtype=torch.float64, device=device)
    with _device_guard(device):
        for xt, r in zip(x, rows):
            project_piece(part, xt, r, y64, n_programs)
    return part.sum(0)


def combine(out: Sequence[Tensor], rows: Sequence[Tensor], m: Tensor) -> None:
    """Write ``out[t] = m @ rows[t]`` for every piece (float64 arithmetic, rounded once).

    Args:
        out: ``T`` tensors of shape ``(r, n_t)``, ``stride(1) == 1``, rows' dtype; may be the same
            memory as ``rows`` (in-place transform of a basis).
        rows: ``T`` tensors of shape ``(k, n_t)`` with ``stride(1) == 1``.
        m: float64 ``(r, k)`` on the pieces' device.
    """
    device = rows[0].device
    k = rows[0].shape[0]
    if m.dim() != 2 or m.shape[1] != k:
        raise ValueError(f"m has shape {tuple(m.shape)}, expected (r, {k})")
    _, ns = row_layout(rows, k, "rows", device.type)
    _, out_ns = row_layout(out, int(m.shape[0]), "out", device.type)
    if out_ns != ns:
        raise ValueError(f"out pieces have {out_ns} columns, rows have {ns}")
    if out[0].dtype != rows[0].dtype:
        raise TypeError(f"out has dtype {out[0].dtype}, expected rows' dtype {rows[0].dtype}")
    cfg.check_dtypes(rows[0].dtype, rows[0].dtype)
    m64 = m.to(device=device, dtype=torch.float64).contiguous()
    n_programs = cfg.max_programs(device)
    with _device_guard(device):
        for o, r in zip(out, rows):
            combine_piece(o, r, m64, n_programs)


__all__ = ["combine", "inner", "project"]
