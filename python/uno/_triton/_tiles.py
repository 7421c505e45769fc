"""Triton code every row-tile kernel of the package shares (``@triton.jit`` helpers, inlined).

A kernel works on a ``[K_PAD, BLOCK_SIZE]`` tile of one piece's rows: row ``j`` of the piece at
``row_ptr + j * ld``, rows ``j >= K`` padding (masked off).
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def tile_layout(ld, K: tl.constexpr, K_PAD: tl.constexpr, BLOCK_SIZE: tl.constexpr):
    """``(kk, kmask, row_off, cols)``: the padded row indices, which of them are rows, their int64
    element offsets (``K * ld`` may exceed 2^31 in a Basis buffer) and int64 column offsets (with an
    int32 block index, ``b * BLOCK_SIZE + cols`` cannot overflow)."""
    kk = tl.arange(0, K_PAD)
    return kk, kk < K, kk.to(tl.int64)[:, None] * ld, tl.arange(0, BLOCK_SIZE).to(tl.int64)


@triton.jit
def load_tile(row_ptr, row_off, offs, kmask, cmask):
    """The float64 tile of the rows at columns ``offs`` (zeros outside ``kmask`` x ``cmask``).

    Native dtype in, float64 for arithmetic: a product of two float32 (or half) values is exact in
    float64, so only the sums round.
    """
    return tl.load(
        row_ptr + row_off + offs[None, :], mask=kmask[:, None] & cmask[None, :], other=0.0
    ).to(tl.float64)
