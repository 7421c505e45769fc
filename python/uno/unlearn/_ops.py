"""The public vector ops the methods are built from (``uno.project_``, ``uno.dot``,
``uno.dot_norms``, ``uno.cos2``, ``uno.orthonormalize``), imported lazily so that importing the
drivers never loads the kernels early.

The drivers never reach below these ops, so every kernel speed-up reaches every method.
"""

from __future__ import annotations

from typing import Any, Sequence, Union

from torch import Tensor

Vector = Union[Tensor, Sequence[Tensor]]


def project_(grad: Vector, basis: Any, **kw: Any) -> None:
    """``grad ← grad − P_span(basis) grad`` in place (``uno.project_``)."""
    import uno

    uno.project_(grad, basis, **kw)


def dot(a: Vector, b: Vector) -> Tensor:
    """0-d float64 inner product (``uno.dot``)."""
    import uno

    return uno.dot(a, b)


def dot_norms(a: Vector, b: Vector) -> Tensor:
    """``(3,)`` float64 ``[<a, b>, ‖a‖², ‖b‖²]`` in one pass (``uno.dot_norms``)."""
    import uno

    return uno.dot_norms(a, b)


def cos2(a: Vector, b: Vector, eps: float = 1e-30) -> Tensor:
    """0-d float64 squared cosine (``uno.cos2``)."""
    import uno

    return uno.cos2(a, b, eps=eps)


def orthonormalize(vectors: Sequence[Vector], **kw: Any) -> Any:
    """Orthonormal basis of the span of ``vectors`` (``uno.orthonormalize`` → ``uno.Basis``)."""
    import uno

    return uno.orthonormalize(vectors, **kw)
