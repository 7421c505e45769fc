"""``ascent-descent`` (A-D): odd steps ``ascent``, even steps ``surgery``.

One ``uno.optim.ProjectedAdam(project="grad")``: the ``surgery`` steps project g_r off g_f, the
``ascent`` steps have no basis.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from uno.unlearn.methods.base import Method, StepInfo, forget_retain_grads, neg, surgery_direction
from uno.unlearn.methods.registry import register


@register("ascent-descent")
class AscentDescent(Method):
    project = "grad"

    def direction(self, task: Any, step: int) -> tuple[list[Tensor], StepInfo]:
        if step % 2 == 1:
            self.step_basis = None
            g_f, _, info = forget_retain_grads(task, hat_sign=-1.0)
            return neg([t.detach() for t in g_f]), info
        g_f, g_r, info = forget_retain_grads(task)
        d, self.step_basis = surgery_direction(g_f, g_r, info)
        return d, info
