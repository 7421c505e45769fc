"""Reference `ghost_gram`: per-sample gradient inner products of a factored layer, in plain torch.

For layer inputs ``a`` (B, T, d) and output gradients ``g`` (B, T, p) the per-sample gradient of sample i
is ``g_i^T a_i`` (p, d), and ``Gram[i, j] = sum_{s,t} (a_i a_j^T)[s, t] * (g_i g_j^T)[s, t]``.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def ghost_gram(
    a: Tensor,
    g: Tensor,
    a2: Optional[Tensor] = None,
    g2: Optional[Tensor] = None,
    diag: bool = False,
    upcast: bool = True,
) -> Tensor:
    """Ghost Gram matrix of per-sample gradients (the executable spec).

    Args:
        a: (B1, T1, d) layer inputs.  g: (B1, T1, p) layer output gradients.
        a2, g2: (B2, T2, d), (B2, T2, p) a second batch (cross Gram); default: the first.
        diag: return only the diagonal (squared per-sample gradient norms), shape (B1,).
        upcast: compute in float64 (else in the input dtype, for error baselines).

    Returns:
        float64 (B1, B2) Gram matrix, or (B1,) when ``diag``.
    """
    ct = torch.float64 if upcast else a.dtype
    A, G = a.to(ct), g.to(ct)
    if diag:
        s = A @ A.transpose(1, 2)
        r = G @ G.transpose(1, 2)
        return (s * r).sum((1, 2)).to(torch.float64)
    sym = a2 is None
    A2 = A if a2 is None else a2.to(ct)
    G2 = G if g2 is None else g2.to(ct)
    out = torch.empty(A.shape[0], A2.shape[0], dtype=torch.float64, device=a.device)
    for i in range(A.shape[0]):
        j0 = i if sym else 0  # a symmetric Gram: pairs j >= i, mirrored (exactly symmetric)
        s = torch.einsum("sd,jtd->jst", A[i], A2[j0:])
        r = torch.einsum("sp,jtp->jst", G[i], G2[j0:])
        v = (s * r).sum((1, 2)).to(torch.float64)
        out[i, j0:] = v
        if sym:
            out[j0:, i] = v
    return out
