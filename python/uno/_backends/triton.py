"""The triton backend: the primitives of docs/kernels.md as Triton kernels, one launch per piece.

Each launch adds its programs' float64 partial sums to the rows of one ``[max_programs, W]`` scratch
buffer (launches of a call run in stream order); the result is ``scratch.sum(0)``: no atomics, a
fixed partition and a fixed order, hence deterministic (``optim_step`` and ``ghost_gram`` are the
kernels' own entry points). Nothing proportional to the vector length is
allocated and no piece is copied or concatenated. Arguments and results are those of the spec,
:mod:`uno.reference`.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from uno import _triton as cfg
from uno._backends._layout import check_combine, row_layout, vector_ptrs
from uno._triton.combine import combine_piece
from uno._triton.ghost_gram import ghost_gram
from uno._triton.inner import inner_piece
from uno._triton.optim_step import optim_step
from uno._triton.project import project_piece

NAME = "triton"

__all__ = ["NAME", "combine", "ghost_gram", "inner", "optim_step", "project"]


def inner(x: Optional[Sequence[Tensor]], rows: Sequence[Tensor], with_gram: bool) -> Tensor:
    """``[<row_j, x>]_j, |x|^2`` (and the packed upper Gram triangle) in float64."""
    k = rows[0].shape[0]
    device = rows[0].device
    width = k + 1 + (k * (k + 1) // 2 if with_gram else 0)
    _, ns = row_layout(rows, k, "rows", device.type)
    if x is not None:
        vector_ptrs(x, ns, device, "x")
    cfg.check_dtypes(x[0].dtype if x is not None else rows[0].dtype, rows[0].dtype)
    n_programs = cfg.max_programs(device)
    part = torch.zeros(n_programs, width, dtype=torch.float64, device=device)
    with cfg.device_guard(device):
        for t, r in enumerate(rows):
            inner_piece(part, x[t] if x is not None else None, r, with_gram, n_programs)
    return part.sum(0)


def project(x: Sequence[Tensor], rows: Sequence[Tensor], y: Tensor) -> Tensor:
    """In place ``x <- x - sum_j y_j row_j``; returns ``[<row_j, x_new>]_j, |x_new|^2`` (float64)."""
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
    with cfg.device_guard(device):
        for xt, r in zip(x, rows):
            project_piece(part, xt, r, y64, n_programs)
    return part.sum(0)


def combine(out: Sequence[Tensor], rows: Sequence[Tensor], m: Tensor) -> None:
    """Write ``out[t] = m @ rows[t]`` for every piece (float64 arithmetic, rounded once)."""
    device = rows[0].device
    check_combine(out, rows, m, device.type)
    cfg.check_dtypes(rows[0].dtype, rows[0].dtype)
    m64 = m.to(device=device, dtype=torch.float64).contiguous()
    n_programs = cfg.max_programs(device)
    with cfg.device_guard(device):
        for o, r in zip(out, rows):
            combine_piece(o, r, m64, n_programs)
