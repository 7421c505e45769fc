"""uno: fast machine unlearning for generative models by gradient orthogonalization.

Public API (kernels behind `torch.library` custom ops; see README.md):

* :func:`project_` — in place ``grad ← grad − Π grad`` against a basis (tensor lists, no concatenation).
* :func:`orthonormalize` and :class:`Basis` — orthonormal bases kept in one buffer, grown in place.
* :func:`dot`, :func:`gram`, :func:`cos2` — one-pass multi-tensor reductions in float64.
* :func:`backends` — which backends (reference, cpu, cuda, triton) run here, and why not the others.
"""

from uno._backends import backends
from uno.ops import Basis, cos2, dot, gram, orthonormalize, project_

__version__ = "0.1.0"
__all__ = [
    "Basis",
    "__version__",
    "backends",
    "cos2",
    "dot",
    "gram",
    "orthonormalize",
    "project_",
]
