"""``uno``: minimise L = L_r + λ·c², c² = cos²(g_f, g_r), with the fast second-order step.

With a = g_f·g_r, F = ‖g_f‖², R = ‖g_r‖², D = F·R + ε and c² = a²/D,
    ∇c² = H_f·u_f + H_r·u_r,   u_f = (2a/D)(g_r − (a·R/D)·g_f),   u_r = (2a/D)(g_f − (a·F/D)·g_r)
(exact for the ε-guarded c²; with ε = 0 this is METHOD.md §3). g_f and g_r are built once with
``create_graph=True``. The Hessian-vector products are the gradients of ⟨g_f, sg(u_f)⟩ and ⟨g_r, sg(u_r)⟩,
taken as backwards of the OUTPUTS g_f, g_r with ``grad_outputs`` u_f, u_r (no dot-product graph), and
∇L_r rides along in the retain half (``L_r`` is one more output with grad_output 1, as in
``(L_r + λc²).backward()``: autograd adds its cotangent into the same backward of the retain forward graph).
No flattening and no parameter-sized buffer beyond g_f and g_r and the result: λu_r is formed in g_f's
storage and λu_f in g_r's.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from uno.unlearn.methods.base import COS2_EPS, Method, StepInfo, grads, log, norms
from uno.unlearn.methods.registry import register


def _form_us(g_f: list[Tensor], g_r: list[Tensor], cf: float, kf: float, kr: float) -> None:
    """In place: g_f ← cf·(g_f − kr·g_r) (λu_r), g_r ← cf·(g_r − kf·g_f) (λu_f); one piece-sized temporary."""
    with torch.no_grad():
        for gf, gr in zip(g_f, g_r):
            # ``.data``, not ``.detach()``: the write must not bump the outputs' version counters, or
            # autograd would replace the views' grad_fns by AsStridedBackward (a base-sized scatter).
            gf_, gr_ = gf.data, gr.data
            uf = torch.add(gr_, gf_, alpha=-kf)
            gf_.add_(gr_, alpha=-kr).mul_(cf)
            gr_.copy_(uf).mul_(cf)


def _backward_into(
    outs: list[Tensor], gouts: list[Tensor], params: list[Tensor], retain_graph: bool
) -> None:
    """Accumulate ``Σ ⟨outs, gouts⟩``'s gradient into ``p.grad`` (per-parameter transients only)."""
    pairs = [(o, g) for o, g in zip(outs, gouts) if o.requires_grad]
    if pairs:
        torch.autograd.backward(
            [o for o, _ in pairs],
            grad_tensors=[g for _, g in pairs],
            inputs=params,
            retain_graph=retain_graph,
        )


def uno_direction(task: Any, lam: float) -> tuple[list[Tensor], StepInfo]:
    """The gradient of ``L_r + λ·c²`` w.r.t. ``task.params`` (fast form).

    Memory: besides the two first-order graphs, the step holds g_f and g_r (which become λu_r and λu_f in
    place) and the result, accumulated in ``p.grad`` by two backwards:
      1. the forget half, ∂⟨g_f, λu_f⟩/∂θ = λH_f·u_f; its graph is then released (only the parts it shares
         with the retain half, such as a histogram loss, stay);
      2. the retain half, ∂(L_r + ⟨g_r, λu_r⟩)/∂θ = ∇L_r + λH_r·u_r, added in place.
    Each backward holds the transients of its own half only. ``p.grad`` is restored afterwards.
    """
    params = task.params
    lf = task.forget_loss()
    lr = task.retain_loss()
    g_f = grads(lf, params, create_graph=True, retain_graph=True)
    g_r = grads(lr, params, create_graph=True)
    a, f, r = norms(g_f, g_r)
    info = StepInfo(
        cos2=a * a / (f * r + COS2_EPS), loss_f=float(lf.detach()), loss_r=float(lr.detach())
    )
    info.extra.update(a=a, F=f, R=r)
    del lf
    if f == 0.0 or r == 0.0 or a == 0.0:
        # ∇c² = 0 exactly here (a = 0); the step is plain retain descent.
        if f == 0.0 or r == 0.0:
            info.zero_norm = True
            log.info("zero-norm gradient (‖g_f‖²=%g, ‖g_r‖²=%g): c² term is 0", f, r)
        return [t.detach() for t in g_r], info
    d = f * r + COS2_EPS
    _form_us(g_f, g_r, lam * 2.0 * a / d, a * r / d, a * f / d)
    saved = [p.grad for p in params]
    for p in params:
        p.grad = None
    try:
        # g_f's storage holds λu_r and g_r's holds λu_f: each half takes the other's buffer.
        _backward_into(g_f, [t.detach() for t in g_r], params, retain_graph=True)
        u_r = [t.detach() for t in g_f]
        del g_f  # frees the forget half's graph (what the retain half shares stays referenced)
        _backward_into([lr, *g_r], [torch.ones_like(lr), *u_r], params, retain_graph=False)
        del u_r, g_r, lr
        out = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
    finally:
        for p, g in zip(params, saved):
            p.grad = g
    return out, info


def uno_direction_naive(task: Any, lam: float) -> list[Tensor]:
    """Reference form (for tests only): flatten, build c² and double-backprop ``L_r + λ·c²``."""
    params = task.params
    lf = task.forget_loss()
    lr = task.retain_loss()
    g_f = torch.cat(
        [g.reshape(-1) for g in grads(lf, params, create_graph=True, retain_graph=True)]
    )
    g_r = torch.cat(
        [g.reshape(-1) for g in grads(lr, params, create_graph=True, retain_graph=True)]
    )
    g_f64, g_r64 = g_f.double(), g_r.double()
    c2 = (g_f64 @ g_r64) ** 2 / ((g_f64 @ g_f64) * (g_r64 @ g_r64) + COS2_EPS)
    total = lr + lam * c2.to(lr.dtype)
    return [g.detach() for g in grads(total, params)]


@register("uno")
class Uno(Method):
    """UNO (λ = 1e3 by default, the paper's value)."""

    def __init__(self, hat: bool = False, lam: float = 1e3, **kw: Any) -> None:
        super().__init__(hat=hat, lam=lam, **kw)
        self.lam = lam

    def direction(self, task: Any, step: int) -> tuple[list[Tensor], StepInfo]:
        return uno_direction(task, self.lam)
