"""Triton ``combine``: ``out[i] = sum_j m[i, j] row_j`` column by column (in place allowed)."""

from __future__ import annotations

import triton
import triton.language as tl
from torch import Tensor

from uno import _triton as cfg
from uno._triton._tiles import load_tile, tile_layout


@triton.jit
def _combine_kernel(
    out_ptr,  # (R, out_ld) output rows; may be the same memory as the first R rows
    row_ptr,  # (K, ld) rows of the piece; row j at row_ptr + j * ld
    m_ptr,  # (R, K) float64 row-major coefficients
    n_elements,
    ld,
    out_ld,
    R,
    K: tl.constexpr,
    K_PAD: tl.constexpr,  # next power of two >= K (>= 16 when USE_DOT)
    R_PAD: tl.constexpr,  # next power of two >= R (>= 16) when USE_DOT; unused otherwise
    USE_DOT: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
):
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    kk, kmask, row_off, cols = tile_layout(ld, K, K_PAD, BLOCK_SIZE)
    if USE_DOT:
        rr = tl.arange(0, R_PAD)
        rmask = rr < R
        out_off = rr.to(tl.int64)[:, None] * out_ld
        mt = tl.load(
            m_ptr + rr[:, None] * K + kk[None, :], mask=rmask[:, None] & kmask[None, :], other=0.0
        )
    n_blocks = tl.cdiv(n_elements, BLOCK_SIZE)
    for b in range(pid, n_blocks, nprog):
        offs = b * BLOCK_SIZE + cols
        cmask = offs < n_elements
        tile = load_tile(row_ptr, row_off, offs, kmask, cmask)
        # Every thread of the program has its k values of these columns before anyone stores:
        # out may alias rows, and the column owners of the stores need not be the loaders.
        tl.debug_barrier()
        if USE_DOT:
            # [R_PAD, K_PAD] x [K_PAD, B] on float64 operands; rounded once on store.
            o = tl.dot(mt, tile, input_precision="ieee")
            tl.store(
                out_ptr + out_off + offs[None, :],
                o.to(out_ptr.dtype.element_ty),
                mask=rmask[:, None] & cmask[None, :],
            )
        else:
            for i in range(R):
                mi = tl.load(m_ptr + i * K + kk, mask=kmask, other=0.0)
                o1 = tl.sum(tile * mi[:, None], axis=0)  # float64, rounded once on store
                tl.store(out_ptr + i * out_ld + offs, o1.to(out_ptr.dtype.element_ty), mask=cmask)


def combine_piece(out: Tensor, rows: Tensor, m: Tensor, n_programs: int) -> None:
    """Write ``out = m @ rows`` for one piece.

    Args:
        out: ``(r, n)`` with ``stride(1) == 1``, rows' dtype; may be the same memory as ``rows[:r]``.
        rows: ``(k, n)`` with ``stride(1) == 1``.
        m: float64 contiguous ``(r, k)``.
        n_programs: most programs of the launch.
    """
    k, n = rows.shape
    r = out.shape[0]
    if n == 0 or r == 0:
        return
    dot = cfg.config.dot
    kp = cfg.k_pad(k, 16 if dot else 1)
    rp = cfg.k_pad(r, 16) if dot else 1
    block = cfg.block_size(max(kp, rp))
    grid = (min(triton.cdiv(n, block), n_programs),)
    _combine_kernel[grid](
        out,
        rows,
        m,
        n,
        rows.stride(0),
        out.stride(0),
        r,
        K=k,
        K_PAD=kp,
        R_PAD=rp,
        USE_DOT=dot,
        BLOCK_SIZE=block,
        num_warps=cfg.num_warps(max(kp, rp), block),
    )


__all__ = ["_combine_kernel", "combine_piece"]
