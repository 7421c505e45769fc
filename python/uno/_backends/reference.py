"""The reference backend: the plain-torch specifications of the primitives (:mod:`uno.reference`).

``ghost_gram`` takes a shortcut for T = 1 (two GEMMs and a Hadamard product); everything else is the
spec itself.
"""

from __future__ import annotations

from typing import Optional

from torch import Tensor

from uno import reference as spec
from uno.reference import combine, inner, optim_step, project

NAME = "reference"

__all__ = ["NAME", "combine", "ghost_gram", "inner", "optim_step", "project"]


def ghost_gram(
    a: Tensor, g: Tensor, a2: Optional[Tensor], g2: Optional[Tensor], diag: bool
) -> Tensor:
    """Two GEMMs and a Hadamard product when T = 1, else the spec itself."""
    if a.shape[1] == 1 and (a2 is None or a2.shape[1] == 1) and not diag:
        A, G = a[:, 0].double(), g[:, 0].double()
        A2 = A if a2 is None else a2[:, 0].double()
        G2 = G if g2 is None else g2[:, 0].double()
        return (A @ A2.T) * (G @ G2.T)
    return spec.ghost_gram(a, g, a2, g2, diag=diag)
