"""``surgery-ascent`` (SA): ascend along g_f' = g_f − (g_f·g_r/‖g_r‖²)·g_r.

In the ``-hat`` variant the histogram term enters the forget loss with the sign that lowers U
(ascent on ℓ(x_f), descent on U), so the histogram loss still pushes towards forgetting.

The step is ``uno.optim.ProjectedAdam(project="grad")`` on −g_f with the basis {g_r} (project the
gradient, then Adam).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from uno.unlearn.methods.base import Method, StepInfo, forget_retain_grads, neg
from uno.unlearn.methods.registry import register


@register("surgery-ascent")
class SurgeryAscent(Method):
    project = "grad"

    def direction(self, task: Any, step: int) -> tuple[list[Tensor], StepInfo]:
        g_f, g_r, info = forget_retain_grads(task, hat_sign=-1.0)
        self.step_basis = [t.detach() for t in g_r] if info.extra["R"] > 0.0 else None
        return neg([t.detach() for t in g_f]), info
