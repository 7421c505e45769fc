"""``retain``: plain descent on the retain loss L_r (``-hat``: L_r includes w_u·U)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from uno.unlearn import parallel
from uno.unlearn.methods.base import Method, StepInfo, grads
from uno.unlearn.methods.registry import register


@register("retain")
class Retain(Method):
    measures_cos2 = False

    def direction(self, task: Any, step: int) -> tuple[list[Tensor], StepInfo]:
        lr = task.retain_loss()
        (g,), (loss_r,) = parallel.sum_grads(task, [grads(lr, task.params)], [float(lr.detach())])
        return g, StepInfo(loss_r=loss_r)
