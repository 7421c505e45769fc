"""Plain-torch executable specifications of the kernel primitives (see docs/kernels.md)."""

from uno.reference.combine import combine
from uno.reference.ghost_gram import ghost_gram
from uno.reference.inner import inner
from uno.reference.optim_step import optim_step
from uno.reference.project import project

__all__ = ["combine", "ghost_gram", "inner", "optim_step", "project"]
