"""``ascent`` (A): step along −g_f (ascent on the forget loss; ``-hat``: descent on U)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from uno.unlearn.methods.base import Method, StepInfo, forget_retain_grads, neg
from uno.unlearn.methods.registry import register


@register("ascent")
class Ascent(Method):
    def direction(self, task: Any, step: int) -> tuple[list[Tensor], StepInfo]:
        # g_r is computed too so that cos² is reported alike for every method (docs/method.md §4).
        g_f, _, info = forget_retain_grads(task, hat_sign=-1.0)
        return neg([t.detach() for t in g_f]), info
