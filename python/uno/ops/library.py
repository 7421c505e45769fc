"""Every ``uno::`` custom op: its schema (the signature below) and its fake, on one screen.

Each op body resolves ``backend`` (a name, or ``""`` for ``UNO_BACKEND`` / the device's default)
with :func:`uno._backends.get`, once, and runs the primitives of that one backend module
(docs/kernels.md) through :mod:`uno.ops._rows`. The public functions (``uno.project_``,
``uno.dot``/``gram``/``cos2``, ``uno.orthonormalize``, ``uno.optim``, ``uno.per_sample.ghost_gram``)
validate their arguments and call the entry points at the end of this module: the op, or on a plain
eager call (:mod:`uno.ops._eager`) the same body without the dispatcher's per-tensor layers.
"""

from __future__ import annotations

from types import ModuleType
from typing import List, Optional, Sequence

import torch
from torch import Tensor

from uno import _backends
from uno._abi import PHASE_WRITE, StepArgs
from uno.ops import _rows
from uno.ops._eager import bump_versions, direct_ok

F64 = torch.float64


# -- the op table -----------------------------------------------------------------------------------
@torch.library.custom_op("uno::inner", mutates_args=())
def inner_op(x: List[Tensor], rows: List[Tensor], with_gram: bool, backend: str) -> Tensor:
    """float64 ``[<row_j, x>..., ‖x‖², packed upper Gram of the rows]`` (x may be empty)."""
    return _rows.inner(_backends.get(backend or None, rows[0].device), x, rows, with_gram)


@inner_op.register_fake
def _(x: List[Tensor], rows: List[Tensor], with_gram: bool, backend: str) -> Tensor:
    k = rows[0].shape[0]
    return rows[0].new_empty(k + 1 + (k * (k + 1) // 2 if with_gram else 0), dtype=F64)


@torch.library.custom_op("uno::project_", mutates_args=("grad",))
def project_op(
    grad: List[Tensor], rows: List[Tensor], orthonormal: bool, rtol: float, backend: str
) -> None:
    """In place ``grad ← grad − Π grad`` for the span of the row blocks (orthonormal or raw)."""
    be = _backends.get(backend or None, rows[0].device)
    _rows.project_rows_(be, grad, rows, orthonormal, rtol)


@project_op.register_fake
def _(grad: List[Tensor], rows: List[Tensor], orthonormal: bool, rtol: float, backend: str) -> None:
    return None


@torch.library.custom_op("uno::orthonormalize", mutates_args=())
def orthonormalize_op(rows: List[Tensor], rtol: float, dtype: torch.dtype, backend: str) -> Tensor:
    """The ``[r, P]`` orthonormal buffer of the row blocks' span (r data-dependent)."""
    be = _backends.get(backend or None, rows[0].device)
    return _rows.orthonormalize_rows(be, rows, rtol, dtype)


@orthonormalize_op.register_fake
def _(rows: List[Tensor], rtol: float, dtype: torch.dtype, backend: str) -> Tensor:
    r = torch.library.get_ctx().new_dynamic_size(min=0, max=rows[0].shape[0])
    return rows[0].new_empty(r, sum(x.shape[1] for x in rows), dtype=dtype)


# The fields of uno._abi.StepArgs, flat, then backend. steps: the cuda backend stores Adam's step
# counts itself (FLAG_STEPS_PENDING).
@torch.library.custom_op(
    "uno::optim_step", mutates_args=("params", "grads", "state1", "state2", "state3", "steps")
)
def optim_step_op(
    params: List[Tensor], grads: List[Tensor], state1: List[Tensor], state2: List[Tensor],
    state3: List[Tensor], steps: List[Tensor], rows: List[Tensor], coef: Optional[Tensor],
    grad_scale: Optional[Tensor], found_inf: Optional[Tensor], kind: int, phase: int,
    hyper: List[float], flags: int, backend: str,
) -> Tensor:  # fmt: skip
    """One phase of the fused projected SGD/Adam step (:class:`uno._abi.StepArgs`)."""
    a = StepArgs(
        params, grads, state1, state2, state3, steps, rows, coef, grad_scale, found_inf, kind,
        phase, hyper, flags,
    )  # fmt: skip
    return _backends.get(backend or None, params[0].device).optim_step(a)


@optim_step_op.register_fake
def _(*args: object) -> Tensor:
    a = StepArgs(*args[:-1])  # type: ignore[arg-type]
    return a.params[0].new_empty((a.k if a.phase != PHASE_WRITE else 0,), dtype=F64)


@torch.library.custom_op("uno::ghost_gram", mutates_args=())
def ghost_gram_op(
    a: Tensor, g: Tensor, a2: Optional[Tensor], g2: Optional[Tensor], diag: bool, backend: str
) -> Tensor:
    """float64 (B1, B2) Gram (or its diagonal) of the per-sample gradients ``g_iᵀ a_i``."""
    return _backends.get(backend or None, a.device).ghost_gram(a, g, a2, g2, diag)


@ghost_gram_op.register_fake
def _(a: Tensor, g: Tensor, a2: Optional[Tensor], g2: Optional[Tensor], diag: bool, backend: str):
    b2 = a.shape[0] if a2 is None else a2.shape[0]
    return a.new_empty((a.shape[0],) if diag else (a.shape[0], b2), dtype=F64)


# -- the entry points: the op, or its body on a plain eager call ------------------------------------
def inner(
    x: List[Tensor], rows: Sequence[Tensor], with_gram: bool, backend: Optional[str]
) -> Tensor:
    """``uno::inner`` (saves the dispatcher's ~15 µs per piece on a plain eager call)."""
    if direct_ok(x, rows):
        return _rows.inner(_backends.get(backend, rows[0].device), x, rows, with_gram)
    return inner_op(x, list(rows), with_gram, backend or "")


def project_(
    grad: List[Tensor],
    rows: Sequence[Tensor],
    orthonormal: bool,
    rtol: float,
    backend: Optional[str],
) -> None:
    """``uno::project_``; eager calls keep a Basis' cached row layout (``RowBlocks``) and bump the
    version counters of ``grad`` as the dispatcher would."""
    if direct_ok(grad, rows):
        be = _backends.get(backend, rows[0].device)
        _rows.project_rows_(be, grad, rows, orthonormal, rtol)  # type: ignore[arg-type]
        bump_versions(grad)
    else:
        project_op(grad, list(rows), orthonormal, rtol, backend or "")  # the op takes plain lists


def optim_step(a: StepArgs, be: ModuleType) -> Tensor:
    """``uno::optim_step`` for the backend module ``be``; the write phase bumps the version counters
    of what the op declares mutated (≈ 5 ms per step saved for a 150-tensor model on the CPU)."""
    scalars = [t for t in (a.coef, a.grad_scale, a.found_inf) if t is not None]
    if direct_ok(a.params, a.grads, a.state1, a.state2, a.state3, a.steps, a.rows, scalars):
        out = be.optim_step(a)
        if a.phase == PHASE_WRITE:
            bump_versions([*a.params, *a.grads, *a.state1, *a.state2, *a.state3, *a.steps])
        return out
    return optim_step_op(*a, be.NAME)
