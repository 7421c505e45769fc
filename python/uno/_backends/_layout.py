"""Cheap layout checks shared by the compiled backends' adapters (cpu, cuda, triton).

The ops layer hands the adapters well-formed pieces; these checks make a direct caller's mistake (a
non-contiguous piece, a wrong size, a transposed row block, a mixed dtype) a clear exception before any
kernel writes, instead of a read or write through a wrong pointer.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

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


class RowBlocks(list):
    """A list of ``(k, n_t)`` row blocks whose layout was validated once: the per-piece views of a
    :class:`uno.Basis` (``Basis.rows()``), which are the same on every call. The adapters take
    ``lds``/``ns``/``ptrs`` from here instead of re-reading every view's metadata (a few µs per piece,
    i.e. most of a call's Python cost for a 150-piece gradient). ``span`` is the byte range
    ``[lo, hi)`` all blocks lie in (the basis buffer), for the overlap check. Instances are only made
    by :meth:`of` from tensors that pass :func:`row_layout`.
    """

    k: int
    lds: List[int]
    ns: List[int]
    ptrs: List[int]
    device_type: str
    span: Tuple[int, int]

    @classmethod
    def of(cls, rows: Sequence[Tensor], k: int, span: Tuple[int, int]) -> RowBlocks:
        out = cls(rows)
        dev = rows[0].device.type if len(rows) else "cpu"
        out.lds, out.ns = row_layout(rows, k, "rows", dev)
        out.k, out.device_type, out.span = k, dev, span
        out.ptrs = [int(r.data_ptr()) for r in rows]
        return out

    def _read_only(self, *a: object, **kw: object) -> None:
        raise TypeError("RowBlocks is read-only (its layout is cached); copy it with list(rows)")

    __setitem__ = __delitem__ = __iadd__ = __imul__ = _read_only  # type: ignore[assignment]
    append = extend = insert = pop = remove = clear = sort = reverse = _read_only  # type: ignore[assignment]

    def copy(self) -> RowBlocks:  # type: ignore[override]
        out = RowBlocks(self)
        out.k, out.lds, out.ns, out.ptrs = self.k, self.lds, self.ns, self.ptrs
        out.device_type, out.span = self.device_type, self.span
        return out


def row_ptrs(rows: Sequence[Tensor]) -> List[int]:
    """Data pointers of the row blocks."""
    if isinstance(rows, RowBlocks):
        return rows.ptrs
    return [int(r.data_ptr()) for r in rows]


def row_layout(
    rows: Sequence[Tensor], k: int, what: str, device_type: str
) -> tuple[List[int], List[int]]:
    """Row strides and column counts of ``(k, n_t)`` blocks with unit column stride on one device."""
    if isinstance(rows, RowBlocks) and rows.k == k and rows.device_type == device_type:
        return rows.lds, rows.ns
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


class Pieces(list):
    """Contiguous vector pieces (any shapes) of one dtype and device, their pointers and sizes read
    once (:meth:`of`), so that the passes of one ``project_`` call do not re-read every piece's
    metadata. Read-only like :class:`RowBlocks`."""

    ptrs: List[int]
    ns: List[int]
    device: torch.device
    dtype: torch.dtype
    esz: int

    @classmethod
    def of(cls, x: Sequence[Tensor]) -> Optional[Pieces]:
        """The pieces with their layout, or None when one is non-contiguous or dtypes/devices mix."""
        if len(x) == 0:
            return None
        device, dtype = x[0].device, x[0].dtype
        ptrs, ns = [], []
        for t in x:
            if not t.is_contiguous() or t.dtype != dtype or t.device != device:
                return None
            ptrs.append(t.data_ptr())
            ns.append(t.numel())
        out = cls(x)
        out.ptrs, out.ns, out.device, out.dtype = ptrs, ns, device, dtype
        out.esz = x[0].element_size()
        return out

    _read_only = RowBlocks._read_only
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _read_only  # type: ignore[assignment]
    append = extend = insert = pop = remove = clear = sort = reverse = _read_only  # type: ignore[assignment]


def vector_ptrs(
    x: Sequence[Tensor], ns: Sequence[int], device: torch.device, what: str
) -> List[int]:
    """Data pointers of ``T`` contiguous pieces of ``ns[t]`` elements on ``device`` (one dtype)."""
    if isinstance(x, Pieces) and x.device == device and x.ns == list(ns):
        return x.ptrs
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
