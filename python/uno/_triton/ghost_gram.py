"""Triton ``ghost_gram``: the Gram matrix of factored per-sample gradients without forming them.

Spec: :mod:`uno.reference.ghost_gram`. One program per sample pair (i, j): it walks (BS x BT) tiles of
the (T1 x T2) position pairs; for each tile it forms the two small Gram blocks ``A_i A2_j^T`` (over d)
and ``G_i G2_j^T`` (over p) with ``tl.dot`` in the compute dtype (float64 for float64 inputs, else
float32 with IEEE precision, no TF32), multiplies them elementwise in float64 and adds the products to a
float64 (BS x BT) accumulator that is summed once at the end. A symmetric Gram runs the programs with
``j >= i`` and stores both ``out[i, j]`` and ``out[j, i]``. No atomics: deterministic.
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

from uno import _triton as cfg


@triton.jit
def _block_gram(
    x_ptr, sx_t, sx_k, y_ptr, sy_t, sy_k, os_, ms, ot, mt, n_k,
    CDT: tl.constexpr, BS: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
):  # fmt: skip
    """The (BS x BT) block ``X[os_] @ Y[ot]ᵀ`` over the n_k features, in the compute dtype (tl.dot,
    IEEE precision): X and Y are (positions, features) views with strides (s_t, s_k)."""
    acc = tl.zeros([BS, BT], dtype=CDT)
    rk = tl.arange(0, BK)
    for k0 in range(0, n_k, BK):
        ok = k0 + rk
        mk = ok < n_k
        x = tl.load(
            x_ptr + os_[:, None] * sx_t + ok[None, :] * sx_k,
            mask=ms[:, None] & mk[None, :],
            other=0.0,
        ).to(CDT)
        y = tl.load(
            y_ptr + ok[:, None] * sy_k + ot[None, :] * sy_t,
            mask=mk[:, None] & mt[None, :],
            other=0.0,
        ).to(CDT)
        acc += tl.dot(x, y, input_precision="ieee", out_dtype=CDT)
    return acc


@triton.jit
def _ghost_gram_kernel(
    a_ptr,  # (B1, T1, D) strided
    g_ptr,  # (B1, T1, P) strided
    a2_ptr,  # (B2, T2, D) strided (the first batch when SYM)
    g2_ptr,  # (B2, T2, P) strided
    out_ptr,  # (B1, B2) or (B1,) float64, contiguous
    T1,
    T2,
    D,
    P,
    B2,
    sab,
    sat,
    sad,
    sgb,
    sgt,
    sgp,
    s2ab,
    s2at,
    s2ad,
    s2gb,
    s2gt,
    s2gp,
    CDT: tl.constexpr,
    SYM: tl.constexpr,
    DIAG: tl.constexpr,
    BS: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
):
    i = tl.program_id(0).to(tl.int64)
    if DIAG:
        j = i
    else:
        j = tl.program_id(1).to(tl.int64)
    if (not SYM) or DIAG or j >= i:
        ab = a_ptr + i * sab
        gb = g_ptr + i * sgb
        a2b = a2_ptr + j * s2ab
        g2b = g2_ptr + j * s2gb
        acc = tl.zeros([BS, BT], dtype=tl.float64)
        rs = tl.arange(0, BS)
        rt = tl.arange(0, BT)
        for s0 in range(0, T1, BS):
            os_ = s0 + rs
            ms = os_ < T1
            for t0 in range(0, T2, BT):
                ot = t0 + rt
                mt = ot < T2
                sa = _block_gram(ab, sat, sad, a2b, s2at, s2ad, os_, ms, ot, mt, D, CDT, BS, BT, BK)
                sg = _block_gram(gb, sgt, sgp, g2b, s2gt, s2gp, os_, ms, ot, mt, P, CDT, BS, BT, BK)
                acc += sa.to(tl.float64) * sg.to(tl.float64)
        total = tl.sum(tl.sum(acc, axis=1), axis=0)
        if DIAG:
            tl.store(out_ptr + i, total)
        else:
            tl.store(out_ptr + i * B2 + j, total)
            if SYM:
                tl.store(out_ptr + j * B2 + i, total)


def _block(n: int, lo: int, hi: int) -> int:
    """Smallest power of two >= n, clamped to [lo, hi] (tl.dot needs >= 16)."""
    return max(lo, min(hi, triton.next_power_of_2(max(1, n))))


def ghost_gram(
    a: Tensor, g: Tensor, a2: Optional[Tensor], g2: Optional[Tensor], diag: bool
) -> Tensor:
    """The Gram (B1, B2) float64 (or its diagonal (B1,)) of the factored per-sample gradients."""
    cfg.check_dtypes(a.dtype, a.dtype)
    sym = a2 is None
    s2a = a if a2 is None else a2
    s2g = g if g2 is None else g2
    b1, t1, d = a.shape
    b2, t2 = s2a.shape[0], s2a.shape[1]
    p = g.shape[2]
    out = torch.empty((b1,) if diag else (b1, b2), dtype=torch.float64, device=a.device)
    if out.numel() == 0:
        return out
    if t1 == 0 or t2 == 0 or d == 0 or p == 0:
        return out.zero_()
    interp = cfg.INTERPRET or a.device.type != "cuda"
    hi_t = 16 if interp else 64
    bs, bt = _block(t1, 16, hi_t), _block(t2, 16, hi_t)
    bk = _block(max(d, p), 16, 16 if interp else 32)
    cdt = tl.float64 if a.dtype == torch.float64 else tl.float32
    grid = (b1, 1 if diag else b2)
    _ghost_gram_kernel[grid](
        a,
        g,
        s2a,
        s2g,
        out,
        t1,
        t2,
        d,
        p,
        b2,
        *a.stride(),
        *g.stride(),
        *s2a.stride(),
        *s2g.stride(),
        CDT=cdt,
        SYM=sym,
        DIAG=diag,
        BS=bs,
        BT=bt,
        BK=bk,
    )
    return out
