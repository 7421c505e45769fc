"""``surgery-ascent`` (SA): ascend along g_f' = g_f − (g_f·g_r/‖g_r‖²)·g_r.

In the ``-hat`` variant the histogram term enters the forget loss with the sign that lowers U
(ascent on ℓ(x_f), descent on U), so the histogram loss still pushes towards forgetting.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from uno.unlearn import _ops
from uno.unlearn.methods.base import Method, StepInfo, forget_retain_grads
from uno.unlearn.methods.registry import register


@register("surgery-ascent")
class SurgeryAscent(Method):
    def direction(self, task: Any, step: int) -> tuple[list[Tensor], StepInfo]:
        g_f, g_r, info = forget_retain_grads(task, hat_sign=-1.0)
        d = [t.detach().clone() for t in g_f]
        if info.extra["R"] > 0.0:
            _ops.project_(d, [t.detach() for t in g_r])
        return [-t for t in d], info
