"""``uno-s``: odd steps ``uno``, even steps ``surgery``, one optimizer state."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from uno.unlearn.methods.base import StepInfo, forget_retain_grads, surgery_direction
from uno.unlearn.methods.registry import register
from uno.unlearn.methods.uno import Uno, uno_direction


@register("uno-s")
class UnoS(Uno):
    """``uno``'s λ (``--lam``) on the odd steps."""

    def direction(self, task: Any, step: int) -> tuple[list[Tensor], StepInfo]:
        if step % 2 == 1:
            return uno_direction(task, self.lam)
        g_f, g_r, info = forget_retain_grads(task)
        return surgery_direction(g_f, g_r, info), info
