"""``uno-subspace-ps``: ``uno-subspace`` with the retain subspace from per-sample gradients.

Instead of k micro-batch backward passes, :mod:`uno.per_sample` gives the B×B Gram K of the per-sample
retain gradients g_1..g_B of the step's retain batch (ghost products, no per-sample gradient is
materialised) and their inner products c_i = g_i·g_f with the forget gradient. The top-k eigenvectors
v_1..v_k of K give the k principal retain directions G·v_j (G = [g_1 … g_B]); with g_r = G·1 they span
S = span(G·[1, v_1 … v_k]). Everything the step needs is a B-vector of weights on the g_i:
P_S g_f = G·w with w = M (MᵀKM)⁺ Mᵀc, M = [1, V_k], computed on the host in float64; one
``uno.per_sample.weighted_sum`` then forms q = G·(w − (a/R)·1) = P_S g_f − (a/R)·g_r, which is
orthogonal to g_r. The step is ``uno.optim.ProjectedAdam(project="grad")`` on
(ρ + a/R)·g_r − g_f with the basis {q}, i.e. along
    d = ρ·g_r − (g_f − P_S g_f)
(a = g_f·g_r, R = ‖g_r‖², ρ = ``retain_weight``): ``uno-subspace``'s direction for this S.

BatchNorm couples samples: the per-sample calls use ``batchnorm="frozen"`` (running statistics), which
is what the drivers' default (frozen statistics, no ``--bn-train``) runs anyway; with ``--bn-train`` the
method is an error. Retain passes per step: the Gram, the coefficients and the weighted sum (one
forward/backward each over the retain batch, whatever k) and the ordinary g_r.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from uno.unlearn.errors import UnoUserError
from uno.unlearn.methods.base import Method, StepInfo, cos2_of, grads, norms
from uno.unlearn.methods.registry import register

#: eigenvalues of K below this fraction of the largest are dropped (numerically absent directions)
EIG_RTOL = 1e-10


def subspace_weights(gram: Tensor, c: Tensor, k: int) -> tuple[Tensor, int]:
    """``(w, rank)``: P_S g_f = Σ_i w_i g_i for S = span(G·1, G·v_1..v_k) (float64, on the host).

    Args:
        gram: (B, B) Gram of the per-sample gradients g_i.
        c: (B,) inner products g_i·g_f.
        k: the number of principal directions (top eigenvectors of ``gram``).
    """
    gram, c = gram.double().cpu(), c.double().cpu()
    evals, evecs = torch.linalg.eigh(gram)  # ascending
    keep = evals > EIG_RTOL * float(evals[-1].clamp_min(0.0))
    top = evecs[:, keep][:, -k:] if k > 0 else evecs[:, :0]
    m = torch.cat([torch.ones(len(c), 1, dtype=torch.float64), top], 1)
    km = m.T @ gram @ m
    rank = int(torch.linalg.matrix_rank(km, rtol=EIG_RTOL, hermitian=True))
    return m @ (torch.linalg.pinv(km, rtol=EIG_RTOL, hermitian=True) @ (m.T @ c)), rank


@register("uno-subspace-ps", k=8, retain_weight=1.0)
class UnoSubspacePerSample(Method):
    """k principal per-sample retain directions (``--k``), retain weight ρ (``retain_weight``)."""

    k: int
    retain_weight: float
    project = "grad"

    def setup(self, task: Any) -> None:
        if getattr(task, "bn_train", False):
            raise UnoUserError(
                f"{self.name} needs per-sample retain gradients, which BatchNorm in train mode "
                "(--bn-train) couples; run it with frozen BatchNorm statistics (the default)"
            )

    def direction(self, task: Any, step: int) -> tuple[list[Tensor], StepInfo]:
        from uno import per_sample

        params, model = task.params, task.model
        lf = task.forget_loss(u_sign=-1.0)
        g_f = [t.detach() for t in grads(lf, params)]
        loss_fn, batch = task.retain_per_sample()
        kw: dict[str, Any] = dict(params=params, batchnorm="frozen")
        lr = loss_fn(model, *batch).sum()
        g_r = [t.detach() for t in grads(lr, params)]
        a, f, r = norms(g_f, g_r)
        info = StepInfo(cos2=cos2_of(a, f, r), loss_f=float(lf.detach()), loss_r=float(lr.detach()))
        info.extra.update(a=a, F=f, R=r)
        gram = per_sample.gram(model, loss_fn, *batch, **kw)
        basis_f = [t.unsqueeze(0) for t in g_f]
        c = per_sample.coefficients(model, loss_fn, *batch, basis=basis_f, **kw)[:, 0]
        w, rank = subspace_weights(gram, c, self.k)
        info.extra["k"] = rank
        ratio = a / r if r > 0.0 else 0.0
        q_w = (w - ratio).to(device=g_f[0].device)
        q = per_sample.weighted_sum(model, loss_fn, *batch, weights=q_w, **kw)
        coef = self.retain_weight + ratio
        self.step_basis = [t.detach() for t in q]  # orthonormalised (or dropped when 0) by the step
        return [coef * gr - gf for gr, gf in zip(g_r, g_f)], info
