"""uno: fast machine unlearning for generative models by gradient orthogonalization.

Public API (kernels behind `torch.library` custom ops; see README.md):

* :func:`project_` — in place ``grad ← grad − Π grad`` against a basis (tensor lists, no concatenation).
* :func:`orthonormalize` and :class:`Basis` — orthonormal bases kept in one buffer, grown in place.
* :func:`dot`, :func:`dot_norms`, :func:`gram`, :func:`cos2` — one-pass multi-tensor reductions in
  float64 (:func:`dot_norms`: ⟨a,b⟩, ‖a‖², ‖b‖² of two vectors at once).
* :func:`backends` — which backends (reference, cpu, cuda, triton) run here, and why not the others.
* :mod:`uno.optim` — ``ProjectedSGD``/``ProjectedAdam``: projection and the optimizer update fused;
  :func:`project_sgd_`, :func:`project_adam_` are their functional forms.
* :mod:`uno.per_sample` — per-sample gradients, ghost Gram matrices, norms and basis coefficients.
* :mod:`uno.unlearn` — the unlearning drivers (methods, models, data, metrics); the ``uno`` command.
"""

from uno import optim, per_sample
from uno._backends import backends
from uno.ops import Basis, cos2, dot, gram, orthonormalize, project_
from uno.ops.reductions import dot_norms
from uno.optim import project_adam_, project_sgd_

__version__ = "0.1.0"
__all__ = [
    "Basis",
    "__version__",
    "backends",
    "cos2",
    "dot",
    "dot_norms",
    "gram",
    "optim",
    "orthonormalize",
    "per_sample",
    "project_",
    "project_adam_",
    "project_sgd_",
]
