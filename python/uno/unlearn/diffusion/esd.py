"""``esd``: ESD-style negative guidance (Gandikota et al. 2023) for a class-conditional denoiser.

Fine-tune so the class-c prediction on noised forget images moves to the frozen original's
unconditional prediction minus η times its class direction,
    ε_θ(x_t, t, c) → ε₀(x_t, t, ∅) − η·(ε₀(x_t, t, c) − ε₀(x_t, t, ∅)),   η = ``eta`` (1 by default),
plus the plain retain denoising loss ℓ_d(x_r, y_r) (a conditional model shares every weight across
classes, so ESD alone also moves the others). ESD draws x_t from the model's own chains; here x_t is a
noised training image of class c (one forward, no chain). Diffusion task only
(:meth:`~uno.unlearn.diffusion.task.DiffusionTask.esd_loss`).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from uno.unlearn.errors import UnoUserError
from uno.unlearn.methods.base import OwnLossMethod, StepInfo, grads
from uno.unlearn.methods.registry import register


@register("esd", eta=1.0)
class ESD(OwnLossMethod):
    """Negative guidance with strength ``eta``."""

    eta: float
    models = ("diffusion",)  # the task's conditional noise prediction

    def setup(self, task: Any) -> None:
        if not hasattr(task, "esd_loss"):
            raise UnoUserError("method esd needs a diffusion model (--model diffusion)")

    def direction(self, task: Any, step: int) -> tuple[list[Tensor], StepInfo]:
        loss = task.esd_loss(self.eta)
        return grads(loss, task.params), StepInfo(loss_r=float(loss.detach()))
