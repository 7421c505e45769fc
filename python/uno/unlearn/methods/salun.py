"""``salun``: saliency-masked unlearning (Fan et al. 2024), METHOD.md §6.

Mask m = 1[|∇ℓ(D_f)| ≥ median over all parameters] (computed once, on the original model). Each step
descends the task's ``salun_loss`` (VAE: MSE(Dec(z_f), sg(Dec(z_r))) with paired noise + the retain
loss), with the gradient masked by m and clipped to norm 5, then Adam.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from uno.unlearn import _ops
from uno.unlearn.methods.base import Method, StepInfo, grads
from uno.unlearn.methods.registry import register


@register("salun")
class SalUn(Method):
    has_hat = False
    measures_cos2 = False

    def __init__(self, hat: bool = False, clip: float = 5.0, **kw: Any) -> None:
        super().__init__(hat=hat, clip=clip, **kw)
        self.clip = clip
        self.mask: list[Tensor] = []

    def setup(self, task: Any) -> None:
        g = grads(task.saliency_loss(), task.params)
        flat_abs = torch.cat([t.abs().reshape(-1) for t in g])  # once, for the median only
        med = flat_abs.median()
        self.mask = [(t.abs() >= med).to(t.dtype) for t in g]

    def direction(self, task: Any, step: int) -> tuple[list[Tensor], StepInfo]:
        loss = task.salun_loss()
        d = [m * t for m, t in zip(self.mask, grads(loss, task.params))]
        n = float(_ops.dot(d, d)) ** 0.5
        if n > self.clip:
            d = [t * (self.clip / n) for t in d]
        return d, StepInfo(loss_r=float(loss.detach()))

    def state_dict(self) -> dict[str, Tensor]:
        return {f"mask.{i}": m for i, m in enumerate(self.mask)}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if state:
            self.mask = [state[f"mask.{i}"] for i in range(len(self.mask) or len(state))]
