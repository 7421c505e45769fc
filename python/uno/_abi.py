"""The constants shared by Python and the kernels: the Python side of csrc/include/uno/abi.h.

Everything a kernel and its caller must agree on lives here and nowhere else in Python: the dtype
codes passed through ``uno._C``, the dtype policy (which element dtypes and which (vector, rows)
pairs the kernels take), the fused optimizer step's kinds, phases and flag bits, and
:class:`StepArgs`, the step's arguments by name. The compiled core exports the C++ values
(``uno._C.abi``) and ``tests/test_abi.py`` checks that both sides agree.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import torch
from torch import Tensor

# -- dtypes ------------------------------------------------------------------------------------------
DTYPE_CODES = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}
"""The ``_C`` code of every element dtype the kernels take (abi.h ``DType``)."""

FLOAT_DTYPES = tuple(DTYPE_CODES)
HALF_DTYPES = (torch.float16, torch.bfloat16)
FLOAT_NAMES = "float32, float64, float16 or bfloat16"


def dtype_code(dtype: torch.dtype, what: str) -> int:
    """The ``_C`` code of ``dtype``; TypeError naming ``what`` for any other dtype."""
    try:
        return DTYPE_CODES[dtype]
    except KeyError:
        raise TypeError(f"{what} has dtype {dtype}; expected {FLOAT_NAMES}") from None


PAIRS = frozenset({(d, d) for d in FLOAT_DTYPES} | {(h, torch.float32) for h in HALF_DTYPES})
"""The dtype policy, as allowed ``(vector dtype, rows dtype)`` pairs (abi.h ``pair_ok``): equal
dtypes, or float16/bfloat16 vectors with float32 rows. Parameters with their basis or optimizer
states follow the same rule."""


def wide_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a basis or an optimizer state takes for vectors of ``dtype``: float32 for the 16-bit
    dtypes (a half-precision basis could not be orthonormal beyond 1e-3), else ``dtype``."""
    return torch.float32 if dtype in HALF_DTYPES else dtype


# -- the fused optimizer step (python/uno/reference/optim_step.py is the spec) ------------------------
KIND_SGD = 0
KIND_ADAM = 1

PHASE_WRITE = 0  # the optimizer step itself
PHASE_GRAD_COEF = 1  # returns [<row_j, g>]_j
PHASE_UPDATE_COEF = 2  # returns [<row_j, u>]_j, u the update this step would make

FLAG_MAXIMIZE = 1
FLAG_NESTEROV = 2
FLAG_FIRST = 4  # SGD: the momentum buffers are new (buf <- d, as torch's first step)
FLAG_WRITE_GRAD = 8  # write the gradient the step used (projected, unscaled) into grads
FLAG_PROJECT_UPDATE = 16  # coef applies to the update, not to the gradient
FLAG_AMSGRAD = 32
FLAG_DECOUPLED = 64  # AdamW: decoupled weight decay
FLAG_STEPS_PENDING = 128
"""cuda backend only: Adam ``steps`` hold the previous count; the kernels use count + 1 and the write
phase stores it (not when ``found_inf`` is nonzero). The other backends refuse it."""


class StepArgs(NamedTuple):
    """One phase of the fused optimizer step over one group's pieces, by name.

    The ``uno::optim_step`` op takes these fields flat, in this order, then ``backend``
    (:mod:`uno.ops.library` packs them); every backend's ``optim_step`` takes one StepArgs.

    Attributes:
        params: ``T`` contiguous parameter pieces (updated in place by the write phase).
        grads: ``T`` contiguous gradients, the parameters' dtype.
        state1: SGD momentum buffers (empty without momentum) / Adam ``exp_avg``.
        state2: Adam ``exp_avg_sq`` (empty for SGD).
        state3: Adam ``max_exp_avg_sq`` (empty unless amsgrad).
        steps: Adam: ``T`` float32 scalars, this step's count (empty for SGD).
        rows: ``T`` ``(k, n_t)`` row blocks of an orthonormal basis, or empty (no basis).
        coef: float64 ``(k,)`` coefficients to subtract in the write phase, or None.
        grad_scale: float32 scalar the gradients are divided by, or None.
        found_inf: float32 scalar; when nonzero the call changes nothing.
        kind: ``KIND_SGD`` or ``KIND_ADAM``.
        phase: ``PHASE_WRITE``, ``PHASE_GRAD_COEF`` or ``PHASE_UPDATE_COEF``.
        hyper: SGD ``[lr, momentum, dampening, weight_decay]``; Adam
            ``[lr, beta1, beta2, eps, weight_decay]``.
        flags: ``FLAG_*`` bits.
    """

    params: Sequence[Tensor]
    grads: Sequence[Tensor]
    state1: Sequence[Tensor]
    state2: Sequence[Tensor]
    state3: Sequence[Tensor]
    steps: Sequence[Tensor]
    rows: Sequence[Tensor]
    coef: Optional[Tensor]
    grad_scale: Optional[Tensor]
    found_inf: Optional[Tensor]
    kind: int
    phase: int
    hyper: Sequence[float]
    flags: int

    @property
    def k(self) -> int:
        """The number of basis rows (0 without a basis)."""
        return int(self.rows[0].shape[0]) if len(self.rows) else 0


def check_no_pending(flags: int, backend: str) -> None:
    """ValueError for :data:`FLAG_STEPS_PENDING` on a backend that reads steps as incremented."""
    if flags & FLAG_STEPS_PENDING:
        raise ValueError(
            f"optim_step: FLAG_STEPS_PENDING ({FLAG_STEPS_PENDING}) is a cuda-backend flag; the "
            f"{backend} backend reads steps as already incremented"
        )
