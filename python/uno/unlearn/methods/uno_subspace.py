"""``uno-subspace``: ascent on the forget loss orthogonal to the span of k retain directions.

Each step splits the retain batch into k micro-batches, takes their gradients g_r^(1..k) and steps along
    d = ρ·g_r − (g_f − Q Qᵀ g_f)        (ρ = ``retain_weight``, 1 by default; 0 = pure projected ascent)
with Q an orthonormal basis of their span, so the ascent part changes none of the k retain losses to
first order while g_r = Σ_j g_r^(j) keeps descending the retain loss. This generalises
``surgery-ascent`` (k = 1) from one vector to a subspace.

The step is ``uno.optim.ProjectedAdam(project="grad")``: d is "a gradient projected off a basis"
with the gradient (ρ + g_f·g_r/‖g_r‖²)·g_r − g_f and the basis Q' = the part of span(Q) orthogonal
to g_r (:func:`subspace_step`; g_r lies in span(Q), so g_r passes the projection untouched and the
g_r-component of g_f is cancelled by the coefficient). Same d as before, in the optimizer's fused pass.
"""

from __future__ import annotations

from typing import Any, Optional

from torch import Tensor

from uno.unlearn import _ops, parallel
from uno.unlearn.methods.base import Method, StepInfo, cos2_of, grads, norms
from uno.unlearn.methods.registry import register


def subspace_step(
    g_f: list[Tensor], g_r: list[Tensor], vectors: list[list[Tensor]], rho: float, info: StepInfo
) -> tuple[list[Tensor], Optional[Any]]:
    """The gradient and basis whose ``project="grad"`` step descends along ρ·g_r − (g_f − P g_f).

    P is the orthogonal projector onto S = span(g_r, ``vectors``). The basis is S without the g_r
    direction (``uno.orthonormalize`` of [g_r, *vectors], first row dropped: row 0 of the basis is
    g_r/‖g_r‖ when g_r ≠ 0) and the gradient is (ρ + a/R)·g_r − g_f with a = g_f·g_r, R = ‖g_r‖²
    (``info.extra``): projecting it off the basis leaves (ρ + a/R)·g_r − g_f + (P g_f − (a/R)·g_r).
    ``info.extra["k"]`` gets the rank of S.
    """
    a, r = info.extra["a"], info.extra["R"]
    full = _ops.orthonormalize([[t.detach() for t in g_r], *vectors])
    info.extra["k"] = int(full.k)
    first = 1 if r > 0.0 else 0  # a zero g_r is dropped by the rank rule: every row is S's
    coef = rho + (a / r if r > 0.0 else 0.0)
    d = [coef * gr.detach() - gf.detach() for gr, gf in zip(g_r, g_f)]
    if full.k <= first:
        return d, None
    import uno

    # (dist: a basis of DTensor shards under --parallel fsdp2 stays one)
    return d, uno.Basis(full.buffer[first : full.k], full.k - first, full.shapes, dist=full.dist)


@register("uno-subspace", k=8, retain_weight=1.0)
class UnoSubspace(Method):
    """k retain micro-batches (``--k``), retain weight ρ (``retain_weight``)."""

    k: int
    retain_weight: float
    project = "grad"

    def direction(self, task: Any, step: int) -> tuple[list[Tensor], StepInfo]:
        params = task.params
        lf = task.forget_loss(u_sign=-1.0)
        g_f = grads(lf, params)
        chunks = task.retain_loss_chunks(self.k)
        g_js = [grads(c, params) for c in chunks]
        # data-parallel: every micro-batch is split across the ranks; its gradient is their sum
        (g_f, *g_js), (loss_f, *losses) = parallel.sum_grads(
            task, [g_f, *g_js], [float(lf.detach()), *(float(c.detach()) for c in chunks)]
        )
        g_r = [t.clone() for t in g_js[0]]  # ℓ is sum-reduced: g_r = Σ_j g_r^(j)
        for gs in g_js[1:]:
            for acc, t in zip(g_r, gs):
                acc.add_(t)
        a, f, r = norms(g_f, g_r)
        info = StepInfo(
            cos2=cos2_of(a, f, r),
            loss_f=loss_f,
            loss_r=float(sum(losses)),
        )
        info.extra.update(a=a, F=f, R=r)
        d, self.step_basis = subspace_step(g_f, g_r, g_js, self.retain_weight, info)
        return d, info
