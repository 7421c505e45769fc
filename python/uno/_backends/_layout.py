"""Cheap layout checks shared by the compiled backends' adapters (cpu, cuda, triton).

The ops layer hands the adapters well-formed pieces; these checks make a direct caller's mistake (a
non-contiguous piece, a wrong size, a transposed row block, a mixed dtype) a clear exception before any
kernel writes, instead of a read or write through a wrong pointer.
"""

from __future__ import annotations

from typing import List, Sequence

import torch
from torch import Tensor

DTYPE_CODES = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}
HALF = (torch.float16, torch.bfloat16)


def code(dtype: torch.dtype, what: str) -> int:
    """The `_C` dtype code of ``dtype`` (docs/kernels.md); TypeError for anything else."""
    try:
        return DTYPE_CODES[dtype]
    except KeyError:
        raise TypeError(
            f"{what} has dtype {dtype}; expected float32, float64, float16 or bfloat16"
        ) from None


def check_pair(x_dtype: torch.dtype, row_dtype: torch.dtype) -> None:
    """Allowed (x, rows) dtype pairs: equal, or float16/bfloat16 x with float32 rows."""
    if x_dtype == row_dtype or (x_dtype in HALF and row_dtype == torch.float32):
        return
    raise TypeError(
        f"rows have dtype {row_dtype} but x has dtype {x_dtype}; expected the same dtype "
        "(or float32 rows for float16/bfloat16 x)"
    )


def row_layout(
    rows: Sequence[Tensor], k: int, what: str, device_type: str
) -> tuple[List[int], List[int]]:
    """Row strides and column counts of ``(k, n_t)`` blocks with unit column stride on one device."""
    if len(rows) == 0:
        raise ValueError(f"{what} is an empty list of pieces")
    device, dtype = rows[0].device, rows[0].dtype
    if device.type != device_type:
        raise ValueError(f"this backend needs {device_type} tensors, got {what} on {device}")
    lds, ns = [], []
    for t, r in enumerate(rows):
        if r.device != device:
            raise ValueError(
                f"{what} spans devices: {what}[0] on {device}, {what}[{t}] on {r.device}"
            )
        if r.dim() != 2 or r.shape[0] != k:
            raise ValueError(f"{what}[{t}] has shape {tuple(r.shape)}, expected ({k}, n)")
        if r.shape[1] > 1 and r.stride(1) != 1:
            raise ValueError(f"{what}[{t}] has column stride {r.stride(1)}, expected 1")
        if r.shape[0] > 1 and r.shape[1] > 0 and r.stride(0) < r.shape[1]:
            raise ValueError(f"{what}[{t}] has overlapping rows (row stride {r.stride(0)})")
        if r.dtype != dtype:
            raise TypeError(f"{what} mixes dtypes: {what}[0] is {dtype}, {what}[{t}] is {r.dtype}")
        lds.append(int(r.stride(0)))
        ns.append(int(r.shape[1]))
    return lds, ns


def vector_ptrs(
    x: Sequence[Tensor], ns: Sequence[int], device: torch.device, what: str
) -> List[int]:
    """Data pointers of ``T`` contiguous pieces of ``ns[t]`` elements on ``device`` (one dtype)."""
    if len(x) != len(ns):
        raise ValueError(f"{what} has {len(x)} pieces but rows have {len(ns)}")
    dtype = x[0].dtype
    for t, (xt, n) in enumerate(zip(x, ns)):
        if xt.numel() != n or not xt.is_contiguous() or xt.device != device:
            raise ValueError(
                f"{what}[{t}] must be a contiguous tensor of {n} elements on {device}, got shape "
                f"{tuple(xt.shape)} (contiguous={xt.is_contiguous()}) on {xt.device}"
            )
        if xt.dtype != dtype:
            raise TypeError(f"{what} mixes dtypes: {what}[0] is {dtype}, {what}[{t}] is {xt.dtype}")
    return [int(xt.data_ptr()) for xt in x]


def coefficients(v: Tensor, shape: tuple[int, ...], device: torch.device, what: str) -> Tensor:
    """``v`` as a contiguous float64 tensor of ``shape`` on ``device`` (no copy when it already is)."""
    if tuple(v.shape) != shape and v.numel() != int(torch.Size(shape).numel()):
        raise ValueError(f"{what} has shape {tuple(v.shape)}, expected {shape}")
    return v.detach().to(device=device, dtype=torch.float64).reshape(shape).contiguous()
