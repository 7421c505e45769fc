"""Reference `inner`: inner products of x with k rows, ‖x‖², and optionally the rows' Gram matrix."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor


def inner(x: Optional[Sequence[Tensor]], rows: Sequence[Tensor], with_gram: bool) -> Tensor:
    """Multi-tensor inner products, accumulated in float64.

    Args:
        x: ``T`` 1-D tensors (``n_t`` elements each), or ``None``.
        rows: ``T`` tensors of shape ``(k, n_t)``; row ``j`` of every piece together is vector ``j``.
        with_gram: also return the packed upper triangle of the rows' Gram matrix.

    Returns:
        float64 tensor of length ``k + 1 (+ k(k+1)/2)``: ``[<v_j, x> for j], ‖x‖², G[i, j] for i <= j``.
    """
    k = rows[0].shape[0]
    device = rows[0].device
    c = torch.zeros(k, dtype=torch.float64, device=device)
    n = torch.zeros((), dtype=torch.float64, device=device)
    g = torch.zeros(k, k, dtype=torch.float64, device=device)
    for t, r in enumerate(rows):
        r64 = r.to(torch.float64)
        if x is not None:
            x64 = x[t].to(torch.float64)
            c += r64 @ x64
            n += x64 @ x64
        if with_gram:
            g += r64 @ r64.T
    parts = [c, n.reshape(1)]
    if with_gram:
        iu = torch.triu_indices(k, k, device=device)
        parts.append(g[iu[0], iu[1]])
    return torch.cat(parts)
