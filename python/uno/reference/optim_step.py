"""Reference `optim_step`: the fused projected SGD / Adam step, written plainly in torch (the spec).

One call covers the pieces of one parameter group (``T`` parameters) and runs one *phase*:

* ``PHASE_WRITE`` (0): the optimizer step. With ``coef`` (float64 ``(k,)``) and rows, either the
  gradient (``project="grad"``) or the final parameter update (``FLAG_PROJECT_UPDATE``) has
  ``Σ_j coef[j]·row_j`` subtracted, in float64, on the fly; nothing else is materialised.
* ``PHASE_GRAD_COEF`` (1): returns ``[<row_j, g>]_j`` (float64 ``(k,)``), the raw (still scaled)
  gradient's coefficients: the coefficient pass of ``project="grad"``.
* ``PHASE_UPDATE_COEF`` (2): returns ``[<row_j, u>]_j`` where ``u`` is the parameter update this
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
scalar per piece, already incremented for this step).
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence

import torch
from torch import Tensor

KIND_SGD = 0
KIND_ADAM = 1

PHASE_WRITE = 0
PHASE_GRAD_COEF = 1
PHASE_UPDATE_COEF = 2

FLAG_MAXIMIZE = 1
FLAG_NESTEROV = 2
FLAG_FIRST = 4  # SGD: the momentum buffers are new (buf <- d, as torch's first step)
FLAG_WRITE_GRAD = 8  # write the gradient the step used (projected, unscaled) into grads
FLAG_PROJECT_UPDATE = 16  # coef applies to the update, not to the gradient
FLAG_AMSGRAD = 32
FLAG_DECOUPLED = 64  # AdamW: decoupled weight decay


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 for float64 parameters, else float32 (half/bfloat16 are computed in float32)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def optim_step(
    kind: int,
    phase: int,
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    state1: Sequence[Tensor],
    state2: Sequence[Tensor],
    state3: Sequence[Tensor],
    steps: Sequence[Tensor],
    rows: Sequence[Tensor],
    coef: Optional[Tensor],
    grad_scale: Optional[Tensor],
    found_inf: Optional[Tensor],
    hyper: Sequence[float],
    flags: int,
) -> Tensor:
    """One phase of the fused step over one group's pieces (see the module docstring).

    Args:
        kind: ``KIND_SGD`` or ``KIND_ADAM``.
        phase: ``PHASE_WRITE``, ``PHASE_GRAD_COEF`` or ``PHASE_UPDATE_COEF``.
        params: ``T`` contiguous 1-D parameter pieces (updated in place by the write phase).
        grads: ``T`` contiguous 1-D gradients, the parameters' dtype.
        state1: SGD momentum buffers (empty without momentum) / Adam ``exp_avg``; ``T`` 1-D.
        state2: Adam ``exp_avg_sq`` (empty for SGD).
        state3: Adam ``max_exp_avg_sq`` (empty unless amsgrad).
        steps: Adam: ``T`` float32 scalars, this step's count (empty for SGD).
        rows: ``T`` ``(k, n_t)`` row blocks of an orthonormal basis, or empty (no basis).
        coef: float64 ``(k,)`` coefficients to subtract in the write phase, or None.
        grad_scale: float32 scalar the gradients are divided by, or None.
        found_inf: float32 scalar; when nonzero the call changes nothing.
        hyper: the hyperparameters (module docstring).
        flags: ``FLAG_*`` bits.

    Returns:
        float64 ``(k,)`` for the coefficient phases; an empty float64 tensor for the write phase.
    """
    k = rows[0].shape[0] if len(rows) else 0
    device = params[0].device if len(params) else torch.device("cpu")
    acc = torch.zeros(k, dtype=torch.float64, device=device)
    if found_inf is not None and bool(found_inf.item() != 0):
        return acc if phase != PHASE_WRITE else acc[:0]
    if phase == PHASE_GRAD_COEF:
        for g, r in zip(grads, rows):
            acc += r.to(torch.float64) @ g.to(torch.float64)
        return acc
    use_coef = coef is not None and k > 0 and phase == PHASE_WRITE
    proj_update = bool(flags & FLAG_PROJECT_UPDATE)
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
        if kind == KIND_SGD:
            u, new_states = _sgd(pc, gp, [s[t] for s in (state1,) if len(s)], hyper, flags)
        else:
            st = [state1[t], state2[t]] + ([state3[t]] if flags & FLAG_AMSGRAD else [])
            u, pnew, new_states = _adam(pc, gp, st, float(steps[t].item()), hyper, flags)
        if phase == PHASE_UPDATE_COEF:
            if r64 is not None:
                acc += r64 @ u.to(torch.float64)
            continue
        # Write phase.
        if flags & FLAG_WRITE_GRAD:
            g.copy_(gp)
        if c64 is not None and proj_update and r64 is not None:
            p.copy_(p.to(torch.float64) + u.to(torch.float64) - c64 @ r64)
        elif kind == KIND_SGD:
            p.copy_(pc + u)
        else:
            p.copy_(pnew)
        if kind == KIND_SGD:
            states = [state1[t]] if len(state1) else []
        else:
            states = [state1[t], state2[t]] + ([state3[t]] if flags & FLAG_AMSGRAD else [])
        for s, v in zip(states, new_states):
            s.copy_(v)
    return acc if phase != PHASE_WRITE else acc[:0]


def _sgd(p: Tensor, g: Tensor, st: List[Tensor], hyper: Sequence[float], flags: int):
    """torch.optim.SGD's maths on one piece; returns (update u, new states)."""
    lr, momentum, dampening, wd = (float(h) for h in hyper[:4])
    d = -g if flags & FLAG_MAXIMIZE else g
    if wd != 0:
        d = d + wd * p
    new_states: List[Tensor] = []
    if momentum != 0:
        if flags & FLAG_FIRST:
            buf = d.clone()
        else:
            buf = st[0].to(p.dtype) * momentum + (1 - dampening) * d
        new_states.append(buf)
        d = d + momentum * buf if flags & FLAG_NESTEROV else buf
    return -lr * d, new_states


def _adam(p: Tensor, g: Tensor, st: List[Tensor], step: float, hyper: Sequence[float], flags: int):
    """torch.optim.Adam/AdamW's maths on one piece; returns (update u, new p, new states)."""
    lr, beta1, beta2, eps, wd = (float(h) for h in hyper[:5])
    d = -g if flags & FLAG_MAXIMIZE else g
    pd = p
    u_decay = torch.zeros_like(p)
    if wd != 0:
        if flags & FLAG_DECOUPLED:
            pd = p * (1 - lr * wd)
            u_decay = -(lr * wd) * p
        else:
            d = d + wd * p
    m = st[0].to(p.dtype)
    m = m + (1 - beta1) * (d - m)  # torch's lerp(m, d, 1 - beta1) for a weight < 0.5
    v = st[1].to(p.dtype) * beta2 + (1 - beta2) * d * d
    new_states = [m, v]
    vh = v
    if flags & FLAG_AMSGRAD:
        vh = torch.maximum(st[2].to(p.dtype), v)
        new_states.append(vh)
    bc1 = 1 - beta1**step
    bc2_sqrt = math.sqrt(1 - beta2**step)
    step_size = lr / bc1
    denom = vh.sqrt() / bc2_sqrt + eps
    upd = -step_size * (m / denom)
    return u_decay + upd, pd + upd, new_states
