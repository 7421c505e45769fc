"""``uno-s``: odd steps ``uno``, even steps ``surgery``, one optimizer state.

One ``uno.optim.ProjectedAdam(project="grad")``: the ``surgery`` steps project g_r off g_f, the
``uno`` steps have no basis (a plain Adam step on the same state).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from uno.unlearn.methods.base import StepInfo, forget_retain_grads, surgery_direction
from uno.unlearn.methods.registry import register
from uno.unlearn.methods.uno import Uno, uno_direction


@register("uno-s")
class UnoS(Uno):
    """``uno``'s λ (``--lam``) on the odd steps."""

    project = "grad"

    def direction(self, task: Any, step: int) -> tuple[list[Tensor], StepInfo]:
        if step % 2 == 1:
            self.step_basis = None
            return uno_direction(task, self.lam)
        g_f, g_r, info = forget_retain_grads(task)
        d, self.step_basis = surgery_direction(g_f, g_r, info)
        return d, info
