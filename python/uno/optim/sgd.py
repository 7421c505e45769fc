"""``ProjectedSGD`` and ``project_sgd_``: ``torch.optim.SGD``'s step, projected (see :mod:`uno.optim`)."""

from __future__ import annotations

from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from uno._abi import FLAG_FIRST, FLAG_NESTEROV, KIND_SGD
from uno.optim import _calls
from uno.optim import _checks as checks
from uno.optim._step import Projected

__all__ = ["ProjectedSGD", "project_sgd_"]


class ProjectedSGD(Projected):
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

    KIND = KIND_SGD
    GROUP_DEFAULTS: ClassVar[Dict[str, Any]] = {"nesterov": False, "maximize": False}

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

    def _check_group(self, group: Dict[str, Any]) -> None:
        _check_sgd_hyper(
            group["lr"], group["momentum"], group["dampening"], group["weight_decay"],
            group["nesterov"],
        )  # fmt: skip

    def _must_read_found_inf(self, groups: List[Tuple[Dict[str, Any], List[Tensor]]]) -> bool:
        # Creating the momentum buffers or not depends on found_inf: read it on the host.
        return any(
            group["momentum"] != 0 and self.state[p].get("momentum_buffer") is None
            for group, ps in groups
            for p in ps
        )

    def _group_hyper(self, group: Dict[str, Any]) -> Tuple[List[float], int]:
        flags = _calls.mode_flags(self.project, self.write_grad, group["maximize"])
        hyper = [group["lr"], group["momentum"], group["dampening"], group["weight_decay"]]
        return [float(h) for h in hyper], flags | (FLAG_NESTEROV if group["nesterov"] else 0)

    def _group_struct(self, group: Dict[str, Any]) -> Any:
        return group["momentum"] != 0

    def _group_calls(self, g: _calls.StepGroup) -> Tuple[List[_calls.Call], _calls.NewState]:
        group, ps, rows, flags, index, bes = g
        bufs: List[Optional[Tensor]] = []
        if group["momentum"] != 0:
            for p in ps:
                b = self.state[p].get("momentum_buffer")
                what = f"state of parameter {index[id(p)]}: momentum_buffer"
                bufs.append(None if b is None else checks.fix_state(b, p, what))
        calls = _sgd_calls(
            ps, [p.grad for p in ps], bufs, rows, group["lr"], group["momentum"],
            group["dampening"], group["weight_decay"], group["nesterov"], flags, self.backend, bes,
        )  # fmt: skip
        new: _calls.NewState = []
        if group["momentum"] != 0:
            new = [(p, "momentum_buffer", b) for p, b in zip(ps, bufs) if b is not None]
        return calls, new


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
    params, grads = checks.as_lists(params, grads)
    checks.validate_lists(params, grads, write_grad)
    _check_sgd_hyper(lr, momentum, dampening, weight_decay, nesterov)
    checks.check_project(project)
    checks.check_scalars(grad_scale, found_inf)
    if momentum != 0 and len(momentum_buffers) != len(params):
        raise ValueError(
            f"momentum_buffers has {len(momentum_buffers)} entries for {len(params)} parameters"
        )
    if momentum != 0:
        checks.validate_states(momentum_buffers, params, "momentum_buffers", allow_none=True)
        if not isinstance(momentum_buffers, list) and any(b is None for b in momentum_buffers):
            raise TypeError(
                "momentum_buffers must be a list when it has None entries (the new buffers are "
                f"stored into it), got a {type(momentum_buffers).__name__}"
            )
    rows = _calls.resolve_rows(basis, params, backend)
    bufs = momentum_buffers if momentum != 0 else []
    checks.check_fn_aliasing(params, grads, [("momentum_buffers", bufs)], rows, write_grad)
    new_bufs = momentum != 0 and any(b is None for b in momentum_buffers)
    if _calls.skip_on_host(found_inf, force=new_bufs):
        return
    calls = _sgd_calls(
        params, grads, momentum_buffers, rows, lr, momentum, dampening, weight_decay, nesterov,
        _calls.mode_flags(project, write_grad, maximize), backend, {},
    )  # fmt: skip
    _calls.run(KIND_SGD, calls, len(rows) and rows[0].shape[0], project, grad_scale, found_inf)


def _check_sgd_hyper(lr, momentum, dampening, weight_decay, nesterov) -> None:
    checks.real_number("lr", lr, "learning rate")
    checks.real_number("momentum", momentum, "momentum value")
    checks.real_number("dampening", dampening, "dampening value", low=None)
    checks.real_number("weight_decay", weight_decay, "weight_decay value")
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError("Nesterov momentum requires a momentum and zero dampening")


def _sgd_calls(
    params, grads, bufs, rows, lr, momentum, dampening, weight_decay, nesterov, flags, backend, bes
) -> List[_calls.Call]:
    hyper = [float(lr), float(momentum), float(dampening), float(weight_decay)]
    base = flags | (FLAG_NESTEROV if nesterov else 0)
    calls: Dict[Tuple[Any, ...], _calls.Call] = {}
    for i, (p, g) in enumerate(zip(params, grads)):
        be = _calls.backend_of(bes, backend, p.device)
        flat = _calls.needs_flat(be)
        buf = None
        first = False
        if momentum != 0:
            buf = bufs[i]
            if buf is None:
                buf = torch.empty_like(
                    p, dtype=checks.state_dtype(p.dtype), memory_format=torch.contiguous_format
                )
                bufs[i] = buf
                first = True
        c = calls.setdefault(
            _calls.group_key(p, buf, first),
            _calls.Call(hyper=hyper, flags=base | (FLAG_FIRST if first else 0), be=be),
        )
        _calls.add_piece(c, p, g, rows, i, flat)
        if buf is not None:
            c.s1.append(_calls.flat_view(buf, flat))
    return list(calls.values())
