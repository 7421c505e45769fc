"""`uno.per_sample.ghost_gram`: argument checks for the ``uno::ghost_gram`` op (:mod:`uno.ops.library`).

The four backends (reference, cpu, cuda, triton) each expose ``ghost_gram`` (:mod:`uno._backends`);
the op is one ``torch.library.custom_op`` whose ``backend`` argument names the implementation, so the
same op name serves every backend (and ``torch.compile`` sees one opaque node).
"""

from __future__ import annotations

import os
from typing import Optional

from torch import Tensor

from uno import _backends
from uno._abi import FLOAT_DTYPES
from uno.ops import library


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
        if diag:
            raise ValueError("diag=True is the diagonal of a symmetric Gram; do not pass a2/g2")
        if (
            a2.dim() != 3
            or g2.dim() != 3
            or g2.shape[:2] != a2.shape[:2]
            or a2.shape[2] != a.shape[2]
        ):
            raise ValueError(f"bad second batch shapes {tuple(a2.shape)} and {tuple(g2.shape)}")
        if g2.shape[2] != g.shape[2]:
            raise ValueError(f"expected g2 with p={g.shape[2]}, got {tuple(g2.shape)}")
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"ghost_gram: expected float32/float64/float16/bfloat16 inputs, got {a.dtype}"
        )
    for t in (g, a2, g2):
        if t is not None and (t.device != a.device or t.dtype != a.dtype):
            raise ValueError(
                f"expected all inputs on {a.device} with dtype {a.dtype}, got {t.device}/{t.dtype}"
            )
    name = backend or ""
    if not name and not os.environ.get("UNO_BACKEND"):
        # The default backend, chosen here so that a compiled core built before this op existed is
        # passed over (an explicit request still raises, from the backend).
        name = _backends.resolve(None, a.device)
        if not _has_kernel(name):
            triton_ok = a.device.type == "cuda" and "cuda" in _backends.info("triton").devices
            name = "triton" if triton_ok else "reference"
    return library.ghost_gram_op(a, g, a2, g2, diag, name)


def _has_kernel(name: str) -> bool:
    if name not in ("cpu", "cuda"):
        return True
    from uno import _C

    return hasattr(_C, f"ghost_gram_{name}")
