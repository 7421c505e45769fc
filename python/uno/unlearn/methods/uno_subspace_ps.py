"""``uno-subspace-ps``: ``uno-subspace`` with the retain subspace from per-sample gradients.

Instead of k micro-batch backward passes, :func:`uno.per_sample.gram` gives the B×B Gram K of the
per-sample retain gradients g_1..g_B of the step's retain batch (ghost products, no per-sample gradient
is materialised). One forward of the per-sample losses then gives, by autograd, g_r = Gᵀ·1, the inner
products c = G·g_f (a double backward through Gᵀu) and one weighted sum of the g_i (a backward with
weights as the output gradient). The top-k eigenvectors
v_1..v_k of K give the k principal retain directions G·v_j (G = [g_1 … g_B]); with g_r = G·1 they span
S = span(G·[1, v_1 … v_k]). Everything the step needs is a B-vector of weights on the g_i:
P_S g_f = G·w with w = M (MᵀKM)⁺ Mᵀc, M = [1, V_k], computed on the host in float64; the weighted
sum q = G·(w − (a/R)·1) = P_S g_f − (a/R)·g_r is
orthogonal to g_r. The step is ``uno.optim.ProjectedAdam(project="grad")`` on
(ρ + a/R)·g_r − g_f with the basis {q}, i.e. along
    d = ρ·g_r − (g_f − P_S g_f)
(a = g_f·g_r, R = ‖g_r‖², ρ = ``retain_weight``): ``uno-subspace``'s direction for this S.

BatchNorm couples samples: the per-sample calls use ``batchnorm="frozen"`` (running statistics), which
is what the drivers' default (frozen statistics, no ``--bn-train``) runs anyway; with ``--bn-train`` the
method is an error. Retain passes per step, whatever k: the Gram's capture (a forward and a backward)
and one forward with a backward, a double backward and a second backward.
(``uno.per_sample.coefficients`` and ``weighted_sum`` give the same c and q, but ``coefficients``
materialises each layer's per-sample gradients: 3 s a step on the paper's VAE here, against 35 ms.)
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
        gram = per_sample.gram(model, loss_fn, *batch, params=params, batchnorm="frozen")
        per = loss_fn(model, *batch)  # (B,) ℓ_i, one forward for g_r, c and q
        u = torch.ones_like(per, requires_grad=True)
        g_u = torch.autograd.grad(per, params, grad_outputs=u, create_graph=True)
        g_r = [t.detach() for t in g_u]  # Gᵀ·1 = ∇ℓ_r
        # c = G g_f as the gradient of <Gᵀu, g_f> in u (double backward): every g_i·g_f at the cost
        # of about one backward, where per_sample.coefficients materialises the g_i
        inner = sum((t * gf).sum() for t, gf in zip(g_u, g_f))
        (c,) = torch.autograd.grad(inner, u, retain_graph=True)
        del g_u, inner
        a, f, r = norms(g_f, g_r)
        loss_r = float(per.detach().sum())
        info = StepInfo(cos2=cos2_of(a, f, r), loss_f=float(lf.detach()), loss_r=loss_r)
        info.extra.update(a=a, F=f, R=r)
        w, rank = subspace_weights(gram, c.detach(), self.k)
        info.extra["k"] = rank
        ratio = a / r if r > 0.0 else 0.0
        q_w = (w - ratio).to(device=per.device, dtype=per.dtype)
        # q = Σ_i q_w,i g_i: the per-sample weighted sum as one backward of the same forward
        q = grads(per, params, grad_outputs=q_w)
        coef = self.retain_weight + ratio
        self.step_basis = [t.detach() for t in q]  # orthonormalised (or dropped when 0) by the step
        return [coef * gr - gf for gr, gf in zip(g_r, g_f)], info
