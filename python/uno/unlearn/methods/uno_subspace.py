"""``uno-subspace``: ascent on the forget loss orthogonal to the span of k retain directions.

Each step splits the retain batch into k micro-batches, takes their gradients g_r^(1..k), builds an
orthonormal basis Q of their span with ``uno.orthonormalize`` and steps along
    d = ρ·g_r − (g_f − Q Qᵀ g_f)        (ρ = ``retain_weight``, 1 by default; 0 = pure projected ascent)
so the ascent part changes none of the k retain losses to first order while g_r = Σ_j g_r^(j) keeps
descending the retain loss. This generalises ``surgery-ascent`` (k = 1) from one vector to a subspace.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from uno.unlearn import _ops
from uno.unlearn.methods.base import Method, StepInfo, cos2_of, grads, norms
from uno.unlearn.methods.registry import register


@register("uno-subspace", k=8, retain_weight=1.0)
class UnoSubspace(Method):
    """k retain micro-batches (``--k``), retain weight ρ (``retain_weight``)."""

    k: int
    retain_weight: float

    def direction(self, task: Any, step: int) -> tuple[list[Tensor], StepInfo]:
        params = task.params
        lf = task.forget_loss(u_sign=-1.0)
        g_f = grads(lf, params)
        chunks = task.retain_loss_chunks(self.k)
        g_js = [grads(c, params) for c in chunks]
        g_r = [t.clone() for t in g_js[0]]  # ℓ is sum-reduced: g_r = Σ_j g_r^(j)
        for gs in g_js[1:]:
            for acc, t in zip(g_r, gs):
                acc.add_(t)
        a, f, r = norms(g_f, g_r)
        info = StepInfo(
            cos2=cos2_of(a, f, r),
            loss_f=float(lf.detach()),
            loss_r=float(sum(float(c.detach()) for c in chunks)),
        )
        basis = _ops.orthonormalize(g_js)
        info.extra["k"] = int(basis.k)
        d = [t.detach().clone() for t in g_f]
        if basis.k > 0:
            _ops.project_(d, basis)
        return [self.retain_weight * gr - df for gr, df in zip(g_r, d)], info
