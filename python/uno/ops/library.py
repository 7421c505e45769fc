"""Every ``uno::`` custom op: its schema (the body's signature), its fake, and its eager entry point.

An op is a plain function, its *body*: it resolves ``backend`` (a name, or ``""`` for
``UNO_BACKEND`` / the device's default) once with :func:`uno._backends.get` and runs that backend
module's primitives (docs/kernels.md), through :mod:`uno.ops._rows` for the algorithms. The
``torch.library.custom_op`` made from the body is the op the dispatcher sees (``torch.compile``,
``opcheck``, modes); the entry points at the end (``inner``, ``project_``, ``optim_step``) are what
the public functions call: the body itself on a plain eager call, else the op.

Why the eager path exists: a custom op call pays for the dispatcher's Python layers (autograd
wrapper, ADInplaceOrView, the dynamo guard) on every tensor of its lists, about 15 µs per piece, which
for a model's gradient of 50-150 pieces is milliseconds — more than the kernels below ~1e6
parameters. In plain eager code none of that is needed: :func:`direct_ok` says when a call is in that
situation (no tracing, no fake tensors, no autograd through the op, no tensor subclasses, no modes);
after a direct call of a mutating op the entry point bumps the version counters of what it wrote, as
the dispatcher would (autograd's in-place checks stay intact).
"""

from __future__ import annotations

from types import ModuleType
from typing import Iterable, List, Optional, Sequence

import torch
from torch import Tensor
from torch.nn import Parameter

from uno import _backends
from uno._abi import PHASE_WRITE, StepArgs
from uno.ops import _rows

F64 = torch.float64
_op = torch.library.custom_op


# -- the op table: body, op, fake -------------------------------------------------------------------
def _inner(x: List[Tensor], rows: List[Tensor], with_gram: bool, backend: str) -> Tensor:
    """float64 ``[<row_j, x>..., ‖x‖², packed upper Gram of the rows]`` (x may be empty)."""
    return _rows.inner(_backends.get(backend or None, rows[0].device), x, rows, with_gram)


inner_op = _op("uno::inner", _inner, mutates_args=())


@inner_op.register_fake
def _(x: List[Tensor], rows: List[Tensor], with_gram: bool, backend: str) -> Tensor:
    k = rows[0].shape[0]
    return rows[0].new_empty(k + 1 + (k * (k + 1) // 2 if with_gram else 0), dtype=F64)


def _project(
    grad: List[Tensor], rows: List[Tensor], orthonormal: bool, rtol: float, backend: str
) -> None:
    """In place ``grad ← grad − Π grad`` for the span of the row blocks (orthonormal or raw)."""
    be = _backends.get(backend or None, rows[0].device)
    _rows.project_rows_(be, grad, rows, orthonormal, rtol)


project_op = _op("uno::project_", _project, mutates_args=("grad",))


@project_op.register_fake
def _(grad: List[Tensor], rows: List[Tensor], orthonormal: bool, rtol: float, backend: str) -> None:
    return None


def _orthonormalize(rows: List[Tensor], rtol: float, dtype: torch.dtype, backend: str) -> Tensor:
    """The ``[r, P]`` orthonormal buffer of the row blocks' span (r data-dependent)."""
    be = _backends.get(backend or None, rows[0].device)
    return _rows.orthonormalize_rows(be, rows, rtol, dtype)


orthonormalize_op = _op("uno::orthonormalize", _orthonormalize, mutates_args=())


@orthonormalize_op.register_fake
def _(rows: List[Tensor], rtol: float, dtype: torch.dtype, backend: str) -> Tensor:
    r = torch.library.get_ctx().new_dynamic_size(min=0, max=rows[0].shape[0])
    return rows[0].new_empty(r, sum(x.shape[1] for x in rows), dtype=dtype)


def _optim_step(
    params: List[Tensor], grads: List[Tensor], state1: List[Tensor], state2: List[Tensor],
    state3: List[Tensor], steps: List[Tensor], rows: List[Tensor], coef: Optional[Tensor],
    grad_scale: Optional[Tensor], found_inf: Optional[Tensor], kind: int, phase: int,
    hyper: List[float], flags: int, backend: str,
) -> Tensor:  # fmt: skip
    """One phase of the fused projected SGD/Adam step: the fields of :class:`uno._abi.StepArgs`,
    flat (torch.library needs flat arguments), then ``backend``."""
    a = StepArgs(
        params, grads, state1, state2, state3, steps, rows, coef, grad_scale, found_inf, kind,
        phase, hyper, flags,
    )  # fmt: skip
    return _backends.get(backend or None, params[0].device).optim_step(a)


# steps: the cuda backend stores Adam's step counts itself (FLAG_STEPS_PENDING).
optim_step_op = _op(
    "uno::optim_step",
    _optim_step,
    mutates_args=("params", "grads", "state1", "state2", "state3", "steps"),
)


@optim_step_op.register_fake
def _(*args: object) -> Tensor:
    a = StepArgs(*args[:-1])  # type: ignore[arg-type]
    return a.params[0].new_empty((a.k if a.phase != PHASE_WRITE else 0,), dtype=F64)


def _ghost_gram(
    a: Tensor, g: Tensor, a2: Optional[Tensor], g2: Optional[Tensor], diag: bool, backend: str
) -> Tensor:
    """float64 (B1, B2) Gram (or its diagonal) of the per-sample gradients ``g_iᵀ a_i``."""
    return _backends.get(backend or None, a.device).ghost_gram(a, g, a2, g2, diag)


ghost_gram_op = _op("uno::ghost_gram", _ghost_gram, mutates_args=())


@ghost_gram_op.register_fake
def _(a: Tensor, g: Tensor, a2: Optional[Tensor], g2: Optional[Tensor], diag: bool, backend: str):
    b2 = a.shape[0] if a2 is None else a2.shape[0]
    return a.new_empty((a.shape[0],) if diag else (a.shape[0], b2), dtype=F64)


# -- the entry points: the body on a plain eager call, else the op ---------------------------------
def inner(
    x: List[Tensor], rows: Sequence[Tensor], with_gram: bool, backend: Optional[str]
) -> Tensor:
    """``uno::inner``."""
    if direct_ok(x, rows):
        return _inner(x, rows, with_gram, backend or "")  # type: ignore[arg-type]
    return inner_op(x, _rows.op_rows(rows), with_gram, backend or "")


def project_(
    grad: List[Tensor],
    rows: Sequence[Tensor],
    orthonormal: bool,
    rtol: float,
    backend: Optional[str],
) -> None:
    """``uno::project_``; an eager call keeps a Basis' cached row layout (``RowBlocks``)."""
    if direct_ok(grad, rows):
        _project(grad, rows, orthonormal, rtol, backend or "")  # type: ignore[arg-type]
        bump_versions(grad)
    else:
        project_op(grad, _rows.op_rows(rows), orthonormal, rtol, backend or "")  # plain lists


def orthonormalize(
    rows: Sequence[Tensor], rtol: float, dtype: torch.dtype, backend: Optional[str]
) -> Tensor:
    """``uno::orthonormalize``; an eager call reads separate vectors in place (a ``RowTable``)."""
    if direct_ok(rows):
        return _orthonormalize(rows, rtol, dtype, backend or "")  # type: ignore[arg-type]
    return orthonormalize_op(_rows.op_rows(rows), rtol, dtype, backend or "")


def optim_step(a: StepArgs, be: ModuleType) -> Tensor:
    """``uno::optim_step`` on backend module ``be`` (≈ 5 ms per step saved for a 150-tensor model on
    the CPU by the eager path)."""
    scalars = [t for t in (a.coef, a.grad_scale, a.found_inf) if t is not None]
    if direct_ok(a.params, a.grads, a.state1, a.state2, a.state3, a.steps, a.rows, scalars):
        out = be.optim_step(a)
        if a.phase == PHASE_WRITE:
            bump_versions([*a.params, *a.grads, *a.state1, *a.state2, *a.state3, *a.steps])
        return out
    return optim_step_op(*a, be.NAME)


# -- when the dispatcher may be skipped ---------------------------------------------------------------
_PLAIN = (Tensor, Parameter)


def _no_modes() -> bool:
    try:
        from torch.utils._python_dispatch import _get_current_dispatch_mode

        if torch.compiler.is_compiling() or torch._C._is_torch_function_mode_enabled():
            return False
        if _get_current_dispatch_mode() is not None:
            return False
        return torch._C._functorch.peek_interpreter_stack() is None
    except AttributeError:  # an older/newer torch without these hooks: always use the dispatcher
        return False


def direct_ok(*tensor_lists: Iterable[Tensor]) -> bool:
    """True when an op on these tensors may run its body without the dispatcher."""
    if not _no_modes():
        return False
    grad_mode = torch.is_grad_enabled()
    for ts in tensor_lists:
        for t in ts:
            if type(t) not in _PLAIN or (grad_mode and t.requires_grad):
                return False
    return True


def bump_versions(tensors: Iterable[Tensor]) -> None:
    """Mark ``tensors`` as modified in place (what the dispatcher does for a mutating op)."""
    torch.autograd.graph.increment_version(list(tensors))
