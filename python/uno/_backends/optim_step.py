"""Per-backend adapters of the fused optimizer-step op (``optim_step``; spec:
:mod:`uno.reference.optim_step`).

All four adapters take the same arguments as :func:`uno.reference.optim_step.optim_step` and return a
float64 ``(k,)`` tensor for the coefficient phases (an empty one for the write phase). They do not
allocate anything proportional to the number of parameters and never copy or concatenate pieces.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence

import torch
from torch import Tensor

_DTYPE_CODES = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}

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

    The coefficient phases write one float64 row of ``k`` partial sums per block to a scratch buffer
    and the result is its column sum on the device (deterministic for a fixed grid).
    """
    lib = _lib()
    if not hasattr(lib, "optim_step_cuda"):
        raise RuntimeError("uno._C lacks optim_step_cuda (built without CUDA?)")
    device = params[0].device
    k = int(rows[0].shape[0]) if len(rows) else 0
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    max_blocks = max(8 * sms, -(-len(params) // int(lib.optim_pieces_per_launch)))
    width = max(k, 1)
    partials = torch.empty(
        max_blocks if phase != 0 else 1, width, dtype=torch.float64, device=device
    )
    c64 = None if coef is None else coef.to(device=device, dtype=torch.float64).contiguous()
    gs = _scalar32(grad_scale, device)
    fi = _scalar32(found_inf, device)
    with torch.cuda.device(device):
        used = lib.optim_step_cuda(
            kind=kind,
            phase=phase,
            **_piece_args(params, grads, state1, state2, state3, steps, rows),
            coef_ptr=_ptr(c64),
            grad_scale_ptr=_ptr(gs),
            found_inf_ptr=_ptr(fi),
            hyper=[float(h) for h in hyper],
            flags=int(flags),
            **_dtypes(params, state1, rows),
            stream=torch.cuda.current_stream(device).cuda_stream,
            partials_ptr=int(partials.data_ptr()),
            max_blocks=max_blocks,
        )
    if phase == 0:
        return partials.new_empty(0)
    return partials[:used, :k].sum(0)


def reference(*args: Any) -> Tensor:
    from uno.reference.optim_step import optim_step

    return optim_step(*args)


def triton(*args: Any) -> Tensor:
    from uno._triton.optim_step import optim_step

    return optim_step(*args)


ADAPTERS: Dict[str, Adapter] = {"reference": reference, "cpu": cpu, "cuda": cuda, "triton": triton}


def get(name: str) -> Adapter:
    """The adapter of backend ``name``."""
    return ADAPTERS[name]
