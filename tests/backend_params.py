"""Backends as test parameters and per-dtype tolerances, shared by the op and kernel tests.

A module of its own (not ``conftest``): ``tests/unlearn/conftest.py`` would shadow a ``from conftest
import`` when both folders are collected in one run.
"""

from __future__ import annotations

import os

import torch

# Triton kernels run on CPU tensors through the interpreter when there is no GPU. The variable must be
# set before triton is imported (uno imports it lazily, on first use of the triton backend).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest

from uno import _backends


def _param(backend: str, device: str):
    marks = [pytest.mark.gpu] if device == "cuda" else []
    info = _backends.info(backend)
    if device == "cpu" and "cpu" not in info.devices:
        marks.append(
            pytest.mark.skip(reason=f"backend {backend} unavailable on cpu: {info.reason}")
        )
    return pytest.param(backend, device, marks=marks, id=f"{backend}-{device}")


# (backend, device) pairs every op test runs over.
BACKEND_DEVICES = [
    _param("reference", "cpu"),
    _param("cpu", "cpu"),
    _param("triton", "cpu"),
    _param("reference", "cuda"),
    _param("cuda", "cuda"),
    _param("triton", "cuda"),
]

# Per-dtype tolerances for comparing a backend's result with the float64 oracle.
TOL = {
    torch.float32: dict(rtol=2e-5, atol=2e-6),
    torch.float64: dict(rtol=1e-11, atol=1e-12),
    torch.float16: dict(rtol=5e-3, atol=5e-3),
    torch.bfloat16: dict(rtol=4e-2, atol=4e-2),
}


def dtypes_for(backend: str, device: str):
    """dtypes a (backend, device) pair supports; the Triton interpreter has no bfloat16."""
    out = [torch.float32, torch.float64, torch.float16]
    if not (backend == "triton" and device == "cpu"):
        out.append(torch.bfloat16)
    return out
