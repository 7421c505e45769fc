"""Reference `optim_step`: the fused projected SGD / Adam step, written plainly in torch (the spec).

The constants (``KIND_*``, ``PHASE_*``, ``FLAG_*``) and the arguments (:class:`uno._abi.StepArgs`)
are :mod:`uno._abi`'s.

One call covers the pieces of one parameter group (``T`` parameters) and runs one *phase*:

* ``abi.PHASE_WRITE`` (0): the optimizer step. With ``coef`` (float64 ``(k,)``) and rows, either the
  gradient (``project="grad"``) or the final parameter update (``abi.FLAG_PROJECT_UPDATE``) has
  ``Σ_j coef[j]·row_j`` subtracted, in float64, on the fly; nothing else is materialised.
* ``abi.PHASE_GRAD_COEF`` (1): returns ``[<row_j, g>]_j`` (float64 ``(k,)``), the raw (still scaled)
  gradient's coefficients: the coefficient pass of ``project="grad"``.
* ``abi.PHASE_UPDATE_COEF`` (2): returns ``[<row_j, u>]_j`` where ``u`` is the parameter update this
  step would make (states are read, nothing is written): the coefficient pass of ``project="update"``.

Non-finite coefficients (a nan/inf gradient element makes ``<row_j, g>`` non-finite): the write phase
then counts every coefficient as zero, so the step is the stock optimizer's (only the non-finite
elements become non-finite) instead of broadcasting a nan into every parameter. The cuda and triton
kernels decide this on the device, from the coefficients they read (no host synchronisation).

Arithmetic (the same in every backend): the element-wise optimizer maths runs in the parameter's
"compute dtype" (float64 for float64 parameters, float32 otherwise, as torch's optimizers do); the
projection ``g − Σ_j c_j row_j`` and the projected update ``p + u − Σ_j a_j row_j`` are formed in
float64 and rounded once; every reduction accumulates in float64. On ``found_inf != 0`` nothing is
written and the reductions return zeros.

Hyperparameters (``hyper``, a list of floats): SGD ``[lr, momentum, dampening, weight_decay]``;
Adam ``[lr, beta1, beta2, eps, weight_decay]``. Adam's bias corrections use ``steps[t]`` (a float32
scalar per piece, already incremented for this step: ``FLAG_STEPS_PENDING`` is refused).
"""

from __future__ import annotations

import math
from typing import List, Sequence

import torch
from torch import Tensor

from uno import _abi as abi
from uno._abi import StepArgs


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 for float64 parameters, else float32 (half/bfloat16 are computed in float32)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def optim_step(a: StepArgs) -> Tensor:
    """One phase of the fused step over one group's pieces (see the module docstring and
    :class:`uno._abi.StepArgs` for the fields).

    Returns:
        float64 ``(k,)`` for the coefficient phases; an empty float64 tensor for the write phase.
    """
    abi.check_no_pending(a.flags, "reference")
    params, grads, state1, state2, state3 = a.params, a.grads, a.state1, a.state2, a.state3
    steps, rows, coef, grad_scale, found_inf = a.steps, a.rows, a.coef, a.grad_scale, a.found_inf
    kind, phase, hyper, flags = a.kind, a.phase, a.hyper, a.flags
    k = rows[0].shape[0] if len(rows) else 0
    device = params[0].device if len(params) else torch.device("cpu")
    acc = torch.zeros(k, dtype=torch.float64, device=device)
    if found_inf is not None and bool(found_inf.item() != 0):
        return acc if phase != abi.PHASE_WRITE else acc[:0]
    if phase == abi.PHASE_GRAD_COEF:
        for g, r in zip(grads, rows):
            acc += r.to(torch.float64) @ g.to(torch.float64)
        return acc
    use_coef = coef is not None and k > 0 and phase == abi.PHASE_WRITE
    proj_update = bool(flags & abi.FLAG_PROJECT_UPDATE)
    c64 = coef.to(device=device, dtype=torch.float64) if use_coef and coef is not None else None
    if c64 is not None and not bool(torch.isfinite(c64).all()):
        c64 = None  # a non-finite gradient (or update): no projection, the stock step
    for t, (p, g) in enumerate(zip(params, grads)):
        cd = compute_dtype(p.dtype)
        r64 = rows[t].to(torch.float64) if k > 0 else None
        # The gradient the optimizer sees: projected (rounded once to the grad's dtype), unscaled.
        if c64 is not None and not proj_update and r64 is not None:
            gp = (g.to(torch.float64) - c64 @ r64).to(g.dtype).to(cd)
        else:
            gp = g.to(cd)
        if grad_scale is not None:
            gp = gp / grad_scale.to(device=device, dtype=cd)
        pc = p.to(cd)
        if kind == abi.KIND_SGD:
            u, new_states = _sgd(pc, gp, [s[t] for s in (state1,) if len(s)], hyper, flags)
        else:
            st = [state1[t], state2[t]] + ([state3[t]] if flags & abi.FLAG_AMSGRAD else [])
            u, pnew, new_states = _adam(pc, gp, st, float(steps[t].item()), hyper, flags)
        if phase == abi.PHASE_UPDATE_COEF:
            if r64 is not None:
                acc += r64 @ u.to(torch.float64)
            continue
        # Write phase.
        if flags & abi.FLAG_WRITE_GRAD:
            g.copy_(gp)
        if c64 is not None and proj_update and r64 is not None:
            p.copy_(p.to(torch.float64) + u.to(torch.float64) - c64 @ r64)
        elif kind == abi.KIND_SGD:
            p.copy_(pc + u)
        else:
            p.copy_(pnew)
        if kind == abi.KIND_SGD:
            states = [state1[t]] if len(state1) else []
        else:
            states = [state1[t], state2[t]] + ([state3[t]] if flags & abi.FLAG_AMSGRAD else [])
        for s, v in zip(states, new_states):
            s.copy_(v)
    return acc if phase != abi.PHASE_WRITE else acc[:0]


def _sgd(p: Tensor, g: Tensor, st: List[Tensor], hyper: Sequence[float], flags: int):
    """torch.optim.SGD's maths on one piece; returns (update u, new states)."""
    lr, momentum, dampening, wd = (float(h) for h in hyper[:4])
    d = -g if flags & abi.FLAG_MAXIMIZE else g
    if wd != 0:
        d = d + wd * p
    new_states: List[Tensor] = []
    if momentum != 0:
        if flags & abi.FLAG_FIRST:
            buf = d.clone()
        else:
            buf = st[0].to(p.dtype) * momentum + (1 - dampening) * d
        new_states.append(buf)
        d = d + momentum * buf if flags & abi.FLAG_NESTEROV else buf
    return -lr * d, new_states


def _adam(p: Tensor, g: Tensor, st: List[Tensor], step: float, hyper: Sequence[float], flags: int):
    """torch.optim.Adam/AdamW's maths on one piece; returns (update u, new p, new states)."""
    lr, beta1, beta2, eps, wd = (float(h) for h in hyper[:5])
    d = -g if flags & abi.FLAG_MAXIMIZE else g
    pd = p
    u_decay = torch.zeros_like(p)
    if wd != 0:
        if flags & abi.FLAG_DECOUPLED:
            pd = p * (1 - lr * wd)
            u_decay = -(lr * wd) * p
        else:
            d = d + wd * p
    m = st[0].to(p.dtype)
    m = m + (1 - beta1) * (d - m)  # torch's lerp(m, d, 1 - beta1) for a weight < 0.5
    v = st[1].to(p.dtype) * beta2 + (1 - beta2) * d * d
    new_states = [m, v]
    vh = v
    if flags & abi.FLAG_AMSGRAD:
        vh = torch.maximum(st[2].to(p.dtype), v)
        new_states.append(vh)
    bc1 = 1 - beta1**step
    bc2_sqrt = math.sqrt(1 - beta2**step)
    step_size = lr / bc1
    denom = vh.sqrt() / bc2_sqrt + eps
    upd = -step_size * (m / denom)
    return u_decay + upd, pd + upd, new_states
