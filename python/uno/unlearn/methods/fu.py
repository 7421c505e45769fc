"""``fu``: feature unlearning (Moon et al. 2024), docs/method.md §6.

With the frozen original decoder f and unit direction v from the retain to the forget latent means:
    s(z) = 1[z·v > δ],  ẑ = z − max(z·v − δ, 0)·v,
    loss = mean[(1 − s)·‖g(z) − f(z)‖₁] + α·(mean[s·‖g(z) − f(ẑ)‖₁] + mean[s·(1 − SSIM(g(z), f(ẑ)))]).
(The reference code uses z_e instead of v in ẑ; this uses v as the spec says.) The latent sides are the
frozen encoder's means of the forget and retain images for a VAE, and the latents the judge assigns to each
side for a GAN (``GANTask.z_forget``/``z_retain``); δ is the midpoint of the two sides' mean projections.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from uno.unlearn import parallel
from uno.unlearn.methods.base import OwnLossMethod, StepInfo, grads
from uno.unlearn.methods.registry import register

#: images per side for the VAE's encoder means (the sides' statistics, not a training batch)
N_SIDE = 2048


def ssim(a: Tensor, b: Tensor, window: int = 7) -> Tensor:
    """Per-image SSIM ``(N,)`` with a uniform window (images in [0, 1])."""
    c1, c2 = 0.01**2, 0.03**2
    pool = lambda t: F.avg_pool2d(t, window, 1, window // 2, count_include_pad=False)  # noqa: E731
    mu_a, mu_b = pool(a), pool(b)
    s_aa = pool(a * a) - mu_a**2
    s_bb = pool(b * b) - mu_b**2
    s_ab = pool(a * b) - mu_a * mu_b
    m = ((2 * mu_a * mu_b + c1) * (2 * s_ab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (s_aa + s_bb + c2))
    return m.flatten(1).mean(1)


def latent_sides(task: Any) -> tuple[Tensor, Tensor]:
    """``(Z_f, Z_r)``: latent points of the forget and retain sides, ``(N_f, d)`` and ``(N_r, d)``."""
    if hasattr(task, "z_forget"):  # GANTask: the latents themselves
        return task.z_forget, task.z_retain
    f = task.frozen_original()
    with torch.no_grad():
        return f.encode(task.forget_x[:N_SIDE])[0], f.encode(task.retain_x[:N_SIDE])[0]


def fu_loss(task: Any, v: Tensor, delta: float, alpha: float) -> Tensor:
    """The FU loss on a fresh latent batch from the task's step generator (see the module docstring)."""
    f = task.frozen_original()
    z = torch.randn(task.batch, task.zdim, generator=task.step_generator)
    z = parallel.mine(task, z).to(task.dtype).to(task.device)  # data-parallel: this rank's rows
    mean = functools.partial(parallel.batch_mean, task)  # over the global batch
    proj = z @ v
    s = (proj > delta).to(z.dtype)
    z_hat = z - torch.clamp(proj - delta, min=0.0)[:, None] * v[None, :]
    with torch.no_grad():
        f_z, f_zh = f.decode(z), f.decode(z_hat)
    g_z = task.model.decode(z)
    l1 = (g_z - f_z).abs().flatten(1).sum(1)
    l1h = (g_z - f_zh).abs().flatten(1).sum(1)
    return mean((1 - s) * l1) + alpha * (mean(s * l1h) + mean(s * (1 - ssim(g_z, f_zh))))


@register("fu", alpha=3.0)
class FeatureUnlearning(OwnLossMethod):
    """FU with weight α (``alpha``, 3 by default)."""

    alpha: float
    models = ("vae", "gan")  # it needs a latent space to find the forget side in

    def setup(self, task: Any) -> None:
        # v and δ depend only on the frozen original and the data: recomputed, not checkpointed
        z_f, z_r = latent_sides(task)
        z_e = z_f.mean(0) - z_r.mean(0)
        self.v = z_e / z_e.norm().clamp_min(1e-12)
        self.delta = 0.5 * float((z_f @ self.v).mean() + (z_r @ self.v).mean())

    def direction(self, task: Any, step: int) -> tuple[list[Tensor], StepInfo]:
        loss = fu_loss(task, self.v, self.delta, self.alpha)
        (g,), (value,) = parallel.sum_grads(
            task, [grads(loss, task.params)], [float(loss.detach())]
        )
        return g, StepInfo(loss_f=value)
