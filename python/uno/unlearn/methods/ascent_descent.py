"""``ascent-descent`` (A-D): odd steps ``ascent``, even steps ``surgery``."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from uno.unlearn.methods.base import Method, StepInfo, forget_retain_grads, neg, surgery_direction
from uno.unlearn.methods.registry import register


@register("ascent-descent")
class AscentDescent(Method):
    def direction(self, task: Any, step: int) -> tuple[list[Tensor], StepInfo]:
        if step % 2 == 1:
            g_f, _, info = forget_retain_grads(task, hat_sign=-1.0)
            return neg([t.detach() for t in g_f]), info
        g_f, g_r, info = forget_retain_grads(task)
        return surgery_direction(g_f, g_r, info), info
