"""Test oracles in float64 (plain torch, on concatenated copies: fine for tests, never in the package)."""

from __future__ import annotations

from typing import List, Sequence

import torch
from torch import Tensor


def flat64(pieces: Sequence[Tensor]) -> Tensor:
    return torch.cat([p.detach().reshape(-1).to("cpu", torch.float64) for p in pieces])


def oracle_project(g: Sequence[Tensor], vectors: Sequence[Sequence[Tensor]]) -> Tensor:
    """g − Π g in float64 with Π from an SVD of the stacked vectors (rank by a relative threshold)."""
    x = flat64(g)
    v = torch.stack([flat64(vec) for vec in vectors])  # (k, P)
    u, s, _ = torch.linalg.svd(v.T, full_matrices=False)
    keep = s > s.max() * 1e-10 if s.numel() and s.max() > 0 else s > 0
    q = u[:, keep]
    return x - q @ (q.T @ x)


def rand_pieces(shapes, dtype=torch.float32, device="cpu", gen=None) -> List[Tensor]:
    return [
        torch.randn(s, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
        for s in shapes
    ]


def max_abs_cos(g: Sequence[Tensor], vectors: Sequence[Sequence[Tensor]]) -> float:
    """max_j |<g, v_j>| / (‖g‖ ‖v_j‖) in float64."""
    x = flat64(g)
    nx = x.norm()
    worst = 0.0
    for vec in vectors:
        v = flat64(vec)
        nv = v.norm()
        if nv > 0 and nx > 0:
            worst = max(worst, float((x @ v).abs() / (nx * nv)))
    return worst
