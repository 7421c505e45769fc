"""Unlearning methods (docs/method.md §3). One file per method; ``@register`` adds it to the registry.

To add a method: write ``methods/<name>.py`` with a :class:`~uno.unlearn.methods.base.Method` subclass
decorated with ``@register("<name>")`` (its hyper-parameters in ``defaults``, its losses beside it) and
import it below.
"""

from uno.unlearn.diffusion import esd  # noqa: F401  (the diffusion task's ESD baseline)
from uno.unlearn.methods import (  # noqa: F401  (imports register the methods)
    ascent,
    ascent_descent,
    fill,
    fu,
    kick,
    retain,
    salun,
    surgery,
    surgery_ascent,
    uno,
    uno_s,
    uno_subspace,
    uno_subspace_ps,
)
from uno.unlearn.methods.base import Method, StepInfo
from uno.unlearn.methods.registry import create, from_config, names, register

__all__ = ["Method", "StepInfo", "create", "from_config", "names", "register"]
