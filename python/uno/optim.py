"""Projected optimizers: SGD and Adam/AdamW steps that move orthogonally to a basis, fused.

:class:`ProjectedSGD` and :class:`ProjectedAdam` are ``torch.optim.Optimizer`` subclasses with the
semantics, state names and ``state_dict`` layout of ``torch.optim.SGD`` and ``torch.optim.Adam`` /
``torch.optim.AdamW``: a state saved by one loads into the other. Given a basis (a :class:`uno.Basis`
over the optimizer's parameters in order, or raw vectors, orthonormalised once by
:func:`uno.orthonormalize`), each step removes the basis directions in one of two places:

``project="grad"`` (default)
    The gradient is projected, ``g' = g − Qᵀ(Q g)``, and the optimizer runs on ``g'``: exactly
    ``uno.project_`` on the gradients followed by the stock optimizer. Right when the *loss signal*
    along the basis must be ignored (e.g. "do not use what the retained data's gradients say"): the
    optimizer's states never see those directions. The parameter change itself is not orthogonal to
    the basis when momentum carries older components, when weight decay acts, or with Adam (its
    per-coordinate scaling ``1/(√v̂+ε)`` rotates an orthogonal gradient out of the complement).
``project="update"``
    The optimizer runs on the raw gradient (its states see everything) and the final parameter change
    ``u`` (after momentum, Adam's preconditioning and weight decay) is projected:
    ``p ← p + u − Qᵀ(Q u)``. Right when the *parameters* must not move along the basis (e.g. a
    constraint "do not change the model's outputs on retained data to first order"): each step's
    parameter change is orthogonal to the basis, up to the final rounding of ``p``.

Cost per step (one parameter group, fp32, k basis vectors; bytes per parameter moved):
* ``project="grad"``: pass 1 reads g and Q (``4 + 4k``): ``c = Q g`` (float64 sums); pass 2 reads g, Q,
  p, states and writes p, states (SGD with momentum ``4+4k+16``; Adam ``4+4k+24``). Adam: ``32 + 8k``.
* ``project="update"``: pass 1 recomputes the update without writing (reads g, p, states, Q) to get
  ``a = Q u``; pass 2 as above. Adam: ``52 + 8k``.
* no basis: one pass (the stock optimizer's maths; Adam 28 bytes).

Precision: the element-wise optimizer maths runs in float32 for float32/float16/bfloat16 parameters and
float64 for float64 ones (as torch's optimizers); the projection is formed in float64 and rounded
once; reductions accumulate in float64. float16/bfloat16 parameters keep float32 states (torch keeps
them in the parameter's dtype; loading either way converts). One classical Gram-Schmidt pass is made
per step (the component left along Q is at rounding level relative to ``|g|``, not ``|g'|``).

Mixed precision: ``grad_scale`` / ``found_inf`` behave as in ``torch.optim.Adam(fused=True)`` (also
read from the attributes ``torch.amp.GradScaler`` sets): gradients are divided by ``grad_scale``;
when ``found_inf`` is nonzero the step is skipped entirely, no state (not even Adam's step count)
moves. On CUDA the kernels read both tensors on the device: no host synchronisation (one exception:
the first step of SGD with momentum, where creating the momentum buffers or not depends on found_inf,
reads it once on the host).

Projected gradients are not written back into ``p.grad`` unless ``write_grad=True`` (then ``p.grad``
holds the gradient the optimizer used: projected in ``"grad"`` mode, unscaled). An expanded
(stride-0) ``p.grad`` is read through a contiguous copy; with ``write_grad=True`` it is a ValueError
(expanded/overlapping memory cannot be written in place), raised before anything moves.

Parameters without a gradient (``p.grad is None``, e.g. an unused head after ``zero_grad()``) are not
updated and keep their state, as in ``torch.optim``. The projection then runs within the parameters
that are updated: the basis is restricted to them and re-orthonormalised there (:func:`uno.orthonormalize`
of the restricted rows; the rank rule drops directions that vanish on them), so the step's change,
zero on the skipped parameters, is still orthogonal to every vector of the full basis. The restricted
basis is cached while the set of updated parameters and the basis stay the same. A restricted basis of
rank 0 gives an unprojected step; no gradient at all, no step.

Non-finite gradients: when the projection coefficients of a step are not finite (an inf/nan gradient
element; in ``"update"`` mode an inf/nan update element), the step does not project, in every
backend (decided on the device, no host synchronisation): ``"grad"`` mode is then exactly
``uno.project_`` (which leaves a non-finite gradient untouched) followed by the stock optimizer, and
``"update"`` mode the stock step. Only the non-finite elements become non-finite, as in
``torch.optim``; a nan is never broadcast into every parameter. (With AMP, ``found_inf`` skips the
step before that.)

Hyperparameters (``lr``, ``momentum``, ``dampening``, ``weight_decay``, ``betas``, ``eps``) must be
finite real numbers in torch's ranges; they are checked at construction and again at every step (a
scheduler may change ``param_groups``), before anything is written.

The functional forms :func:`project_sgd_` and :func:`project_adam_` take parameter, gradient and
state tensor lists, for users with their own optimizer loops. They update every parameter they are
given with the basis as it is (there is no None gradient there): to leave parameters out, pass the
subset and a basis over that subset. The tensors they write (parameters, states, and gradients with
``write_grad=True``) must not overlap one another, the gradients or the basis (ValueError).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from uno import _abi, _backends
from uno._abi import (
    FLAG_AMSGRAD,
    FLAG_DECOUPLED,
    FLAG_FIRST,
    FLAG_MAXIMIZE,
    FLAG_NESTEROV,
    FLAG_PROJECT_UPDATE,
    FLAG_WRITE_GRAD,
    KIND_ADAM,
    KIND_SGD,
    PHASE_GRAD_COEF,
    PHASE_UPDATE_COEF,
    PHASE_WRITE,
    StepArgs,
)
from uno.ops import library
from uno.ops._checks import check_disjoint, check_writable

__all__ = ["ProjectedAdam", "ProjectedSGD", "project_adam_", "project_sgd_"]

_PROJECT_MODES = ("grad", "update")


# ---------------------------------------------------------------------------------------------------
# Validation and the step driver shared by the classes and the functional forms.
# ---------------------------------------------------------------------------------------------------
def _check_project(project: str) -> str:
    if project not in _PROJECT_MODES:
        raise ValueError(f"project must be 'grad' or 'update', got {project!r}")
    return project


_state_dtype = _abi.wide_dtype


def _check_param(p: Tensor, g: Tensor, i: int, write_grad: bool = False) -> None:
    _abi.dtype_code(p.dtype, f"parameter {i}")
    if g.is_sparse or p.is_sparse:
        raise TypeError(f"parameter {i}: sparse gradients/parameters are not supported")
    if g.shape != p.shape:
        raise ValueError(f"grad {i} has shape {tuple(g.shape)}, its parameter has {tuple(p.shape)}")
    if g.dtype != p.dtype:
        raise TypeError(f"grad {i} has dtype {g.dtype}, its parameter has {p.dtype}")
    if g.device != p.device:
        raise ValueError(
            f"expected grad {i} and its parameter on the same device, got {g.device} and {p.device}"
        )
    if not p.is_contiguous():
        raise ValueError(
            f"parameter {i} (shape {tuple(p.shape)}) is not contiguous; the fused step updates "
            "parameters in place through flat views"
        )
    if write_grad:  # an expanded grad is only read otherwise (through a contiguous copy)
        check_writable(g, f"grad {i} (write_grad=True)")


def _basis_rows(basis: Any, params: Sequence[Tensor], what: str = "basis") -> List[Tensor]:
    """Per-parameter ``(k, n_t)`` row blocks of an orthonormal basis over ``params`` (k may be 0)."""
    from uno.ops.basis import Basis

    if not isinstance(basis, Basis):
        raise TypeError(f"{what} must be a uno.Basis here, got {type(basis).__name__}")
    shapes = [tuple(p.shape) for p in params]
    if [tuple(s) for s in basis.shapes] != shapes:
        raise ValueError(
            f"{what} was built over pieces of shapes {[tuple(s) for s in basis.shapes]}, but the "
            f"parameters have shapes {shapes} (a basis over other parameters?)"
        )
    for i, p in enumerate(params):
        if basis.device != p.device:
            raise ValueError(
                f"expected the parameters and the {what} on the same device, got {p.device} "
                f"(parameter {i}) and {basis.device}"
            )
        if (p.dtype, basis.dtype) not in _abi.PAIRS:
            raise TypeError(
                f"{what} has dtype {basis.dtype} but parameter {i} has dtype {p.dtype}; expected "
                "the same dtype (or a float32 basis for float16/bfloat16 parameters)"
            )
    if basis.k == 0:
        return []
    return basis.rows()


def _as_basis(basis: Any, params: Sequence[Tensor], backend: Optional[str]) -> Any:
    """A uno.Basis for ``basis`` (a Basis, or raw vectors orthonormalised here), validated."""
    from uno.ops.basis import Basis
    from uno.ops.orthonormalize import orthonormalize

    if basis is None:
        return None
    if not isinstance(basis, Basis):
        if isinstance(basis, Tensor):
            vectors: Any = (
                [[basis]] if len(params) == 1 and basis.shape == params[0].shape else basis
            )
        elif (
            isinstance(basis, (list, tuple)) and basis and all(isinstance(b, Tensor) for b in basis)
        ):
            vectors = [list(basis)] if len(params) > 1 else [[b] for b in basis]
        else:
            vectors = basis
        dt = torch.float32 if params[0].dtype in _abi.HALF_DTYPES else None
        basis = orthonormalize(vectors, dtype=dt, backend=backend)
    _basis_rows(basis, params)
    return basis


@dataclass
class _Call:
    """One kernel call: pieces of equal dtype (and momentum-buffer age) with shared hyperparameters."""

    params: List[Tensor] = field(default_factory=list)
    grads: List[Tensor] = field(default_factory=list)
    user_grads: List[Tensor] = field(default_factory=list)  # to write back non-contiguous grads
    s1: List[Tensor] = field(default_factory=list)
    s2: List[Tensor] = field(default_factory=list)
    s3: List[Tensor] = field(default_factory=list)
    steps: List[Tensor] = field(default_factory=list)
    rows: List[Tensor] = field(default_factory=list)
    hyper: List[float] = field(default_factory=list)
    flags: int = 0
    be: Any = None  # the backend module (uno._backends) of the call's device


def _flat(t: Tensor, flat: bool = True) -> Tensor:
    if not flat and t.is_contiguous():
        return t
    return t.view(-1) if t.is_contiguous() else t.reshape(-1)


def _backend_of(bes: Dict[torch.device, Any], backend: Optional[str], device: torch.device) -> Any:
    """The backend module for ``device``, resolved once per step and device (memo ``bes``)."""
    be = bes.get(device)
    if be is None:
        be = bes[device] = _backends.get(backend, device)
    return be


def _needs_flat(be: Any) -> bool:
    """Whether the pieces must be 1-D views: the cpu and cuda kernels only read data pointers and
    sizes of contiguous tensors, so they skip the views (a few µs per tensor per step)."""
    return be.NAME not in ("cpu", "cuda")


def _run(
    kind: int,
    calls: Sequence[_Call],
    k: int,
    project: str,
    grad_scale: Optional[Tensor],
    found_inf: Optional[Tensor],
) -> None:
    """The fused step: (with a basis) one coefficient pass over every call, then one write pass each.

    Adam's step counts are incremented here: by the kernels themselves for calls that run on the
    cuda backend (``FLAG_STEPS_PENDING``: no extra launch, and a skipped step leaves them alone),
    else by ``torch._foreach_add_`` before the passes (taken back on the device afterwards when
    ``found_inf`` is a device tensor, see :func:`_undo_increment`).
    """
    calls = [c for c in calls if c.params]
    if not calls:
        return
    torch_steps: List[Tensor] = []
    if kind == KIND_ADAM:
        in_kernel = _steps_distinct(calls)
        for c in calls:
            if in_kernel and c.be.NAME == "cuda":
                c.flags |= _abi.FLAG_STEPS_PENDING
            else:
                torch_steps += c.steps
        _increment(torch_steps)
    coef: Optional[Tensor] = None
    if k > 0:
        phase = PHASE_GRAD_COEF if project == "grad" else PHASE_UPDATE_COEF
        for c in calls:
            part = _call(c, None, grad_scale, found_inf, kind, phase)
            coef = part if coef is None else coef + part
    for c in calls:
        _call(c, coef, grad_scale, found_inf, kind, PHASE_WRITE)
        if c.flags & FLAG_WRITE_GRAD:
            for ug, g in zip(c.user_grads, c.grads):
                if ug.data_ptr() != g.data_ptr() or not ug.is_contiguous():
                    ug.copy_(g.view(ug.shape))
    if kind == KIND_ADAM:
        _undo_increment(torch_steps, found_inf)


def _call(
    c: _Call,
    coef: Optional[Tensor],
    grad_scale: Optional[Tensor],
    found_inf: Optional[Tensor],
    kind: int,
    phase: int,
) -> Tensor:
    """One phase of one call (``uno::optim_step``, or its body on a plain eager call)."""
    a = StepArgs(
        c.params, c.grads, c.s1, c.s2, c.s3, c.steps, c.rows, coef, grad_scale, found_inf, kind,
        phase, c.hyper, c.flags,
    )  # fmt: skip
    return library.optim_step(a, c.be)


def _steps_distinct(calls: Sequence[_Call]) -> bool:
    """True when no step counter appears twice (the kernels store each counter once per step)."""
    ptrs = [s.data_ptr() for c in calls for s in c.steps]
    return len(set(ptrs)) == len(ptrs)


def _skip_on_host(found_inf: Optional[Tensor], force: bool) -> bool:
    """True when found_inf says skip and may be read without a device sync (CPU), or must be read."""
    if found_inf is None:
        return False
    if found_inf.device.type == "cpu" or force:
        return bool(found_inf.item() != 0)
    return False


def _check_scalars(grad_scale: Optional[Tensor], found_inf: Optional[Tensor]) -> None:
    for name, t in (("grad_scale", grad_scale), ("found_inf", found_inf)):
        if t is not None and (not isinstance(t, Tensor) or t.numel() != 1):
            raise ValueError(f"{name} must be a one-element tensor, got {t!r}"[:200])


def _mode_flags(project: str, write_grad: bool, maximize: bool) -> int:
    return (
        (FLAG_PROJECT_UPDATE if project == "update" else 0)
        | (FLAG_WRITE_GRAD if write_grad else 0)
        | (FLAG_MAXIMIZE if maximize else 0)
    )


def _resolve_rows(basis: Any, params: Sequence[Tensor], backend: Optional[str]) -> List[Tensor]:
    b = _as_basis(basis, params, backend)
    return [] if b is None else _basis_rows(b, params)


# ---------------------------------------------------------------------------------------------------
# Functional forms.
# ---------------------------------------------------------------------------------------------------
def project_sgd_(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    momentum_buffers: List[Optional[Tensor]],
    *,
    lr: float,
    momentum: float = 0.0,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    maximize: bool = False,
    basis: Any = None,
    project: str = "grad",
    grad_scale: Optional[Tensor] = None,
    found_inf: Optional[Tensor] = None,
    write_grad: bool = False,
    backend: Optional[str] = None,
) -> None:
    """One projected SGD step over parameter lists, in place (``torch.optim.SGD``'s maths).

    Args:
        params: ``T`` contiguous parameters (updated in place).
        grads: their gradients (same shapes and dtypes).
        momentum_buffers: ``T`` entries (ignored when ``momentum == 0``); a ``None`` entry is a new
            buffer: it is created (float32 for float16/bfloat16 parameters) and stored in the list.
        lr, momentum, dampening, weight_decay, nesterov, maximize: as ``torch.optim.SGD``.
        basis: a :class:`uno.Basis` over ``params`` (raw vectors are orthonormalised on every call:
            build a Basis once instead), or None.
        project: ``"grad"`` or ``"update"`` (see the module docstring).
        grad_scale, found_inf: one-element tensors as in ``torch.optim.Adam(fused=True)``.
        write_grad: write the projected (unscaled) gradient into ``grads``.
        backend: ``reference``, ``cpu``, ``cuda`` or ``triton`` (default: see :func:`uno.backends`).
    """
    params, grads = _as_lists(params, grads)
    _validate_lists(params, grads, write_grad)
    _check_sgd_hyper(lr, momentum, dampening, weight_decay, nesterov)
    _check_project(project)
    _check_scalars(grad_scale, found_inf)
    if momentum != 0 and len(momentum_buffers) != len(params):
        raise ValueError(
            f"momentum_buffers has {len(momentum_buffers)} entries for {len(params)} parameters"
        )
    if momentum != 0:
        _validate_states(momentum_buffers, params, "momentum_buffers", allow_none=True)
        if not isinstance(momentum_buffers, list) and any(b is None for b in momentum_buffers):
            raise TypeError(
                "momentum_buffers must be a list when it has None entries (the new buffers are "
                f"stored into it), got a {type(momentum_buffers).__name__}"
            )
    rows = _resolve_rows(basis, params, backend)
    bufs = momentum_buffers if momentum != 0 else []
    _check_fn_aliasing(params, grads, [("momentum_buffers", bufs)], rows, write_grad)
    new_bufs = momentum != 0 and any(b is None for b in momentum_buffers)
    if _skip_on_host(found_inf, force=new_bufs):
        return
    calls = _sgd_calls(
        params, grads, momentum_buffers, rows, lr, momentum, dampening, weight_decay, nesterov,
        _mode_flags(project, write_grad, maximize), backend, {},
    )  # fmt: skip
    _run(KIND_SGD, calls, len(rows) and rows[0].shape[0], project, grad_scale, found_inf)


def project_adam_(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    exp_avgs: Sequence[Tensor],
    exp_avg_sqs: Sequence[Tensor],
    max_exp_avg_sqs: Sequence[Tensor],
    state_steps: Sequence[Tensor],
    *,
    lr: float,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    decoupled_weight_decay: bool = False,
    amsgrad: bool = False,
    maximize: bool = False,
    basis: Any = None,
    project: str = "grad",
    grad_scale: Optional[Tensor] = None,
    found_inf: Optional[Tensor] = None,
    write_grad: bool = False,
    backend: Optional[str] = None,
) -> None:
    """One projected Adam/AdamW step over parameter lists, in place (``torch.optim.Adam``'s maths).

    Args:
        params: ``T`` contiguous parameters (updated in place).
        grads: their gradients.
        exp_avgs, exp_avg_sqs: the moment estimates (parameter shapes; the parameter's dtype, or
            float32 for float16/bfloat16 parameters).
        max_exp_avg_sqs: as above when ``amsgrad`` (else ignored, may be empty).
        state_steps: ``T`` float32 one-element step counters on the parameters' device (CPU
            counters are fine for CPU parameters); incremented here (not when ``found_inf``).
        lr, beta1, beta2, eps, weight_decay, amsgrad, maximize: as ``torch.optim.Adam``;
            ``decoupled_weight_decay=True`` is AdamW.
        basis, project, grad_scale, found_inf, write_grad, backend: as :func:`project_sgd_`.
    """
    params, grads = _as_lists(params, grads)
    _validate_lists(params, grads, write_grad)
    _check_adam_hyper(lr, (beta1, beta2), eps, weight_decay)
    _check_project(project)
    _check_scalars(grad_scale, found_inf)
    states = [list(exp_avgs), list(exp_avg_sqs)] + ([list(max_exp_avg_sqs)] if amsgrad else [])
    names = ["exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs"]
    for name, st in zip(names, states):
        _validate_states(st, params, name)
    if len(state_steps) != len(params):
        raise ValueError(f"state_steps has {len(state_steps)} entries for {len(params)} parameters")
    for i, (s, p) in enumerate(zip(state_steps, params)):
        if not isinstance(s, Tensor) or s.numel() != 1 or s.dtype != torch.float32:
            raise TypeError(
                f"state_steps[{i}] must be a one-element float32 tensor, got {s!r}"[:200]
            )
        if s.device != p.device and not (s.device.type == "cpu" and p.device.type == "cpu"):
            raise ValueError(
                f"state_steps[{i}] is on {s.device}, its parameter on {p.device}; the kernels read "
                "the step count on the parameters' device"
            )
    rows = _resolve_rows(basis, params, backend)
    named = [(n, list(st)) for n, st in zip(names, states)] + [("state_steps", list(state_steps))]
    _check_fn_aliasing(params, grads, named, rows, write_grad)
    if _skip_on_host(found_inf, force=False):
        return
    flags = _mode_flags(project, write_grad, maximize)
    flags |= (FLAG_AMSGRAD if amsgrad else 0) | (FLAG_DECOUPLED if decoupled_weight_decay else 0)
    steps = list(state_steps)
    calls = _adam_calls(
        params, grads, states, steps, rows, [lr, beta1, beta2, eps, weight_decay], flags, backend,
        {},
    )  # fmt: skip
    _run(KIND_ADAM, calls, len(rows) and rows[0].shape[0], project, grad_scale, found_inf)


def _increment(steps: List[Tensor]) -> None:
    if steps:
        torch._foreach_add_(steps, 1.0)


def _undo_increment(steps: List[Tensor], found_inf: Optional[Tensor]) -> None:
    """Device-side: a skipped step (found_inf != 0, known only on the device) takes back the count."""
    if found_inf is None or not steps or found_inf.device.type == "cpu":
        return
    by_dev: Dict[torch.device, List[Tensor]] = {}
    for s in steps:
        by_dev.setdefault(s.device, []).append(s)
    for dev, ss in by_dev.items():
        fi = found_inf.to(device=dev, dtype=torch.float32).reshape(())
        torch._foreach_sub_(ss, [fi] * len(ss))


def _as_lists(params: Any, grads: Any) -> Tuple[List[Tensor], List[Tensor]]:
    """The functional forms' parameter and gradient lists (a bare Tensor is refused: iterating it
    would step its rows as separate parameters)."""
    for name, v in (("params", params), ("grads", grads)):
        if isinstance(v, Tensor):
            raise TypeError(
                f"{name} must be a sequence of tensors (one per parameter), got a Tensor of shape "
                f"{tuple(v.shape)}; wrap it in a list"
            )
    return list(params), list(grads)


def _check_fn_aliasing(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    states: Sequence[Tuple[str, Sequence[Optional[Tensor]]]],
    rows: Sequence[Tensor],
    write_grad: bool,
) -> None:
    """The functional forms write params and states (and grads with write_grad) in place: none of
    them may overlap another tensor of the call; the gradients (read only) may overlap each other."""
    written = [(f"params[{i}]", p) for i, p in enumerate(params)]
    for name, st in states:
        written += [(f"{name}[{i}]", s) for i, s in enumerate(st) if s is not None]
    gs = [(f"grads[{i}]", g) for i, g in enumerate(grads)]
    read = [(f"basis rows of parameter {i}", r) for i, r in enumerate(rows)]
    why = "the step writes parameters and states in place" + (
        " (and grads: write_grad=True)" if write_grad else ""
    )
    check_disjoint(written + gs if write_grad else written, read if write_grad else read + gs, why)


def _validate_lists(params: List[Tensor], grads: List[Tensor], write_grad: bool = False) -> None:
    if not params:
        raise ValueError("params is empty; expected at least one tensor")
    if len(grads) != len(params):
        raise ValueError(f"grads has {len(grads)} tensors for {len(params)} parameters")
    for i, (p, g) in enumerate(zip(params, grads)):
        if not isinstance(p, Tensor) or not isinstance(g, Tensor):
            raise TypeError(f"params[{i}] and grads[{i}] must be tensors")
        _check_param(p, g, i, write_grad)


def _validate_states(
    st: Sequence[Optional[Tensor]], params: Sequence[Tensor], name: str, allow_none: bool = False
) -> None:
    if len(st) != len(params):
        raise ValueError(f"{name} has {len(st)} tensors for {len(params)} parameters")
    for i, (s, p) in enumerate(zip(st, params)):
        if s is None and allow_none:
            continue
        if not isinstance(s, Tensor):
            raise TypeError(f"{name}[{i}] must be a tensor, got {type(s).__name__}")
        if s.shape != p.shape or s.device != p.device or not s.is_contiguous():
            raise ValueError(
                f"{name}[{i}] must be a contiguous tensor of shape {tuple(p.shape)} on {p.device}, "
                f"got shape {tuple(s.shape)} on {s.device}"
            )
        if s.dtype not in (p.dtype, _state_dtype(p.dtype)):
            raise TypeError(f"{name}[{i}] has dtype {s.dtype}, its parameter {p.dtype}")


def _real(name: str, value: Any, what: str, low: Optional[float] = 0.0) -> float:
    """``value`` as a float: a real number (or one-element tensor), finite and ``>= low``."""
    if isinstance(value, Tensor) and value.numel() == 1 and value.dtype.is_floating_point:
        v = float(value)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        v = float(value)
    else:
        raise TypeError(f"Invalid {what}: {name} must be a real number, got {value!r}"[:200])
    if not math.isfinite(v) or (low is not None and v < low):
        bound = "a finite number" + ("" if low is None else f" >= {low:g}")
        raise ValueError(f"Invalid {what}: {name}={v!r}; expected {bound}")
    return v


def _check_sgd_hyper(lr, momentum, dampening, weight_decay, nesterov) -> None:
    _real("lr", lr, "learning rate")
    _real("momentum", momentum, "momentum value")
    _real("dampening", dampening, "dampening value", low=None)
    _real("weight_decay", weight_decay, "weight_decay value")
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError("Nesterov momentum requires a momentum and zero dampening")


def _check_adam_hyper(lr, betas, eps, weight_decay) -> None:
    _real("lr", lr, "learning rate")
    _real("eps", eps, "epsilon value")
    if isinstance(betas, (str, bytes)) or not isinstance(betas, Sequence) or len(betas) != 2:
        raise TypeError(f"Invalid betas: expected a pair (beta1, beta2), got {betas!r}"[:200])
    for i, b in enumerate(betas):
        if _real(f"betas[{i}]", b, f"beta parameter at index {i}") >= 1.0:
            raise ValueError(f"Invalid beta parameter at index {i}: betas[{i}]={b!r}; expected < 1")
    _real("weight_decay", weight_decay, "weight_decay value")


def _group_key(p: Tensor, s: Optional[Tensor], extra: Any = None) -> Tuple[Any, ...]:
    return (p.device, p.dtype, None if s is None else s.dtype, extra)


def _sgd_calls(
    params, grads, bufs, rows, lr, momentum, dampening, weight_decay, nesterov, flags, backend, bes
) -> List[_Call]:
    hyper = [float(lr), float(momentum), float(dampening), float(weight_decay)]
    base = flags | (FLAG_NESTEROV if nesterov else 0)
    calls: Dict[Tuple[Any, ...], _Call] = {}
    for i, (p, g) in enumerate(zip(params, grads)):
        be = _backend_of(bes, backend, p.device)
        flat = _needs_flat(be)
        buf = None
        first = False
        if momentum != 0:
            buf = bufs[i]
            if buf is None:
                buf = torch.empty_like(
                    p, dtype=_state_dtype(p.dtype), memory_format=torch.contiguous_format
                )
                bufs[i] = buf
                first = True
        c = calls.setdefault(
            _group_key(p, buf, first),
            _Call(hyper=hyper, flags=base | (FLAG_FIRST if first else 0), be=be),
        )
        _add_piece(c, p, g, rows, i, flat)
        if buf is not None:
            c.s1.append(_flat(buf, flat))
    return list(calls.values())


def _adam_calls(params, grads, states, steps, rows, hyper, flags, backend, bes) -> List[_Call]:
    calls: Dict[Tuple[Any, ...], _Call] = {}
    for i, (p, g) in enumerate(zip(params, grads)):
        be = _backend_of(bes, backend, p.device)
        flat = _needs_flat(be)
        c = calls.setdefault(
            _group_key(p, states[0][i]), _Call(hyper=[float(h) for h in hyper], flags=flags, be=be)
        )
        _add_piece(c, p, g, rows, i, flat)
        c.s1.append(_flat(states[0][i], flat))
        c.s2.append(_flat(states[1][i], flat))
        if len(states) > 2:
            c.s3.append(_flat(states[2][i], flat))
        c.steps.append(steps[i])
    return list(calls.values())


def _add_piece(c: _Call, p: Tensor, g: Tensor, rows: List[Tensor], i: int, flat: bool) -> None:
    c.params.append(p.view(-1) if flat else p)
    c.user_grads.append(g)
    if g.is_contiguous():
        c.grads.append(g.view(-1) if flat else g)
    else:
        c.grads.append(g.contiguous().view(-1))
    if rows:
        c.rows.append(rows[i])


# ---------------------------------------------------------------------------------------------------
# The optimizer classes.
# ---------------------------------------------------------------------------------------------------
class _Projected(torch.optim.Optimizer):
    """Shared machinery: the basis, the projection mode, the mixed-precision attributes."""

    _step_supports_amp_scaling = True  # torch.amp.GradScaler passes grad_scale/found_inf to step

    def __init__(
        self,
        params: Any,
        defaults: Dict[str, Any],
        project: str,
        basis: Any,
        write_grad: bool,
        backend: Optional[str],
    ) -> None:
        super().__init__(params, defaults)
        self.project = _check_project(project)
        self.write_grad = bool(write_grad)
        self.backend = backend
        self._basis: Any = None
        # (basis, key, restricted basis): see _rows_within
        self._restricted: Optional[Tuple[Any, Tuple[Any, ...], Any]] = None
        if basis is not None:
            self.set_basis(basis)

    def _params(self) -> List[Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    def set_basis(self, basis: Any) -> None:
        """Use ``basis`` from now on (None: plain optimizer steps).

        Args:
            basis: a :class:`uno.Basis` over all the optimizer's parameters, in ``param_groups``
                order (kept by reference: growing it with ``append_`` takes effect at the next step),
                or raw vectors (a list of tensors shaped like the parameters, or a sequence of such
                lists), orthonormalised once here.
        """
        b = _as_basis(basis, self._params(), self.backend)
        if b is not None:  # the parameters are written in place: they must not be the basis
            _check_basis_apart(b, [(f"parameter {i}", p) for i, p in enumerate(self._params())])
        self._basis = b
        self._restricted = None  # drop the old basis's restricted copy (and its reference)

    @property
    def basis(self) -> Any:
        return self._basis

    def _step_basis_rows(self, basis: Any) -> Tuple[Any, List[Tensor]]:
        b = self._basis if basis is None else _as_basis(basis, self._params(), self.backend)
        if b is None:
            return None, []
        return b, _basis_rows(b, self._params())

    def _rows_within(
        self, b: Any, rows_all: List[Tensor], updated: Tuple[int, ...]
    ) -> List[Optional[Tensor]]:
        """This step's rows when only the parameters ``updated`` (indices, ascending) have a gradient.

        The basis restricted to those parameters and re-orthonormalised there (the rank rule drops
        directions that vanish on them), so that a step that leaves the other parameters alone is
        still orthogonal to every vector of the full basis. Entries of skipped parameters are None;
        an empty list when the restricted rank is 0 (an unprojected step). The restricted basis is
        cached while the basis (object, rank, buffer and its version counter) and ``updated`` stay.
        """
        if not rows_all or len(updated) == len(rows_all):
            return list(rows_all)
        if not updated:
            return []
        key = (updated, b.k, b.buffer.data_ptr(), _version(b.buffer))
        cached = self._restricted
        if cached is not None and cached[0] is b and cached[1] == key and key[-1] is not None:
            sub = cached[2]
        else:
            from uno.ops.orthonormalize import orthonormalize

            params = self._params()
            vecs = [[rows_all[i][j].view(params[i].shape) for i in updated] for j in range(b.k)]
            sub = orthonormalize(vecs, dtype=b.dtype, backend=self.backend)
            self._restricted = (b, key, sub)
        if sub.k == 0:
            return []
        out: List[Optional[Tensor]] = [None] * len(rows_all)
        for i, r in zip(updated, sub.rows()):
            out[i] = r
        return out

    def _check_group(self, group: Dict[str, Any]) -> None:
        """Raise TypeError/ValueError for a group's bad hyperparameters (per optimizer)."""

    def _amp(self, grad_scale: Optional[Tensor], found_inf: Optional[Tensor]):
        gs = grad_scale if grad_scale is not None else getattr(self, "grad_scale", None)
        fi = found_inf if found_inf is not None else getattr(self, "found_inf", None)
        _check_scalars(gs, fi)
        return gs, fi

    def _begin_step(
        self,
        closure: Optional[Callable[[], Any]],
        basis: Any,
        grad_scale: Optional[Tensor],
        found_inf: Optional[Tensor],
    ) -> Tuple[Any, List[Any], Any, Any, Dict[int, int], List[Tuple[Dict[str, Any], List[Tensor]]]]:
        """The start every step() shares: the closure, this step's basis rows (restricted to the
        parameters that have a gradient, see :meth:`_rows_within`), the AMP scalars, and the groups'
        parameters that have a gradient (checked against the basis layout)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:  # a scheduler may have changed them since __init__
            self._check_group(group)
        b, rows_all = self._step_basis_rows(basis)
        gs, fi = self._amp(grad_scale, found_inf)
        index = {id(p): i for i, p in enumerate(self._params())}
        groups = []
        for group in self.param_groups:
            ps = [p for p in group["params"] if p.grad is not None]
            for p in ps:
                _check_param(p, p.grad, index[id(p)], self.write_grad)
            if ps:
                groups.append((group, ps))
        updated = tuple(sorted(index[id(p)] for _, ps in groups for p in ps))
        if b is not None and self.write_grad:
            grads = [(f"grad {index[id(p)]}", p.grad) for _, ps in groups for p in ps]
            _check_basis_apart(b, [(n, g) for n, g in grads if g is not None])
        return loss, self._rows_within(b, rows_all, updated), gs, fi, index, groups


class ProjectedSGD(_Projected):
    """``torch.optim.SGD`` whose step moves orthogonally to a basis (one fused pass per phase).

    Args:
        params: parameters or parameter groups (as ``torch.optim.SGD``).
        lr, momentum, dampening, weight_decay, nesterov, maximize: as ``torch.optim.SGD``.
        project: ``"grad"`` (default) or ``"update"``; see :mod:`uno.optim`.
        basis: a :class:`uno.Basis` over all parameters (in ``param_groups`` order), raw vectors, or
            None (set later with :meth:`set_basis`, or per step with ``step(basis=...)``).
        write_grad: write the projected gradient into ``p.grad``.
        backend: ``reference``, ``cpu``, ``cuda`` or ``triton`` (default: see :func:`uno.backends`).

    State: ``state[p]["momentum_buffer"]`` (when ``momentum != 0``), as ``torch.optim.SGD``.
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        project: str = "grad",
        basis: Any = None,
        write_grad: bool = False,
        backend: Optional[str] = None,
    ) -> None:
        _check_sgd_hyper(lr, momentum, dampening, weight_decay, nesterov)
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            maximize=maximize,
            foreach=None,
            differentiable=False,
            fused=None,
        )
        super().__init__(params, defaults, project, basis, write_grad, backend)

    def __setstate__(self, state: Dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("nesterov", False)
            group.setdefault("maximize", False)

    def _check_group(self, group: Dict[str, Any]) -> None:
        _check_sgd_hyper(
            group["lr"], group["momentum"], group["dampening"], group["weight_decay"],
            group["nesterov"],
        )  # fmt: skip

    @torch.no_grad()
    def step(  # type: ignore[override]
        self,
        closure: Optional[Callable[[], Any]] = None,
        *,
        basis: Any = None,
        grad_scale: Optional[Tensor] = None,
        found_inf: Optional[Tensor] = None,
    ) -> Any:
        """One step. ``basis`` overrides the optimizer's basis for this step only."""
        loss, rows_all, gs, fi, index, groups = self._begin_step(
            closure, basis, grad_scale, found_inf
        )
        calls: List[_Call] = []
        bes: Dict[torch.device, Any] = {}  # the backend per device, resolved once per step
        new_bufs = any(
            group["momentum"] != 0 and self.state[p].get("momentum_buffer") is None
            for group, ps in groups
            for p in ps
        )
        if _skip_on_host(fi, force=new_bufs):
            return loss
        new_state: List[Tuple[Tensor, Tensor]] = []  # stored once every group is built
        for group, ps in groups:
            bufs: List[Optional[Tensor]] = []
            if group["momentum"] != 0:
                for p in ps:
                    b = self.state[p].get("momentum_buffer")
                    what = f"state of parameter {index[id(p)]}: momentum_buffer"
                    bufs.append(None if b is None else _fix_state(b, p, what))
            rows = [rows_all[index[id(p)]] for p in ps] if rows_all else []
            flags = _mode_flags(self.project, self.write_grad, group["maximize"])
            calls += _sgd_calls(
                ps, [p.grad for p in ps], bufs, rows, group["lr"], group["momentum"],
                group["dampening"], group["weight_decay"], group["nesterov"], flags, self.backend,
                bes,
            )  # fmt: skip
            if group["momentum"] != 0:
                new_state += [(p, b) for p, b in zip(ps, bufs) if b is not None]
        for p, b in new_state:
            self.state[p]["momentum_buffer"] = b
        k = _rank(rows_all)
        _run(KIND_SGD, calls, k, self.project, gs, fi)
        return loss


class ProjectedAdam(_Projected):
    """``torch.optim.Adam`` / ``AdamW`` whose step moves orthogonally to a basis (fused passes).

    Args:
        params: parameters or parameter groups (as ``torch.optim.Adam``).
        lr, betas, eps, weight_decay, amsgrad, maximize: as ``torch.optim.Adam``.
        decoupled_weight_decay: True gives AdamW (as ``torch.optim.Adam(decoupled_weight_decay=True)``).
        project, basis, write_grad, backend: as :class:`ProjectedSGD`.

    State: ``step`` (float32 scalar tensor; on the parameter's device for CUDA parameters so that the
    kernels read it without a host sync), ``exp_avg``, ``exp_avg_sq`` and, with amsgrad,
    ``max_exp_avg_sq``, as ``torch.optim.Adam``.
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: Tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        decoupled_weight_decay: bool = False,
        maximize: bool = False,
        project: str = "grad",
        basis: Any = None,
        write_grad: bool = False,
        backend: Optional[str] = None,
    ) -> None:
        _check_adam_hyper(lr, betas, eps, weight_decay)
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            maximize=maximize,
            foreach=None,
            capturable=False,
            differentiable=False,
            fused=None,
            decoupled_weight_decay=decoupled_weight_decay,
        )
        super().__init__(params, defaults, project, basis, write_grad, backend)

    def __setstate__(self, state: Dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("amsgrad", False)
            group.setdefault("maximize", False)
            group.setdefault("decoupled_weight_decay", False)

    def _check_group(self, group: Dict[str, Any]) -> None:
        _check_adam_hyper(group["lr"], group["betas"], group["eps"], group["weight_decay"])

    @torch.no_grad()
    def step(  # type: ignore[override]
        self,
        closure: Optional[Callable[[], Any]] = None,
        *,
        basis: Any = None,
        grad_scale: Optional[Tensor] = None,
        found_inf: Optional[Tensor] = None,
    ) -> Any:
        """One step. ``basis`` overrides the optimizer's basis for this step only."""
        loss, rows_all, gs, fi, index, groups = self._begin_step(
            closure, basis, grad_scale, found_inf
        )
        if _skip_on_host(fi, force=False):
            return loss
        calls: List[_Call] = []
        bes: Dict[torch.device, Any] = {}  # the backend per device, resolved once per step
        for group, ps in groups:
            amsgrad = bool(group["amsgrad"])
            states: List[List[Tensor]] = [[] for _ in range(3 if amsgrad else 2)]
            steps = []
            for p in ps:
                st = self.state[p]
                if len(st) == 0 or "exp_avg" not in st:
                    dev = p.device if p.device.type != "cpu" else torch.device("cpu")
                    st["step"] = torch.zeros((), dtype=torch.float32, device=dev)
                    sd = _state_dtype(p.dtype)
                    st["exp_avg"] = torch.zeros_like(
                        p, dtype=sd, memory_format=torch.contiguous_format
                    )
                    st["exp_avg_sq"] = torch.zeros_like(
                        p, dtype=sd, memory_format=torch.contiguous_format
                    )
                if amsgrad and "max_exp_avg_sq" not in st:
                    st["max_exp_avg_sq"] = torch.zeros_like(
                        st["exp_avg_sq"], memory_format=torch.contiguous_format
                    )
                st["step"] = _fix_step(st["step"], p)
                for key in ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if amsgrad else ()):
                    st[key] = _fix_state(st[key], p, f"state of parameter {index[id(p)]}: {key}")
                states[0].append(st["exp_avg"])
                states[1].append(st["exp_avg_sq"])
                if amsgrad:
                    states[2].append(st["max_exp_avg_sq"])
                steps.append(st["step"])
            rows = [rows_all[index[id(p)]] for p in ps] if rows_all else []
            beta1, beta2 = group["betas"]
            flags = _mode_flags(self.project, self.write_grad, group["maximize"])
            flags |= (FLAG_AMSGRAD if amsgrad else 0) | (
                FLAG_DECOUPLED if group["decoupled_weight_decay"] else 0
            )
            hyper = [group["lr"], beta1, beta2, group["eps"], group["weight_decay"]]
            calls += _adam_calls(
                ps, [p.grad for p in ps], states, steps, rows, hyper, flags, self.backend, bes,
            )  # fmt: skip
        k = _rank(rows_all)
        _run(KIND_ADAM, calls, k, self.project, gs, fi)  # increments the steps
        return loss


def _check_basis_apart(b: Any, written: List[Tuple[str, Tensor]]) -> None:
    """Raise ValueError when a tensor the step writes in place overlaps the basis buffer."""
    if b.k > 0:
        check_disjoint(written, [("the basis", b.buffer[: b.k])], "the step writes it in place")


def _rank(rows: Sequence[Optional[Tensor]]) -> int:
    """k of a step's rows (entries of parameters without a gradient are None)."""
    return next((int(r.shape[0]) for r in rows if r is not None), 0)


def _version(t: Tensor) -> Optional[int]:
    """``t``'s version counter (bumped by every in-place write), None where it is not tracked."""
    try:
        return int(t._version)
    except RuntimeError:  # an inference tensor
        return None


def _fix_state(s: Tensor, p: Tensor, what: str = "state") -> Tensor:
    """A loaded state in the kernels' layout: contiguous, on p's device, float32 for half params."""
    if not isinstance(s, Tensor) or s.shape != p.shape:
        raise ValueError(
            f"{what} has shape {tuple(getattr(s, 'shape', ()))} ({type(s).__name__}), its parameter "
            f"{tuple(p.shape)} (a state_dict of another model?)"
        )
    want = _state_dtype(p.dtype)
    if s.dtype not in (p.dtype, want) or s.device != p.device or not s.is_contiguous():
        s = s.to(device=p.device, dtype=want if s.dtype not in (p.dtype, want) else s.dtype)
        s = s.contiguous()
    if p.dtype in _abi.HALF_DTYPES and s.dtype != torch.float32:
        s = s.float()  # torch keeps half states; ours are float32
    return s


def _fix_step(s: Any, p: Tensor) -> Tensor:
    """The step count as a float32 scalar tensor where the kernels read it (p's device)."""
    if not isinstance(s, Tensor):
        s = torch.tensor(float(s), dtype=torch.float32)
    if s.numel() != 1:
        raise ValueError(f"a loaded Adam step count has shape {tuple(s.shape)}; expected a scalar")
    if s.dtype != torch.float32 or s.device != p.device or s.dim() != 0:
        s = s.to(device=p.device, dtype=torch.float32).reshape(())
    return s
