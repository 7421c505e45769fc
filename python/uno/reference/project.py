"""Reference `project`: x ← x − Σ_j y_j v_j, then the inner products of the new x (one fused pass)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


def project(x: Sequence[Tensor], rows: Sequence[Tensor], y: Tensor) -> Tensor:
    """Subtract a combination of rows from x in place and measure the result.

    Args:
        x: ``T`` 1-D tensors, updated in place.
        rows: ``T`` tensors of shape ``(k, n_t)``.
        y: float64 ``(k,)`` coefficients.

    Returns:
        float64 ``(k + 1,)``: ``<v_j, x_new>`` for every j, then ``‖x_new‖²``.
    """
    k = rows[0].shape[0]
    device = rows[0].device
    out = torch.zeros(k + 1, dtype=torch.float64, device=device)
    y64 = y.to(torch.float64)
    for xt, r in zip(x, rows):
        r64 = r.to(torch.float64)
        new = xt.to(torch.float64) - y64 @ r64
        xt.copy_(new)  # rounded once to x's dtype
        stored = xt.to(torch.float64)  # measure what was stored, as the fast kernels do
        out[:k] += r64 @ stored
        out[k] += stored @ stored
    return out
