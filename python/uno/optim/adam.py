"""``ProjectedAdam`` and ``project_adam_``: ``torch.optim.Adam`` / ``AdamW``'s step, projected (see
:mod:`uno.optim`)."""

from __future__ import annotations

from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from uno._abi import FLAG_AMSGRAD, FLAG_DECOUPLED, KIND_ADAM
from uno.optim import _calls
from uno.optim import _checks as checks
from uno.optim._step import Projected

__all__ = ["ProjectedAdam", "project_adam_"]


class ProjectedAdam(Projected):
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

    KIND = KIND_ADAM
    GROUP_DEFAULTS: ClassVar[Dict[str, Any]] = {
        "amsgrad": False,
        "maximize": False,
        "decoupled_weight_decay": False,
    }

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

    def _check_group(self, group: Dict[str, Any]) -> None:
        _check_adam_hyper(group["lr"], group["betas"], group["eps"], group["weight_decay"])

    def _group_hyper(self, group: Dict[str, Any]) -> Tuple[List[float], int]:
        beta1, beta2 = group["betas"]
        flags = _calls.mode_flags(self.project, self.write_grad, group["maximize"])
        flags |= (FLAG_AMSGRAD if group["amsgrad"] else 0) | (
            FLAG_DECOUPLED if group["decoupled_weight_decay"] else 0
        )
        hyper = [group["lr"], beta1, beta2, group["eps"], group["weight_decay"]]
        return [float(h) for h in hyper], flags

    def _group_struct(self, group: Dict[str, Any]) -> Any:
        return bool(group["amsgrad"])

    def _group_calls(self, g: _calls.StepGroup) -> Tuple[List[_calls.Call], _calls.NewState]:
        group, ps, rows, _, index, bes = g
        amsgrad = bool(group["amsgrad"])
        states: List[List[Tensor]] = [[] for _ in range(3 if amsgrad else 2)]
        steps = []
        for p in ps:
            st = self.state[p]
            if len(st) == 0 or "exp_avg" not in st:
                dev = p.device if p.device.type != "cpu" else torch.device("cpu")
                st["step"] = torch.zeros((), dtype=torch.float32, device=dev)
                sd = checks.state_dtype(p.dtype)
                st["exp_avg"] = torch.zeros_like(p, dtype=sd, memory_format=torch.contiguous_format)
                st["exp_avg_sq"] = torch.zeros_like(
                    p, dtype=sd, memory_format=torch.contiguous_format
                )
            if amsgrad and "max_exp_avg_sq" not in st:
                st["max_exp_avg_sq"] = torch.zeros_like(
                    st["exp_avg_sq"], memory_format=torch.contiguous_format
                )
            st["step"] = _fix_step(st["step"], p)
            for key in ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if amsgrad else ()):
                st[key] = checks.fix_state(st[key], p, f"state of parameter {index[id(p)]}: {key}")
            states[0].append(st["exp_avg"])
            states[1].append(st["exp_avg_sq"])
            if amsgrad:
                states[2].append(st["max_exp_avg_sq"])
            steps.append(st["step"])
        hyper, flags = self._group_hyper(group)
        calls = _adam_calls(
            ps, [p.grad for p in ps], states, steps, rows, hyper, flags, self.backend, bes,
        )  # fmt: skip
        return calls, []  # the states are made in place above (as torch's Adam does)


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
    params, grads = checks.as_lists(params, grads)
    checks.validate_lists(params, grads, write_grad)
    _check_adam_hyper(lr, (beta1, beta2), eps, weight_decay)
    checks.check_project(project)
    checks.check_scalars(grad_scale, found_inf)
    states = [list(exp_avgs), list(exp_avg_sqs)] + ([list(max_exp_avg_sqs)] if amsgrad else [])
    names = ["exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs"]
    for name, st in zip(names, states):
        checks.validate_states(st, params, name)
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
    rows = _calls.resolve_rows(basis, params, backend)
    named = [(n, list(st)) for n, st in zip(names, states)] + [("state_steps", list(state_steps))]
    checks.check_fn_aliasing(params, grads, named, rows, write_grad)
    if _calls.skip_on_host(found_inf, force=False):
        return
    flags = _calls.mode_flags(project, write_grad, maximize)
    flags |= (FLAG_AMSGRAD if amsgrad else 0) | (FLAG_DECOUPLED if decoupled_weight_decay else 0)
    steps = list(state_steps)
    calls = _adam_calls(
        params, grads, states, steps, rows, [lr, beta1, beta2, eps, weight_decay], flags, backend,
        {},
    )  # fmt: skip
    _calls.run(KIND_ADAM, calls, len(rows) and rows[0].shape[0], project, grad_scale, found_inf)


def _check_adam_hyper(lr, betas, eps, weight_decay) -> None:
    checks.real_number("lr", lr, "learning rate")
    checks.real_number("eps", eps, "epsilon value")
    if isinstance(betas, (str, bytes)) or not isinstance(betas, Sequence) or len(betas) != 2:
        raise TypeError(f"Invalid betas: expected a pair (beta1, beta2), got {betas!r}"[:200])
    for i, b in enumerate(betas):
        if checks.real_number(f"betas[{i}]", b, f"beta parameter at index {i}") >= 1.0:
            raise ValueError(f"Invalid beta parameter at index {i}: betas[{i}]={b!r}; expected < 1")
    checks.real_number("weight_decay", weight_decay, "weight_decay value")


def _adam_calls(
    params, grads, states, steps, rows, hyper, flags, backend, bes
) -> List[_calls.Call]:
    calls: Dict[Tuple[Any, ...], _calls.Call] = {}
    for i, (p, g) in enumerate(zip(params, grads)):
        be = _calls.backend_of(bes, backend, p.device)
        flat = _calls.needs_flat(be)
        c = calls.setdefault(
            _calls.group_key(p, states[0][i]),
            _calls.Call(hyper=[float(h) for h in hyper], flags=flags, be=be),
        )
        _calls.add_piece(c, p, g, rows, i, flat)
        c.s1.append(_calls.flat_view(states[0][i], flat))
        c.s2.append(_calls.flat_view(states[1][i], flat))
        if len(states) > 2:
            c.s3.append(_calls.flat_view(states[2][i], flat))
        c.steps.append(steps[i])
    return list(calls.values())


def _fix_step(s: Any, p: Tensor) -> Tensor:
    """The step count as a float32 scalar tensor where the kernels read it (p's device)."""
    if not isinstance(s, Tensor):
        s = torch.tensor(float(s), dtype=torch.float32)
    if s.numel() != 1:
        raise ValueError(f"a loaded Adam step count has shape {tuple(s.shape)}; expected a scalar")
    if s.dtype != torch.float32 or s.device != p.device or s.dim() != 0:
        s = s.to(device=p.device, dtype=torch.float32).reshape(())
    return s
