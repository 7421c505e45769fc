"""Per-backend adapters of the ghost Gram op (``ghost_gram``; spec: :mod:`uno.reference.ghost_gram`).

Every adapter takes ``(a, g, a2, g2, diag)`` with ``a`` (B1, T1, d), ``g`` (B1, T1, p) and an optional
second batch ``a2`` (B2, T2, d), ``g2`` (B2, T2, p) (``None``: the first batch, a symmetric Gram) of one
dtype on one device, any strides, and returns a new float64 tensor, (B1, B2) or (B1,) when ``diag``.
Arguments are checked by :func:`uno.per_sample._ghost_op.ghost_gram` before they get here.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import torch
from torch import Tensor

_DTYPE_CODES = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}

Adapter = Callable[[Tensor, Tensor, Optional[Tensor], Optional[Tensor], bool], Tensor]


def _lib() -> Any:
    from uno import _C

    return _C


def _out(a: Tensor, a2: Optional[Tensor], diag: bool) -> Tensor:
    b1 = a.shape[0]
    b2 = b1 if a2 is None else a2.shape[0]
    shape = (b1,) if diag else (b1, b2)
    return torch.empty(shape, dtype=torch.float64, device=a.device)


def _kernel_args(
    a: Tensor, g: Tensor, a2: Optional[Tensor], g2: Optional[Tensor], diag: bool
) -> Dict[str, Any]:
    sym = a2 is None
    s2a = a if a2 is None else a2
    s2g = g if g2 is None else g2
    return dict(
        a_ptr=int(a.data_ptr()),
        a_strides=list(a.stride()),
        g_ptr=int(g.data_ptr()),
        g_strides=list(g.stride()),
        a2_ptr=int(s2a.data_ptr()),
        a2_strides=list(s2a.stride()),
        g2_ptr=int(s2g.data_ptr()),
        g2_strides=list(s2g.stride()),
        b1=int(a.shape[0]),
        t1=int(a.shape[1]),
        b2=int(s2a.shape[0]),
        t2=int(s2a.shape[1]),
        d=int(a.shape[2]),
        p=int(g.shape[2]),
        dtype=_DTYPE_CODES[a.dtype],
        diag=bool(diag),
        symmetric=sym,
    )


def cpu(a: Tensor, g: Tensor, a2: Optional[Tensor], g2: Optional[Tensor], diag: bool) -> Tensor:
    """The C++ kernel (csrc/cpu/ghost_gram.cpp), threads = ``torch.get_num_threads()``."""
    lib = _lib()
    if not hasattr(lib, "ghost_gram_cpu"):
        raise RuntimeError(
            "uno._C lacks ghost_gram_cpu (built before csrc/cpu/ghost_gram.cpp existed?); rebuild "
            "the compiled core or use backend='reference'"
        )
    out = _out(a, a2, diag)
    lib.ghost_gram_cpu(
        **_kernel_args(a, g, a2, g2, diag),
        out_ptr=int(out.data_ptr()),
        num_threads=max(1, torch.get_num_threads()),
    )
    return out


def cuda(a: Tensor, g: Tensor, a2: Optional[Tensor], g2: Optional[Tensor], diag: bool) -> Tensor:
    """The CUDA kernel (csrc/cuda/ghost_gram.cu) on the current stream; no host synchronisation."""
    lib = _lib()
    if not hasattr(lib, "ghost_gram_cuda"):
        raise RuntimeError("uno._C lacks ghost_gram_cuda (built without CUDA?)")
    out = _out(a, a2, diag)
    with torch.cuda.device(a.device):
        lib.ghost_gram_cuda(
            **_kernel_args(a, g, a2, g2, diag),
            out_ptr=int(out.data_ptr()),
            stream=torch.cuda.current_stream(a.device).cuda_stream,
        )
    return out


def reference(
    a: Tensor, g: Tensor, a2: Optional[Tensor], g2: Optional[Tensor], diag: bool
) -> Tensor:
    """Plain torch: two GEMMs and a Hadamard product when T = 1, else the spec itself."""
    from uno.reference.ghost_gram import ghost_gram

    if a.shape[1] == 1 and (a2 is None or a2.shape[1] == 1) and not diag:
        A, G = a[:, 0].double(), g[:, 0].double()
        A2 = A if a2 is None else a2[:, 0].double()
        G2 = G if g2 is None else g2[:, 0].double()  # type: ignore[union-attr]
        return (A @ A2.T) * (G @ G2.T)
    return ghost_gram(a, g, a2, g2, diag=diag)


def triton(a: Tensor, g: Tensor, a2: Optional[Tensor], g2: Optional[Tensor], diag: bool) -> Tensor:
    from uno._triton.ghost_gram import ghost_gram

    return ghost_gram(a, g, a2, g2, diag)


ADAPTERS: Dict[str, Adapter] = {"reference": reference, "cpu": cpu, "cuda": cuda, "triton": triton}


def get(name: str) -> Adapter:
    """The adapter of backend ``name``."""
    return ADAPTERS[name]
