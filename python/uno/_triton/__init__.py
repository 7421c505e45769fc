"""Triton kernels of the primitives (see docs/kernels.md), and their launch configuration.

The three row primitives (``inner``, ``project``, ``combine``) work as follows; ``optim_step`` and
``ghost_gram`` say in their own modules how they differ.

Every kernel works on one piece (``x[t]``, ``rows[t]``) per launch: the CPU interpreter
(``TRITON_INTERPRET=1``, set before ``import triton``) cannot load through pointer tables, so piece
descriptors cannot travel as a device array. A launch runs a fixed grid of at most
:func:`max_programs` programs; each program walks the element blocks ``pid, pid + G, pid + 2G, ...``
(grid-stride) over the ``[K_PAD, BLOCK_SIZE]`` tile of the piece's rows, so the partial-sum scratch
stays ``[max_programs, W]`` whatever the vector length. Reductions accumulate in float64 registers and
each program adds its partials to its own scratch row once at the end (the launches of one call run in
stream order, so the read-modify-write never races); the adapter sums the scratch rows with torch.
A fixed configuration gives a fixed partition and a fixed order: the result is deterministic.

Knobs live in :data:`config` (small blocks under the interpreter, which runs each program in Python).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import ContextManager, Dict

import torch

from uno._abi import FLOAT_DTYPES, PAIRS

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


@dataclass
class TritonConfig:
    """Launch knobs (mutable at run time; read on every call).

    Attributes:
        tile: target number of elements of the ``[K_PAD, BLOCK_SIZE]`` row tile a program holds in
            registers (``BLOCK_SIZE = tile // K_PAD`` clamped to ``[min_block, max_block]``).
        min_block: smallest ``BLOCK_SIZE`` (a power of two, >= 16 for ``tl.dot``).
        max_block: largest ``BLOCK_SIZE`` (a power of two).
        programs_per_sm: programs per streaming multiprocessor of one launch on a GPU.
        interpret_programs: programs of one launch under the interpreter.
        dot: the Gram matrix of ``inner`` and the ``m @ rows`` of ``combine`` as ``tl.dot`` on
            float64 tiles (True), or row by row against the tile (False: more instructions, no
            matrix unit). Environment variable ``UNO_TRITON_DOT=0`` turns it off.
    """

    tile: int
    min_block: int
    max_block: int
    programs_per_sm: int = 4
    interpret_programs: int = 2
    dot: bool = True


config = (
    TritonConfig(tile=2048, min_block=16, max_block=64)
    if INTERPRET
    else TritonConfig(tile=4096, min_block=32, max_block=1024)
)
config.dot = os.environ.get("UNO_TRITON_DOT", "1") != "0"


def next_pow2(n: int) -> int:
    """Smallest power of two >= ``n`` (``n >= 1``)."""
    return 1 << (max(int(n), 1) - 1).bit_length()


def k_pad(k: int, minimum: int = 1) -> int:
    """Row count of the padded tile: the next power of two of ``k``, at least ``minimum``."""
    return max(next_pow2(k), minimum)


def block_size(kp: int) -> int:
    """Columns of a ``[kp, BLOCK_SIZE]`` tile under the current :data:`config`."""
    b = next_pow2(max(config.tile // kp, 1))
    return max(config.min_block, min(config.max_block, b))


def num_warps(kp: int, block: int) -> int:
    """Warps per program: 8 for tiles of 4096 elements and more, else 4."""
    return 8 if kp * block >= 4096 else 4


_SMS: Dict[int, int] = {}


def max_programs(device: torch.device) -> int:
    """Programs of one launch: a few per SM on a GPU, :attr:`config.interpret_programs` otherwise."""
    if INTERPRET or device.type != "cuda":
        return max(1, config.interpret_programs)
    idx = device.index if device.index is not None else torch.cuda.current_device()
    if idx not in _SMS:
        _SMS[idx] = torch.cuda.get_device_properties(idx).multi_processor_count
    return max(1, config.programs_per_sm * _SMS[idx])


def check_dtypes(x_dtype: torch.dtype, row_dtype: torch.dtype) -> None:
    """Raise ``TypeError`` for a dtype pair the kernels do not support (:data:`uno._abi.PAIRS`)."""
    if x_dtype not in FLOAT_DTYPES or row_dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"triton backend: expected float32/float64/float16/bfloat16 tensors, "
            f"got x {x_dtype} and rows {row_dtype}"
        )
    if (x_dtype, row_dtype) not in PAIRS:
        raise TypeError(
            f"triton backend: x and rows must share a dtype, or x float16/bfloat16 with rows "
            f"float32; got x {x_dtype} and rows {row_dtype}"
        )
    if INTERPRET and torch.bfloat16 in (x_dtype, row_dtype):
        raise TypeError(
            "triton backend: bfloat16 is not supported under TRITON_INTERPRET=1 (the CPU "
            "interpreter has no bfloat16 arithmetic); use float16/float32 or a GPU"
        )


def device_guard(device: torch.device) -> ContextManager[object]:
    """Triton launches on the current CUDA device, which need not be the pieces' device."""
    if device.type == "cuda":
        return torch.cuda.device(device)
    return contextlib.nullcontext()
