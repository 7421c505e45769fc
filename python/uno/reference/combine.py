"""Reference `combine`: out ← M · rows, column by column (in place allowed)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


def combine(out: Sequence[Tensor], rows: Sequence[Tensor], m: Tensor) -> None:
    """Write ``out[t] = m @ rows[t]`` for every piece, computing in float64.

    Args:
        out: ``T`` tensors of shape ``(r, n_t)``; may be the same memory as ``rows``.
        rows: ``T`` tensors of shape ``(k, n_t)``.
        m: float64 ``(r, k)``.
    """
    m64 = m.to(torch.float64)
    for o, r in zip(out, rows):
        o.copy_(
            m64 @ r.to(torch.float64)
        )  # the product is materialised before the copy: in place is safe
