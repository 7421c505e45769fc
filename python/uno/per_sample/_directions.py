"""Weighted sums of per-sample gradients and their principal directions, from one capture.

``weighted_sum`` forms ``Σ_i w_i g_i`` for one weight vector (B,) or k of them at once (B, k) from the
captured layer factors (activations ``a`` and output gradients ``g`` of each factored layer), so k
directions cost one forward and one backward, not k. ``principal_directions`` adds the (B, B) Gram of
the same capture: its top eigenpairs (λ_j, v_j) give the orthonormal principal directions
``q_j = G v_j / √λ_j`` of the per-sample gradients g_1..g_B (G = [g_1 … g_B]), the k directions that
carry most of the batch's gradient energy. Nothing of size B × P is formed.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from uno.per_sample._api import LossFn, _gram_of, _run
from uno.per_sample._blocks import Block, Factored

#: eigenvalues of the Gram below this fraction of the largest are numerically absent directions
EIG_RTOL = 1e-10

#: elements of one weighted copy of a layer's output gradients (k × B × T × out) formed at once: the
#: k weighted sums of a factored layer run as batched GEMMs over chunks of k below this size
_CHUNK_ELEMS = 1 << 24


def _check_weights(weights: Any) -> None:
    if not isinstance(weights, Tensor):
        raise TypeError(f"weights must be a (B,) or (B, k) tensor, got {type(weights).__name__}")
    if weights.dim() not in (1, 2):
        raise ValueError(
            f"weights must be a (B,) or (B, k) tensor, got {weights.dim()} dimensions "
            f"{tuple(weights.shape)}"
        )
    if not (weights.is_floating_point() and bool(torch.isfinite(weights).all())):
        raise ValueError("weights must be finite floating-point values")


def _factored_sums(b: Factored, w: Tensor) -> Tensor:
    """(k, out, in): Σ_i w_ij g_iᵀ a_i for each column j of ``w`` (B, k), batched GEMMs over chunks
    of columns (one GEMM of k·out rows measured no faster, interleaved, on the VAE's layers)."""
    B, T, n_out = b.g.shape
    a = b.a.flatten(0, 1).to(w.dtype)  # (B·T, in)
    g = b.g.to(w.dtype)
    step = max(1, _CHUNK_ELEMS // max(1, B * T * n_out))
    parts = []
    for j0 in range(0, w.shape[1], step):
        wj = w[:, j0 : j0 + step].T  # (c, B)
        gw = (g.unsqueeze(0) * wj[:, :, None, None]).flatten(1, 2)  # (c, B·T, out)
        parts.append(gw.transpose(1, 2) @ a)  # (c, out, in)
    return torch.cat(parts, 0)


def _sums(plist: List[Tensor], groups: List[List[Block]], w: Tensor) -> List[Tensor]:
    """(k, *p.shape) per parameter: the k weighted sums of the captured per-sample gradients."""
    k = w.shape[1]
    out = []
    for p, bs in zip(plist, groups):
        wp = w.to(device=p.device, dtype=p.dtype)
        acc = torch.zeros(k, *p.shape, dtype=p.dtype, device=p.device)
        for b in bs:
            if isinstance(b, Factored):
                acc += _factored_sums(b, wp).reshape(k, *p.shape)
            else:
                acc += torch.tensordot(wp.T, b.grad.to(p.dtype), 1).reshape(k, *p.shape)
        out.append(acc)
    return out


def weighted_sum(
    model: nn.Module,
    loss_fn: LossFn,
    *batch: Any,
    weights: Tensor,
    params: Optional[Sequence[Tensor]] = None,
    batchnorm: str = "error",
    check: bool = False,
) -> List[Tensor]:
    """Weighted sums of the per-sample gradients, one capture for any number of weight vectors.

    Args:
        weights: (B,) — returns ``Σ_i w_i g_i`` as parameter-shaped tensors; or (B, k) — returns one
            (k, *p.shape) tensor per parameter, row j being ``Σ_i w_ij g_i`` (the layout
            :func:`uno.per_sample.coefficients` takes as a basis).

    Raises:
        TypeError: ``weights`` is not a tensor (before any forward pass).
        ValueError: ``weights`` is not 1- or 2-dimensional, not finite (before any forward pass), or
            its first dimension is not the batch's B.
    """
    _check_weights(weights)
    plist, groups, B = _run(model, loss_fn, batch, params, batchnorm, check)
    if weights.shape[0] != B:
        want = f"({B},)" if weights.dim() == 1 else f"({B}, k)"
        raise ValueError(f"expected weights of shape {want}, got {tuple(weights.shape)}")
    if weights.dim() == 1:
        return [s[0] for s in _sums(plist, groups, weights[:, None])]
    return _sums(plist, groups, weights)


def principal_weights(gram: Tensor, k: int) -> Tuple[Tensor, Tensor]:
    """``(w, λ)``: (B, k') weights v_j / √λ_j and the eigenvalues λ_j (descending) of the top k' ≤ k
    eigenpairs of the (B, B) Gram K = GᵀG, so that G·w_j are orthonormal principal directions.

    Eigenvalues below ``EIG_RTOL`` × the largest are dropped (k' < k when the batch spans fewer
    directions). Float64, on the host (the eigendecomposition of a B × B matrix).
    """
    evals, evecs = torch.linalg.eigh(gram.double().cpu())  # ascending
    keep = evals > EIG_RTOL * float(evals[-1].clamp_min(0.0))
    vals, vecs = evals[keep][-k:].flip(0), evecs[:, keep][:, -k:].flip(1)
    return vecs / vals.sqrt(), vals


def principal_directions(
    model: nn.Module,
    loss_fn: LossFn,
    *batch: Any,
    k: int,
    params: Optional[Sequence[Tensor]] = None,
    batchnorm: str = "error",
    check: bool = False,
    backend: Optional[str] = None,
) -> Tuple[List[Tensor], Tensor]:
    """The top-k principal directions of the per-sample gradients, from one forward and backward.

    Returns:
        ``(directions, eigenvalues)``: one (k', *p.shape) tensor per parameter, row j the unit vector
        q_j = G v_j / √λ_j (orthonormal across j over all parameters, up to rounding), and the
        (k',) float64 eigenvalues λ_j = ‖Gᵀq_j‖², largest first. k' ≤ k: directions whose eigenvalue
        is below ``EIG_RTOL`` × the largest are left out.

    Raises:
        ValueError: ``k`` is not a positive int (before any forward pass), or the per-sample gradients
            are not finite.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    plist, groups, B = _run(model, loss_fn, batch, params, batchnorm, check, backend)
    pairs = [(b, b, p.shape) for p, bs in zip(plist, groups) for b in bs]
    gram = _gram_of(pairs, B, B, plist[0].device, backend)
    if not bool(torch.isfinite(gram).all()):
        raise ValueError(
            "principal_directions: the per-sample gradients are not finite (inf or nan in their Gram)"
        )
    w, vals = principal_weights(gram, k)
    if w.shape[1] == 0:  # a batch whose gradients are all zero: no direction
        return [torch.zeros(0, *p.shape, dtype=p.dtype, device=p.device) for p in plist], vals
    return _sums(plist, groups, w), vals
