"""``surgery`` (S): descend along g_r' = g_r − (g_f·g_r/‖g_f‖²)·g_f (always projects).

The step is ``uno.optim.ProjectedAdam(project="grad")`` on g_r with the basis {g_f}: project the
gradient, then Adam, exactly the paper's surgery, in one fused pass.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from uno.unlearn.methods.base import Method, StepInfo, forget_retain_grads, surgery_direction
from uno.unlearn.methods.registry import register


@register("surgery")
class Surgery(Method):
    project = "grad"

    def direction(self, task: Any, step: int) -> tuple[list[Tensor], StepInfo]:
        g_f, g_r, info = forget_retain_grads(task)
        d, self.step_basis = surgery_direction(g_f, g_r, info)
        return d, info
