"""The public ops: Python wrappers that validate their arguments and call the ``uno::`` custom ops of
:mod:`uno.ops.library` (the one op table), which run one backend's kernel primitives."""

from uno.ops.basis import Basis
from uno.ops.orthonormalize import orthonormalize
from uno.ops.project import project_
from uno.ops.reductions import cos2, dot, gram

__all__ = ["Basis", "cos2", "dot", "gram", "orthonormalize", "project_"]
