"""``uno``: minimise L = L_r + λ·c², c² = cos²(g_f, g_r), with the fast second-order step.

With a = g_f·g_r, F = ‖g_f‖², R = ‖g_r‖², D = F·R + ε and c² = a²/D,
    ∇c² = H_f·u_f + H_r·u_r,   u_f = (2a/D)(g_r − (a·R/D)·g_f),   u_r = (2a/D)(g_f − (a·F/D)·g_r)
(exact for the ε-guarded c²; with ε = 0 this is METHOD.md §3). g_f and g_r are built once with
``create_graph=True``; ONE backward of the outputs (g_f, g_r) with grad_outputs (sg(u_f), sg(u_r)) — the
gradient of ⟨g_f, sg(u_f)⟩ + ⟨g_r, sg(u_r)⟩ without building that scalar — gives both Hessian-vector
products, and ∇L_r is the already-computed g_r (not recomputed). No flattening; u_r is formed in place in
g_f's storage and the result in place in the product's storage.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from uno.unlearn.methods.base import COS2_EPS, Method, StepInfo, grads, log, norms
from uno.unlearn.methods.registry import register


def uno_direction(task: Any, lam: float) -> tuple[list[Tensor], StepInfo]:
    """The gradient of ``L_r + λ·c²`` w.r.t. ``task.params`` (fast form).

    Memory: besides the two first-order graphs, the step holds four parameter-sized lists at most
    (g_r, u_f, u_r, the Hessian-vector product). u_r is written in place into g_f's storage (g_f is not
    needed once the u's exist), the two Hessian-vector products come from ONE backward with
    ``grad_outputs = (u_f, u_r)`` on the outputs ``(g_f, g_r)`` (no dot-product graph, no extra
    parameter-sized gradients of it), and the result is formed in place in the product's storage.
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
    del lf, lr
    if f == 0.0 or r == 0.0 or a == 0.0:
        # ∇c² = 0 exactly here (a = 0); the step is plain retain descent.
        if f == 0.0 or r == 0.0:
            info.zero_norm = True
            log.info("zero-norm gradient (‖g_f‖²=%g, ‖g_r‖²=%g): c² term is 0", f, r)
        return [t.detach() for t in g_r], info
    d = f * r + COS2_EPS
    cf = 2.0 * a / d
    kf, kr = a * r / d, a * f / d
    outs: list[Tensor] = []
    gouts: list[Tensor] = []
    with torch.no_grad():
        u_f = []
        for gf, gr in zip(g_f, g_r):
            gf_, gr_ = gf.detach(), gr.detach()
            uf = torch.add(gr_, gf_, alpha=-kf).mul_(cf)  # u_f = (2a/D)(g_r − (aR/D) g_f)
            gf_.add_(gr_, alpha=-kr).mul_(cf)  # u_r = (2a/D)(g_f − (aF/D) g_r), in g_f's storage
            u_f.append(uf)
    for gf, uf in zip(g_f, u_f):
        if gf.requires_grad:
            outs.append(gf)
            gouts.append(uf)
    for gf, gr in zip(g_f, g_r):
        if gr.requires_grad:
            outs.append(gr)
            gouts.append(gf.detach())  # holds u_r now
    del u_f
    if outs:
        hv = torch.autograd.grad(outs, params, grad_outputs=gouts, allow_unused=True)
    else:  # pragma: no cover - the losses do not depend on the parameters at second order
        hv = (None,) * len(params)
    del outs, gouts, g_f
    out = []
    for gr, h in zip(g_r, hv):
        gr_ = gr.detach()
        out.append(gr_.clone() if h is None else h.mul_(lam).add_(gr_))
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
