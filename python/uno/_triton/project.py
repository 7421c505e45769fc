"""Triton ``project``: ``x <- x - sum_j y_j row_j`` in place, then measure the stored x (one pass)."""

from __future__ import annotations

import triton
import triton.language as tl
from torch import Tensor

from uno import _triton as cfg
from uno._triton._tiles import load_tile, tile_layout


@triton.jit
def _project_kernel(
    x_ptr,  # (n_elements,) x piece, updated in place
    row_ptr,  # (K, ld) rows of the piece; row j at row_ptr + j * ld
    y_ptr,  # (K,) float64 coefficients
    part_ptr,  # (n_programs, K + 1) float64 partial sums; this program adds to row pid
    n_elements,
    ld,
    K: tl.constexpr,
    K_PAD: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
):
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    kk, kmask, row_off, cols = tile_layout(ld, K, K_PAD, BLOCK_SIZE)
    y = tl.load(y_ptr + kk, mask=kmask, other=0.0).to(tl.float64)
    acc_c = tl.zeros([K_PAD, BLOCK_SIZE], dtype=tl.float64)
    acc_n = tl.zeros([BLOCK_SIZE], dtype=tl.float64)
    n_blocks = tl.cdiv(n_elements, BLOCK_SIZE)
    for b in range(pid, n_blocks, nprog):
        offs = b * BLOCK_SIZE + cols
        cmask = offs < n_elements
        tile = load_tile(row_ptr, row_off, offs, kmask, cmask)
        xv = tl.load(x_ptr + offs, mask=cmask, other=0.0).to(tl.float64)
        # The update in float64 (at least the contract's float32 on GPU), rounded once on store.
        xs = (xv - tl.sum(tile * y[:, None], axis=0)).to(x_ptr.dtype.element_ty)
        tl.store(x_ptr + offs, xs, mask=cmask)
        # Measure exactly what was stored (masked lanes hold 0 - 0 = 0 and add nothing).
        x64 = xs.to(tl.float64)
        acc_c += tile * x64[None, :]
        acc_n += x64 * x64
    base = part_ptr + pid * (K + 1)
    pc = base + kk
    tl.store(pc, tl.load(pc, mask=kmask, other=0.0) + tl.sum(acc_c, axis=1), mask=kmask)
    tl.store(base + K, tl.load(base + K) + tl.sum(acc_n, axis=0))


def project_piece(part: Tensor, x: Tensor, rows: Tensor, y: Tensor, n_programs: int) -> None:
    """Update one piece of x in place and add its partial sums to ``part``.

    Args:
        part: float64 scratch of shape ``(>= n_programs, k + 1)``, zeroed by the caller.
        x: ``(n,)`` contiguous piece of x.
        rows: ``(k, n)`` with ``stride(1) == 1``.
        y: float64 contiguous ``(k,)``.
        n_programs: most programs of the launch.
    """
    k, n = rows.shape
    if n == 0:
        return
    kp = cfg.k_pad(k)
    block = cfg.block_size(kp)
    grid = (min(triton.cdiv(n, block), n_programs),)
    _project_kernel[grid](
        x,
        rows,
        y,
        part,
        n,
        rows.stride(0),
        K=k,
        K_PAD=kp,
        BLOCK_SIZE=block,
        num_warps=cfg.num_warps(kp, block),
    )


__all__ = ["_project_kernel", "project_piece"]
