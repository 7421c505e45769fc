"""The cuda backend: the primitives of docs/kernels.md as the CUDA C++ kernels of csrc/cuda/.

Each ``_C.*_cuda`` call launches on the current torch stream of the pieces' device, with the piece
descriptors passed as kernel arguments (no host-to-device copy). Reductions write one float64 row of
partial sums per block to a ``[max_blocks, W]`` scratch buffer (no atomics, a fixed block -> chunk
mapping) and return how many rows they wrote; the result is ``scratch[:rows].sum(0)`` on the device.
Nothing here synchronises with the host or allocates anything proportional to the vector length, so the
primitives can be captured in a CUDA graph.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, ContextManager, Optional, Sequence

import torch
from torch import Tensor

from uno._backends._layout import check_pair, code, row_layout, vector_ptrs

# Partial-sum rows per call: enough blocks to keep every SM streaming (8 resident blocks of 256 threads
# per SM where registers allow), but at most ~32 MiB of scratch for very wide Gram outputs.
_BLOCKS_PER_SM = 8
_SCRATCH_DOUBLES = 1 << 22


def _lib() -> Any:
    from uno import _C

    return _C


@functools.cache
def _sm_count(index: int) -> int:
    return int(torch.cuda.get_device_properties(index).multi_processor_count)


def _index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


def _max_blocks(device: torch.device, width: int, pieces: int) -> int:
    """Rows of the partial-sum scratch: a function of the device and the shapes only (reproducible)."""
    sms = _sm_count(_index(device))
    blocks = min(_BLOCKS_PER_SM * sms, max(sms, _SCRATCH_DOUBLES // max(width, 1)))
    per_launch = int(_lib().cuda_pieces_per_launch)
    return max(blocks, -(-pieces // per_launch))  # at least one block per launch of <= 64 pieces


def _device_guard(device: torch.device) -> ContextManager[object]:
    # The kernels launch on the current CUDA device, which must be the one owning the stream and pieces.
    if device.index is None or device.index == torch.cuda.current_device():
        return contextlib.nullcontext()
    return torch.cuda.device(device)


def inner(x: Optional[Sequence[Tensor]], rows: Sequence[Tensor], with_gram: bool) -> Tensor:
    """``[<row_j, x>]_j, |x|^2`` (and the packed upper Gram triangle) in float64; see docs/kernels.md.

    Args:
        x: ``T`` contiguous 1-D tensors of ``n_t`` elements, or ``None``.
        rows: ``T`` tensors of shape ``(k, n_t)`` with ``stride(1) == 1``.
        with_gram: append ``G[i, j] = <row_i, row_j>`` for ``i <= j``, row by row.

    Returns:
        float64 ``(k + 1 + (k(k+1)/2 if with_gram else 0),)`` on the pieces' device.
    """
    k = int(rows[0].shape[0])
    device = rows[0].device
    width = k + 1 + (k * (k + 1) // 2 if with_gram else 0)
    lds, ns = row_layout(rows, k, "rows", "cuda")
    row_code = code(rows[0].dtype, "rows")
    if x is not None:
        check_pair(x[0].dtype, rows[0].dtype)
        x_ptrs = vector_ptrs(x, ns, device, "x")
        x_code = code(x[0].dtype, "x")
    else:
        x_ptrs, x_code = [], row_code
    max_blocks = _max_blocks(device, width, len(rows))
    partials = torch.empty(max_blocks, width, dtype=torch.float64, device=device)
    with _device_guard(device):
        used = _lib().inner_cuda(
            x_ptrs,
            [int(r.data_ptr()) for r in rows],
            lds,
            ns,
            k,
            bool(with_gram),
            x_code,
            row_code,
            torch.cuda.current_stream(device).cuda_stream,
            int(partials.data_ptr()),
            max_blocks,
        )
    return partials[:used].sum(0)


def project(x: Sequence[Tensor], rows: Sequence[Tensor], y: Tensor) -> Tensor:
    """In place ``x <- x - sum_j y_j row_j``; returns ``[<row_j, x_new>]_j, |x_new|^2`` (float64).

    Args:
        x: ``T`` contiguous 1-D tensors, updated in place (rounded once to their dtype).
        rows: ``T`` tensors of shape ``(k, n_t)`` with ``stride(1) == 1``.
        y: float64 ``(k,)`` on the pieces' device.

    Returns:
        float64 ``(k + 1,)``: the inner products of the stored x with every row, then its squared norm.
    """
    k = int(rows[0].shape[0])
    device = rows[0].device
    lds, ns = row_layout(rows, k, "rows", "cuda")
    check_pair(x[0].dtype, rows[0].dtype)
    x_ptrs = vector_ptrs(x, ns, device, "x")
    if y.numel() != k:
        raise ValueError(f"y has {y.numel()} elements, expected k={k}")
    # A no-op for the usual float64 (k,) device tensor; the stream-ordered allocator keeps a copy alive.
    y64 = y.to(device=device, dtype=torch.float64).contiguous()
    max_blocks = _max_blocks(device, k + 1, len(rows))
    partials = torch.empty(max_blocks, k + 1, dtype=torch.float64, device=device)
    with _device_guard(device):
        used = _lib().project_cuda(
            x_ptrs,
            [int(r.data_ptr()) for r in rows],
            lds,
            ns,
            k,
            int(y64.data_ptr()),
            code(x[0].dtype, "x"),
            code(rows[0].dtype, "rows"),
            torch.cuda.current_stream(device).cuda_stream,
            int(partials.data_ptr()),
            max_blocks,
        )
    return partials[:used].sum(0)


def combine(out: Sequence[Tensor], rows: Sequence[Tensor], m: Tensor) -> None:
    """Write ``out[t] = m @ rows[t]`` for every piece (float64 arithmetic, rounded once).

    Args:
        out: ``T`` tensors of shape ``(r, n_t)``, ``stride(1) == 1``, rows' dtype; may be the same
            memory as ``rows`` (r <= k, same row stride and offsets).
        rows: ``T`` tensors of shape ``(k, n_t)`` with ``stride(1) == 1``.
        m: float64 ``(r, k)`` on the pieces' device.
    """
    k = int(rows[0].shape[0])
    device = rows[0].device
    if m.dim() != 2 or m.shape[1] != k:
        raise ValueError(f"m has shape {tuple(m.shape)}, expected (r, {k})")
    r = int(m.shape[0])
    lds, ns = row_layout(rows, k, "rows", "cuda")
    out_lds, out_ns = row_layout(out, r, "out", "cuda")
    if out_ns != ns:
        raise ValueError(f"out pieces have {out_ns} columns, rows have {ns}")
    if out[0].dtype != rows[0].dtype:
        raise TypeError(f"out has dtype {out[0].dtype}, expected rows' dtype {rows[0].dtype}")
    m64 = m.to(device=device, dtype=torch.float64).contiguous()
    max_blocks = _max_blocks(device, 1, len(rows))
    with _device_guard(device):
        _lib().combine_cuda(
            [int(o.data_ptr()) for o in out],
            out_lds,
            [int(rr.data_ptr()) for rr in rows],
            lds,
            ns,
            k,
            r,
            int(m64.data_ptr()),
            code(rows[0].dtype, "rows"),
            torch.cuda.current_stream(device).cuda_stream,
            0,  # partials_ptr: combine reduces nothing
            max_blocks,
        )
