"""Plain-torch executable specifications of the kernel primitives (see docs/kernels.md)."""

from uno.reference.combine import combine
from uno.reference.inner import inner
from uno.reference.project import project

__all__ = ["combine", "inner", "project"]
