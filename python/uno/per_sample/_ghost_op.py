"""The `uno::ghost_gram` custom op: argument checks, backend resolution, dispatch.

Only the ``reference`` backend is implemented so far; the per-device default falls back to it (the C++,
CUDA and Triton kernels are not written yet), an explicit request for another backend raises.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from uno import _backends
from uno.reference.ghost_gram import ghost_gram as _ref

_IMPLEMENTED = ("reference",)


def _fast_reference(
    a: Tensor, g: Tensor, a2: Optional[Tensor], g2: Optional[Tensor], diag: bool
) -> Tensor:
    # T = 1 is two small GEMMs and a Hadamard product; everything else follows the spec.
    if a.shape[1] == 1 and (a2 is None or a2.shape[1] == 1) and not diag:
        A, G = a[:, 0].double(), g[:, 0].double()
        A2 = A if a2 is None else a2[:, 0].double()
        G2 = G if g2 is None else g2[:, 0].double()  # type: ignore[union-attr]
        return (A @ A2.T) * (G @ G2.T)
    return _ref(a, g, a2, g2, diag=diag)


@torch.library.custom_op("uno::ghost_gram", mutates_args=())
def _ghost_gram_op(
    a: Tensor, g: Tensor, a2: Optional[Tensor], g2: Optional[Tensor], diag: bool, backend: str
) -> Tensor:
    return _fast_reference(a, g, a2, g2, diag)


@_ghost_gram_op.register_fake
def _(a: Tensor, g: Tensor, a2: Optional[Tensor], g2: Optional[Tensor], diag: bool, backend: str):
    if diag:
        return a.new_empty((a.shape[0],), dtype=torch.float64)
    b2 = a.shape[0] if a2 is None else a2.shape[0]
    return a.new_empty((a.shape[0], b2), dtype=torch.float64)


def ghost_gram(
    a: Tensor,
    g: Tensor,
    a2: Optional[Tensor] = None,
    g2: Optional[Tensor] = None,
    *,
    diag: bool = False,
    backend: Optional[str] = None,
) -> Tensor:
    """Gram matrix (B1, B2) float64 of the per-sample gradients ``g_i^T a_i`` (see the reference).

    Args:
        a: (B, T, d) layer inputs.  g: (B, T, p) output gradients.  a2, g2: optional second batch.
        diag: only the diagonal (B,).  backend: explicit backend (else UNO_BACKEND, else default).
    """
    if a.dim() != 3 or g.dim() != 3 or a.shape[:2] != g.shape[:2]:
        raise ValueError(
            f"expected a (B, T, d) and g (B, T, p) with equal B and T, got {tuple(a.shape)} and "
            f"{tuple(g.shape)}"
        )
    if (a2 is None) != (g2 is None):
        raise ValueError("pass both a2 and g2 for a cross Gram, or neither")
    if a2 is not None and g2 is not None:
        if a2.dim() != 3 or g2.shape[:2] != a2.shape[:2] or a2.shape[2] != a.shape[2]:
            raise ValueError(f"bad second batch shapes {tuple(a2.shape)} and {tuple(g2.shape)}")
        if g2.shape[2] != g.shape[2]:
            raise ValueError(f"expected g2 with p={g.shape[2]}, got {tuple(g2.shape)}")
    for t in (g, a2, g2):
        if t is not None and (t.device != a.device or t.dtype != a.dtype):
            raise ValueError(
                f"expected all inputs on {a.device} with dtype {a.dtype}, got {t.device}/{t.dtype}"
            )
    name = _backends.resolve(backend, a.device)
    if name not in _IMPLEMENTED:
        explicit = backend is not None
        if explicit:
            raise RuntimeError(
                f"ghost_gram has no {name!r} kernel yet; implemented: {', '.join(_IMPLEMENTED)}"
            )
        name = "reference"
    return _ghost_gram_op(a, g, a2, g2, diag, name)
