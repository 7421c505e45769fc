"""``salun``: saliency-masked unlearning (Fan et al. 2024), docs/method.md §6.

Mask m = 1[|∇ℓ_f(forget pool)| ≥ median over all parameters] (computed once, on the original model, over
the first 1,024 forget images or latents). Each step descends

    VAE: MSE(Dec(z_f), sg(Dec(z_r))) with paired noise (z_f, z_r from the encoder, the same ε) + ℓ_r
    GAN: MSE(G(z_f), G₀(z_r)) (the frozen original's output on a retain latent) + ℓ_r

with the gradient masked by m and clipped to norm ``clip`` (5), then Adam.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from uno.unlearn import _ops, parallel
from uno.unlearn.methods.base import OwnLossMethod, StepInfo, grads
from uno.unlearn.methods.registry import register

#: forget images (VAE) or latents (GAN) for the saliency gradient
N_SALIENCY = 1024


def saliency_loss(task: Any) -> Tensor:
    """ℓ_f over the first :data:`N_SALIENCY` of the whole forget side (not a step's batch)."""
    if hasattr(task, "saliency_loss"):  # a task with its own (the diffusion task)
        return task.saliency_loss(N_SALIENCY)
    if hasattr(task, "z_forget"):  # GANTask
        return task.ell_forget_on(parallel.split(task, task.z_forget[:N_SALIENCY])[0])
    x, rows = parallel.split(task, task.forget_x[:N_SALIENCY])  # data-parallel: this rank's rows
    with parallel.noise_rows(task.model, rows):
        return task.model.loss(x)


def salun_loss(task: Any) -> Tensor:
    """The step's loss: forget samples mapped onto retain ones (see the module docstring) plus ℓ_r."""
    if hasattr(task, "salun_loss"):  # a task with its own (the diffusion task: masked remapping)
        return task.salun_loss()
    model = task.model
    if hasattr(task, "z_forget"):  # GANTask: the frozen original's retain outputs are the target
        with torch.no_grad():
            target = task.original.decode(task.z_r)
        x_f = model.decode(task.z_f)
    else:
        eps = torch.randn(task.batch, task.zdim, generator=task.step_generator)
        eps = parallel.mine(task, eps).to(task.dtype).to(task.device)  # this rank's rows
        mu_f, lv_f = model.encode(task.x_f)
        mu_r, lv_r = model.encode(task.x_r)
        target = model.decode(mu_r + eps * torch.exp(0.5 * lv_r)).detach()  # paired noise
        x_f = model.decode(mu_f + eps * torch.exp(0.5 * lv_f))
    return F.mse_loss(x_f, target, reduction="sum") + task.ell_retain()


@register("salun", clip=5.0)
class SalUn(OwnLossMethod):
    """SalUn with gradient clipping at ``clip`` (5 by default)."""

    clip: float

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.mask: list[Tensor] = []

    def setup(self, task: Any) -> None:
        (g,), _ = parallel.sum_grads(task, [grads(saliency_loss(task), task.params)])
        g = parallel.whole(task, g)  # fsdp2: the median is over every entry (once, at setup)
        flat_abs = torch.cat([t.abs().reshape(-1) for t in g])  # once, for the median only
        med = flat_abs.median()
        self.mask = parallel.shards(task, [(t.abs() >= med).to(t.dtype) for t in g])

    def direction(self, task: Any, step: int) -> tuple[list[Tensor], StepInfo]:
        loss = salun_loss(task)
        (g,), (value,) = parallel.sum_grads(
            task, [grads(loss, task.params)], [float(loss.detach())]
        )
        self.mask = parallel.shards(task, self.mask)  # fsdp2: a loaded (whole) mask as shards
        d = [m * t for m, t in zip(self.mask, g)]
        n = float(_ops.dot(d, d)) ** 0.5
        if n > self.clip:
            d = [t * (self.clip / n) for t in d]
        return d, StepInfo(loss_r=value)

    def state_dict(self) -> dict[str, Tensor]:
        return {f"mask.{i}": m for i, m in enumerate(self.mask)}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if state:
            self.mask = [state[f"mask.{i}"] for i in range(len(self.mask) or len(state))]
