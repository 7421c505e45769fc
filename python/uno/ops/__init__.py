"""The public ops: thin Python wrappers over `torch.library` custom ops (``uno::project_``,
``uno::orthonormalize``, ``uno::inner``) that dispatch to one backend's kernel primitives."""

from uno.ops.basis import Basis
from uno.ops.orthonormalize import orthonormalize
from uno.ops.project import project_
from uno.ops.reductions import cos2, dot, gram

__all__ = ["Basis", "cos2", "dot", "gram", "orthonormalize", "project_"]
