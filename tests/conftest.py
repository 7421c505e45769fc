"""Shared test configuration: the Triton interpreter without a GPU, GPU skipping.

The backend parameters and tolerances live in ``backend_params.py``."""

from __future__ import annotations

import os

import torch

# Triton kernels run on CPU tensors through the interpreter when there is no GPU. The variable must be
# set before triton is imported (uno imports it lazily, on first use of the triton backend).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (gpu marker)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
