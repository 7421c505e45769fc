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
from typing import Any, ContextManager, List, Optional, Sequence

import torch
from torch import Tensor

_DTYPE_CODES = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}
_HALF = (torch.float16, torch.bfloat16)

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


def _code(dtype: torch.dtype, what: str) -> int:
    try:
        return _DTYPE_CODES[dtype]
    except KeyError:
        raise TypeError(
            f"{what} has dtype {dtype}; expected float32, float64, float16 or bfloat16"
        ) from None


def _check_pair(x_dtype: torch.dtype, row_dtype: torch.dtype) -> None:
    if x_dtype == row_dtype or (x_dtype in _HALF and row_dtype == torch.float32):
        return
    raise TypeError(
        f"rows have dtype {row_dtype} but x has dtype {x_dtype}; expected the same dtype "
        "(or float32 rows for float16/bfloat16 x)"
    )


def _row_layout(rows: Sequence[Tensor], k: int, what: str) -> tuple[List[int], List[int]]:
    """Row strides and column counts of ``(k, n_t)`` blocks with unit column stride (cheap checks)."""
    device = rows[0].device
    if device.type != "cuda":
        raise ValueError(f"the cuda backend needs CUDA tensors, got {what} on {device}")
    lds, ns = [], []
    for t, r in enumerate(rows):
        if r.dim() != 2 or r.shape[0] != k:
            raise ValueError(f"{what}[{t}] has shape {tuple(r.shape)}, expected ({k}, n)")
        if r.shape[1] > 1 and r.stride(1) != 1:
            raise ValueError(f"{what}[{t}] has column stride {r.stride(1)}, expected 1")
        if r.device != device:
            raise ValueError(
                f"{what} spans devices: {what}[0] on {device}, {what}[{t}] on {r.device}"
            )
        lds.append(int(r.stride(0)))
        ns.append(int(r.shape[1]))
    return lds, ns


def _x_ptrs(x: Sequence[Tensor], ns: Sequence[int], device: torch.device, what: str) -> List[int]:
    if len(x) != len(ns):
        raise ValueError(f"{what} has {len(x)} pieces but rows have {len(ns)}")
    for t, (xt, n) in enumerate(zip(x, ns)):
        if xt.numel() != n or not xt.is_contiguous() or xt.device != device:
            raise ValueError(
                f"{what}[{t}] must be a contiguous tensor of {n} elements on {device}, got shape "
                f"{tuple(xt.shape)} (contiguous={xt.is_contiguous()}) on {xt.device}"
            )
    return [int(xt.data_ptr()) for xt in x]


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
    lds, ns = _row_layout(rows, k, "rows")
    row_code = _code(rows[0].dtype, "rows")
    if x is not None:
        _check_pair(x[0].dtype, rows[0].dtype)
        x_ptrs = _x_ptrs(x, ns, device, "x")
        x_code = _code(x[0].dtype, "x")
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
    lds, ns = _row_layout(rows, k, "rows")
    _check_pair(x[0].dtype, rows[0].dtype)
    x_ptrs = _x_ptrs(x, ns, device, "x")
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
            _code(x[0].dtype, "x"),
            _code(rows[0].dtype, "rows"),
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
    lds, ns = _row_layout(rows, k, "rows")
    out_lds, out_ns = _row_layout(out, r, "out")
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
            _code(rows[0].dtype, "rows"),
            torch.cuda.current_stream(device).cuda_stream,
            0,  # partials_ptr: combine reduces nothing
            max_blocks,
        )
