"""Per-backend adapters of the fused optimizer-step op (``optim_step``; spec:
:mod:`uno.reference.optim_step`).

All four adapters take the same arguments as :func:`uno.reference.optim_step.optim_step` and return a
float64 ``(k,)`` tensor for the coefficient phases (an empty one for the write phase). They do not
allocate anything proportional to the number of parameters and never copy or concatenate pieces.

One difference, cuda only: with :data:`FLAG_STEPS_PENDING` in ``flags`` (Adam), ``steps`` still hold
the previous step's count; the kernels use ``count + 1`` and the write phase stores it (not when
``found_inf`` is nonzero), so the increment costs no extra kernel. :func:`uno.optim._run` sets the
flag only when the resolved backend is cuda and the counters are distinct tensors; the other
adapters reject it. Without the flag every adapter reads ``steps`` as already incremented (the spec).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor

from uno.reference.optim_step import KIND_ADAM

_DTYPE_CODES = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}

FLAG_STEPS_PENDING = 128
"""cuda adapter only (csrc/cuda/optim_step.cu ``kStepsPendingF``): Adam ``steps`` hold the previous
count; the kernels use count + 1 and the write phase stores it (module docstring)."""

Adapter = Callable[..., Tensor]


def _lib() -> Any:
    from uno import _C

    return _C


def _ptr(t: Optional[Tensor]) -> int:
    return 0 if t is None else int(t.data_ptr())


def _piece_args(params, grads, s1, s2, s3, steps, rows):
    k = int(rows[0].shape[0]) if len(rows) else 0
    return dict(
        p_ptrs=[int(p.data_ptr()) for p in params],
        g_ptrs=[int(g.data_ptr()) for g in grads],
        s1_ptrs=[int(s.data_ptr()) for s in s1],
        s2_ptrs=[int(s.data_ptr()) for s in s2],
        s3_ptrs=[int(s.data_ptr()) for s in s3],
        step_ptrs=[int(s.data_ptr()) for s in steps],
        row_ptrs=[int(r.data_ptr()) for r in rows],
        lds=[int(r.stride(0)) for r in rows],
        ns=[int(p.numel()) for p in params],
        k=k,
    )


def _dtypes(params, s1, rows) -> Dict[str, int]:
    pd = params[0].dtype
    return dict(
        p_dtype=_DTYPE_CODES[pd],
        r_dtype=_DTYPE_CODES[rows[0].dtype] if len(rows) else _DTYPE_CODES[pd],
        s_dtype=_DTYPE_CODES[s1[0].dtype] if len(s1) else _DTYPE_CODES[pd],
    )


def _scalar32(t: Optional[Tensor], device: torch.device) -> Optional[Tensor]:
    """A float32 scalar on ``device`` the kernels can read (a no-op for the usual input)."""
    if t is None:
        return None
    return t.to(device=device, dtype=torch.float32).reshape(())


def cpu(
    kind: int,
    phase: int,
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    state1: Sequence[Tensor],
    state2: Sequence[Tensor],
    state3: Sequence[Tensor],
    steps: Sequence[Tensor],
    rows: Sequence[Tensor],
    coef: Optional[Tensor],
    grad_scale: Optional[Tensor],
    found_inf: Optional[Tensor],
    hyper: Sequence[float],
    flags: int,
) -> Tensor:
    """The C++ kernel (csrc/cpu/optim_step.cpp), threads = ``torch.get_num_threads()``."""
    _no_pending(flags, "cpu")
    lib = _lib()
    if not hasattr(lib, "optim_step_cpu"):
        raise RuntimeError(
            "uno._C lacks optim_step_cpu (built before csrc/cpu/optim_step.cpp existed?); rebuild "
            "the compiled core or use backend='reference'"
        )
    k = int(rows[0].shape[0]) if len(rows) else 0
    dev = torch.device("cpu")
    out = torch.zeros(k if phase != 0 else 0, dtype=torch.float64)
    c64 = None if coef is None else coef.to(device=dev, dtype=torch.float64).contiguous()
    gs = _scalar32(grad_scale, dev)
    fi = _scalar32(found_inf, dev)
    lib.optim_step_cpu(
        kind=kind,
        phase=phase,
        **_piece_args(params, grads, state1, state2, state3, steps, rows),
        coef_ptr=_ptr(c64),
        grad_scale_ptr=_ptr(gs),
        found_inf_ptr=_ptr(fi),
        hyper=[float(h) for h in hyper],
        flags=int(flags),
        **_dtypes(params, state1, rows),
        out_ptr=int(out.data_ptr()) if phase != 0 else 0,
        num_threads=max(1, torch.get_num_threads()),
    )
    return out


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
    key = (device.index if device.index is not None else torch.cuda.current_device(), stream)
    c = _COUNTERS.get(key)
    if c is None:
        c = _COUNTERS[key] = torch.zeros(1, dtype=torch.int32, device=device)
    return c


def cuda(
    kind: int,
    phase: int,
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    state1: Sequence[Tensor],
    state2: Sequence[Tensor],
    state3: Sequence[Tensor],
    steps: Sequence[Tensor],
    rows: Sequence[Tensor],
    coef: Optional[Tensor],
    grad_scale: Optional[Tensor],
    found_inf: Optional[Tensor],
    hyper: Sequence[float],
    flags: int,
) -> Tensor:
    """The CUDA kernel (csrc/cuda/optim_step.cu) on the current stream; no host synchronisation.

    A coefficient phase is one launch (k <= 16 and <= ``_C.optim_pieces_per_launch`` pieces): each
    block writes a float64 row of ``k`` partial sums to a scratch buffer and the last block to finish
    sums the rows in a fixed order (deterministic for a fixed grid) into the returned ``(k,)`` device
    tensor, which the write phase reads as ``coef``. Scratch and result come from torch's caching
    allocator on every call (no kernel; inside the captured region under CUDA-graph capture); the
    completion counter is cached per (device, stream), see :func:`_counter`. With
    :data:`FLAG_STEPS_PENDING` the step-count increment happens in the write launch.
    """
    lib = _lib()
    if not hasattr(lib, "optim_step_cuda"):
        raise RuntimeError("uno._C lacks optim_step_cuda (built without CUDA?)")
    device = params[0].device
    k = int(rows[0].shape[0]) if len(rows) else 0
    coef_phase = phase != 0 and k > 0
    pending = kind == KIND_ADAM and bool(flags & FLAG_STEPS_PENDING)
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    max_blocks = max(8 * sms, -(-len(params) // int(lib.optim_pieces_per_launch)))
    with torch.cuda.device(device):
        stream = torch.cuda.current_stream(device).cuda_stream
        out = torch.empty(k if phase != 0 else 0, dtype=torch.float64, device=device)
        partials = (
            torch.empty(max_blocks, k, dtype=torch.float64, device=device) if coef_phase else None
        )
        counter = _counter(device, stream) if coef_phase or (pending and phase == 0) else None
        c64 = None if coef is None else coef.to(device=device, dtype=torch.float64).contiguous()
        gs = _scalar32(grad_scale, device)
        fi = _scalar32(found_inf, device)
        lib.optim_step_cuda(
            kind=kind,
            phase=phase,
            **_piece_args(params, grads, state1, state2, state3, steps, rows),
            coef_ptr=_ptr(c64),
            grad_scale_ptr=_ptr(gs),
            found_inf_ptr=_ptr(fi),
            hyper=[float(h) for h in hyper],
            flags=int(flags),
            **_dtypes(params, state1, rows),
            stream=stream,
            partials_ptr=_ptr(partials),
            max_blocks=max_blocks,
            counter_ptr=_ptr(counter),
            coef_out_ptr=_ptr(out) if coef_phase else 0,
        )
    return out


def _no_pending(flags: int, name: str) -> None:
    if flags & FLAG_STEPS_PENDING:
        raise ValueError(
            f"optim_step: FLAG_STEPS_PENDING ({FLAG_STEPS_PENDING}) is a cuda-backend flag; the "
            f"{name} backend reads steps as already incremented"
        )


def reference(*args: Any) -> Tensor:
    from uno.reference.optim_step import optim_step

    _no_pending(args[13], "reference")
    return optim_step(*args)


def triton(*args: Any) -> Tensor:
    from uno._triton.optim_step import optim_step

    _no_pending(args[13], "triton")
    return optim_step(*args)


ADAPTERS: Dict[str, Adapter] = {"reference": reference, "cpu": cpu, "cuda": cuda, "triton": triton}


def get(name: str) -> Adapter:
    """The adapter of backend ``name``."""
    return ADAPTERS[name]
