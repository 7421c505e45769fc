"""Cheap layout checks and argument packing shared by the compiled backends (cpu, cuda, triton).

The ops layer hands the adapters well-formed pieces; these checks make a direct caller's mistake (a
non-contiguous piece, a wrong size, a transposed row block, a mixed dtype) a clear exception before any
kernel writes, instead of a read or write through a wrong pointer.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from uno._abi import PAIRS, StepArgs, dtype_code


def code(dtype: torch.dtype, what: str) -> int:
    """The `_C` dtype code of ``dtype`` (docs/kernels.md); TypeError for anything else."""
    return dtype_code(dtype, what)


def check_pair(x_dtype: torch.dtype, row_dtype: torch.dtype) -> None:
    """TypeError unless (x, rows) is an allowed dtype pair (:data:`uno._abi.PAIRS`)."""
    if (x_dtype, row_dtype) not in PAIRS:
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


def check_combine(out: Sequence[Tensor], rows: Sequence[Tensor], m: Tensor, device_type: str):
    """The layout of a ``combine`` call: returns ``(k, r, lds, ns, out_lds)``."""
    k = int(rows[0].shape[0]) if len(rows) else 0
    if m.dim() != 2 or m.shape[1] != k:
        raise ValueError(f"m has shape {tuple(m.shape)}, expected (r, {k})")
    r = int(m.shape[0])
    lds, ns = row_layout(rows, k, "rows", device_type)
    out_lds, out_ns = row_layout(out, r, "out", device_type)
    if out_ns != ns:
        raise ValueError(f"out pieces have {out_ns} columns, rows have {ns}")
    if out[0].dtype != rows[0].dtype:
        raise TypeError(f"out has dtype {out[0].dtype}, expected rows' dtype {rows[0].dtype}")
    return k, r, lds, ns, out_lds


# -- the compiled kernels' arguments of optim_step and ghost_gram (keyword names of `_C`) -------------
def ptr(t: Optional[Tensor]) -> int:
    """A tensor's data pointer, 0 for None."""
    return 0 if t is None else int(t.data_ptr())


def scalar32(t: Optional[Tensor], device: torch.device) -> Optional[Tensor]:
    """A float32 scalar on ``device`` the kernels can read (a no-op for the usual input)."""
    if t is None:
        return None
    return t.to(device=device, dtype=torch.float32).reshape(())


def step_kwargs(a: StepArgs, device: torch.device) -> Tuple[Dict[str, Any], Tuple[Any, ...]]:
    """The ``optim_step_{cpu,cuda}`` arguments both kernels share (pointers, sizes, dtype codes), and
    the converted scalars behind the pointers, which the caller keeps alive until the kernel returns.
    """
    pd = a.params[0].dtype
    c64 = None if a.coef is None else a.coef.to(device=device, dtype=torch.float64).contiguous()
    keep = (c64, scalar32(a.grad_scale, device), scalar32(a.found_inf, device))
    kwargs = dict(
        kind=a.kind,
        phase=a.phase,
        p_ptrs=[int(p.data_ptr()) for p in a.params],
        g_ptrs=[int(g.data_ptr()) for g in a.grads],
        s1_ptrs=[int(s.data_ptr()) for s in a.state1],
        s2_ptrs=[int(s.data_ptr()) for s in a.state2],
        s3_ptrs=[int(s.data_ptr()) for s in a.state3],
        step_ptrs=[int(s.data_ptr()) for s in a.steps],
        row_ptrs=[int(r.data_ptr()) for r in a.rows],
        lds=[int(r.stride(0)) for r in a.rows],
        ns=[int(p.numel()) for p in a.params],
        k=a.k,
        coef_ptr=ptr(keep[0]),
        grad_scale_ptr=ptr(keep[1]),
        found_inf_ptr=ptr(keep[2]),
        hyper=[float(h) for h in a.hyper],
        flags=int(a.flags),
        p_dtype=dtype_code(pd, "params"),
        r_dtype=dtype_code(a.rows[0].dtype, "rows") if len(a.rows) else dtype_code(pd, "params"),
        s_dtype=dtype_code(a.state1[0].dtype, "states")
        if len(a.state1)
        else dtype_code(pd, "params"),
    )
    return kwargs, keep


def ghost_out(a: Tensor, a2: Optional[Tensor], diag: bool) -> Tensor:
    """The float64 result buffer of ``ghost_gram``: (B1, B2), or (B1,) when ``diag``."""
    b1 = a.shape[0]
    b2 = b1 if a2 is None else a2.shape[0]
    return torch.empty((b1,) if diag else (b1, b2), dtype=torch.float64, device=a.device)


def ghost_kwargs(
    a: Tensor, g: Tensor, a2: Optional[Tensor], g2: Optional[Tensor], diag: bool, out: Tensor
) -> Dict[str, Any]:
    """The ``ghost_gram_{cpu,cuda}`` arguments both kernels share."""
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
        dtype=dtype_code(a.dtype, "a"),
        diag=bool(diag),
        symmetric=a2 is None,
        out_ptr=int(out.data_ptr()),
    )
