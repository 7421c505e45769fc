"""Shared inputs of the kernel-primitive tests (test_inner.py, test_project.py, test_combine.py)."""

from __future__ import annotations

import torch

from backend_params import BACKEND_DEVICES

FAST = [p for p in BACKEND_DEVICES if p.values[0] != "reference"]


def _rows_for(ns, k, dtype, device, *, strided: bool, gen):
    """k rows over pieces of sizes ns: slices of one [k, P + pad] buffer (strided) or (k, n_t) blocks."""
    if strided:
        total = sum(ns) + 7  # a row stride that is not the piece size
        buf = torch.randn(k, total, generator=gen, dtype=torch.float64).to(device, dtype)
        out, o = [], 3
        for n in ns:
            out.append(buf[:, o : o + n])
            o += n
        return out
    return [torch.randn(k, n, generator=gen, dtype=torch.float64).to(device, dtype) for n in ns]


def _x_for(ns, dtype, device, gen):
    return [torch.randn(n, generator=gen, dtype=torch.float64).to(device, dtype) for n in ns]


def _row_dtype(x_dtype):
    return torch.float32 if x_dtype in (torch.float16, torch.bfloat16) else x_dtype


SHAPES = [[1], [0, 5], [37, 0, 129, 1], [4096 + 3, 11, 1537]]
