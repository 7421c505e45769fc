"""Triton ``inner``: ``<row_j, x>``, ``|x|^2`` and the rows' Gram matrix in one pass over one piece."""

from __future__ import annotations

from typing import Optional

import triton
import triton.language as tl
from torch import Tensor

from uno import _triton as cfg
from uno._triton._tiles import load_tile, tile_layout


@triton.jit
def _inner_kernel(
    x_ptr,  # (n_elements,) x piece; unused when HAS_X is False
    row_ptr,  # (K, ld) rows of the piece; row j at row_ptr + j * ld
    part_ptr,  # (n_programs, W) float64 partial sums; this program adds to row pid
    n_elements,
    ld,
    W,
    K: tl.constexpr,
    K_PAD: tl.constexpr,  # next power of two >= K (>= 16 when GRAM_DOT)
    HAS_X: tl.constexpr,
    WITH_GRAM: tl.constexpr,
    GRAM_DOT: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
):
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    kk, kmask, row_off, cols = tile_layout(ld, K, K_PAD, BLOCK_SIZE)
    # Elementwise float64 accumulators: one cross-thread reduction at the end, not one per block.
    acc_c = tl.zeros([K_PAD, BLOCK_SIZE], dtype=tl.float64)
    acc_n = tl.zeros([BLOCK_SIZE], dtype=tl.float64)
    acc_g = tl.zeros([K_PAD, K_PAD], dtype=tl.float64)
    n_blocks = tl.cdiv(n_elements, BLOCK_SIZE)
    for b in range(pid, n_blocks, nprog):
        offs = b * BLOCK_SIZE + cols
        cmask = offs < n_elements
        tile = load_tile(row_ptr, row_off, offs, kmask, cmask)
        if HAS_X:
            xv = tl.load(x_ptr + offs, mask=cmask, other=0.0).to(tl.float64)
            acc_c += tile * xv[None, :]
            acc_n += xv * xv
        if WITH_GRAM:
            if GRAM_DOT:
                # [K_PAD, B] x [B, K_PAD] on float64 operands (DMMA / FMA on NVIDIA): no k^2 unrolling.
                acc_g = tl.dot(tile, tl.trans(tile), acc_g, input_precision="ieee")
            else:
                # Row i (an L1 hit: it is part of the tile just loaded) against the whole tile.
                for i in range(K):
                    ri = tl.load(row_ptr + i * ld + offs, mask=cmask, other=0.0).to(tl.float64)
                    s = tl.sum(tile * ri[None, :], axis=1)  # [K_PAD]: G[i, :] of this block
                    acc_g += tl.where(kk[:, None] == i, s[None, :], 0.0)
    base = part_ptr + pid * W
    if HAS_X:
        pc = base + kk
        tl.store(pc, tl.load(pc, mask=kmask, other=0.0) + tl.sum(acc_c, axis=1), mask=kmask)
        tl.store(base + K, tl.load(base + K) + tl.sum(acc_n, axis=0))
    if WITH_GRAM:
        ii = kk[:, None]
        jj = kk[None, :]
        # Packed upper triangle, row by row: (i, j) -> i*K - i*(i-1)/2 + (j - i), after k + 1 entries.
        gidx = K + 1 + ii * K - (ii * (ii - 1)) // 2 + (jj - ii)
        gmask = (ii <= jj) & (jj < K)
        pg = base + gidx
        tl.store(pg, tl.load(pg, mask=gmask, other=0.0) + acc_g, mask=gmask)


def inner_piece(
    part: Tensor, x: Optional[Tensor], rows: Tensor, with_gram: bool, n_programs: int
) -> None:
    """Add one piece's partial sums to ``part`` (float64 ``[n_programs, W]``, zeroed by the caller).

    Args:
        part: float64 scratch of shape ``(>= n_programs, W)``.
        x: ``(n,)`` contiguous piece of x, or ``None``.
        rows: ``(k, n)`` with ``stride(1) == 1``.
        with_gram: also accumulate the packed upper triangle of ``rows @ rows.T``.
        n_programs: most programs of the launch.
    """
    k, n = rows.shape
    if n == 0 or (x is None and not with_gram):
        return
    dot = with_gram and cfg.config.dot
    kp = cfg.k_pad(k, 16 if dot else 1)
    block = cfg.block_size(kp)
    grid = (min(triton.cdiv(n, block), n_programs),)
    _inner_kernel[grid](
        x if x is not None else rows,
        rows,
        part,
        n,
        rows.stride(0),
        part.shape[1],
        K=k,
        K_PAD=kp,
        HAS_X=x is not None,
        WITH_GRAM=with_gram,
        GRAM_DOT=dot,
        BLOCK_SIZE=block,
        num_warps=cfg.num_warps(kp, block),
    )


__all__ = ["_inner_kernel", "inner_piece"]
