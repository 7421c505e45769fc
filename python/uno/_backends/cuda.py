"""The cuda backend: the primitives of docs/kernels.md as the CUDA C++ kernels of csrc/cuda/.

Each ``_C.*_cuda`` call launches on the current torch stream of the pieces' device, with the piece
descriptors passed as kernel arguments (no host-to-device copy). Reductions write one float64 row of
partial sums per block to a ``[max_blocks, W]`` scratch buffer (no atomics, a fixed block -> chunk
mapping) and return how many rows they wrote; the result is ``scratch[:rows].sum(0)`` on the device.
Nothing here synchronises with the host or allocates anything proportional to the vector length, so the
primitives can be captured in a CUDA graph. Arguments and results are those of the spec,
:mod:`uno.reference` (tensors on one CUDA device; coefficients float64 there).
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, ContextManager, Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor

from uno._abi import FLAG_STEPS_PENDING, KIND_ADAM, PHASE_WRITE, StepArgs
from uno._backends._layout import (
    check_combine,
    check_pair,
    code,
    ghost_kwargs,
    ghost_out,
    ptr,
    row_layout,
    row_ptrs,
    step_kwargs,
    vector_ptrs,
)

NAME = "cuda"

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
    """``[<row_j, x>]_j, |x|^2`` (and the packed upper Gram triangle) in float64, on the device."""
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
            x_ptrs, row_ptrs(rows), lds, ns, k, bool(with_gram), x_code,
            row_code, torch.cuda.current_stream(device).cuda_stream, int(partials.data_ptr()),
            max_blocks,
        )  # fmt: skip
    return partials[:used].sum(0)


def project(x: Sequence[Tensor], rows: Sequence[Tensor], y: Tensor) -> Tensor:
    """In place ``x <- x - sum_j y_j row_j``; returns ``[<row_j, x_new>]_j, |x_new|^2`` (float64)."""
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
            x_ptrs, row_ptrs(rows), lds, ns, k, int(y64.data_ptr()),
            code(x[0].dtype, "x"), code(rows[0].dtype, "rows"),
            torch.cuda.current_stream(device).cuda_stream, int(partials.data_ptr()), max_blocks,
        )  # fmt: skip
    return partials[:used].sum(0)


def combine(out: Sequence[Tensor], rows: Sequence[Tensor], m: Tensor) -> None:
    """Write ``out[t] = m @ rows[t]`` for every piece (float64 arithmetic, rounded once)."""
    device = rows[0].device
    k, r, lds, ns, out_lds = check_combine(out, rows, m, "cuda")
    m64 = m.to(device=device, dtype=torch.float64).contiguous()
    max_blocks = _max_blocks(device, 1, len(rows))
    with _device_guard(device):
        _lib().combine_cuda(
            [int(o.data_ptr()) for o in out], out_lds, row_ptrs(rows), lds,
            ns, k, r, int(m64.data_ptr()), code(rows[0].dtype, "rows"),
            torch.cuda.current_stream(device).cuda_stream,
            0,  # partials_ptr: combine reduces nothing
            max_blocks,
        )  # fmt: skip


# Completion counters of the coefficient reduction (and of the step-count store), one per
# (device, stream) for eager calls: zeroed once here, and every launch leaves its counter at 0 again,
# so reuse on the same stream (stream order) needs no per-step fill kernel. Never shared across
# streams (two steps running concurrently on two streams would count each other's blocks).
_COUNTERS: Dict[Tuple[int, int], Tensor] = {}


def _counter(device: torch.device, stream: int) -> Tensor:
    """A uint32-sized device counter that is 0 (the kernels return it to 0 after each launch).

    Under CUDA-graph capture a fresh one is made inside the captured region (from the graph's private
    pool; its zero fill is a node of the graph and runs before every replay), so a graph owns its
    counter: graphs replayed on different streams never share one, and no eagerly cached tensor is
    baked into a graph. Call with ``device`` current.
    """
    if torch.cuda.is_current_stream_capturing():
        return torch.zeros(1, dtype=torch.int32, device=device)
    key = (_index(device), stream)
    c = _COUNTERS.get(key)
    if c is None:
        c = _COUNTERS[key] = torch.zeros(1, dtype=torch.int32, device=device)
    return c


def optim_step(a: StepArgs) -> Tensor:
    """One phase of the fused optimizer step (csrc/cuda/optim_step.cu) on the current stream.

    A coefficient phase is one launch (k <= 16 and <= ``_C.optim_pieces_per_launch`` pieces): each
    block writes a float64 row of ``k`` partial sums to a scratch buffer and the last block to finish
    sums the rows in a fixed order (deterministic for a fixed grid) into the returned ``(k,)`` device
    tensor, which the write phase reads as ``coef``. Scratch and result come from torch's caching
    allocator on every call (no kernel; inside the captured region under CUDA-graph capture); the
    completion counter is cached per (device, stream), see :func:`_counter`. With
    ``FLAG_STEPS_PENDING`` (Adam) ``steps`` hold the previous count: the kernels use count + 1 and
    the write launch stores it, so the increment costs no extra kernel. No host synchronisation.
    """
    lib = _lib()
    if not hasattr(lib, "optim_step_cuda"):
        raise RuntimeError("uno._C lacks optim_step_cuda (built without CUDA?)")
    device = a.params[0].device
    k = a.k
    coef_phase = a.phase != PHASE_WRITE and k > 0
    pending = a.kind == KIND_ADAM and bool(a.flags & FLAG_STEPS_PENDING)
    max_blocks = max(
        _BLOCKS_PER_SM * _sm_count(_index(device)),
        -(-len(a.params) // int(lib.optim_pieces_per_launch)),
    )
    with torch.cuda.device(device):
        stream = torch.cuda.current_stream(device).cuda_stream
        out = torch.empty(k if a.phase != PHASE_WRITE else 0, dtype=torch.float64, device=device)
        partials = (
            torch.empty(max_blocks, k, dtype=torch.float64, device=device) if coef_phase else None
        )
        counter = _counter(device, stream) if coef_phase or (pending and a.phase == 0) else None
        kwargs, keep = step_kwargs(a, device)
        lib.optim_step_cuda(
            **kwargs,
            stream=stream,
            partials_ptr=ptr(partials),
            max_blocks=max_blocks,
            counter_ptr=ptr(counter),
            coef_out_ptr=ptr(out) if coef_phase else 0,
        )
        del keep  # the converted scalars outlived the launch (the allocator is stream-ordered)
    return out


def ghost_gram(
    a: Tensor, g: Tensor, a2: Optional[Tensor], g2: Optional[Tensor], diag: bool
) -> Tensor:
    """The ghost Gram matrix of one factored layer (csrc/cuda/ghost_gram.cu) on the current stream."""
    lib = _lib()
    if not hasattr(lib, "ghost_gram_cuda"):
        raise RuntimeError("uno._C lacks ghost_gram_cuda (built without CUDA?)")
    out = ghost_out(a, a2, diag)
    with torch.cuda.device(a.device):
        lib.ghost_gram_cuda(
            **ghost_kwargs(a, g, a2, g2, diag, out),
            stream=torch.cuda.current_stream(a.device).cuda_stream,
        )
    return out
