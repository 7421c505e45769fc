"""Public per-sample functions: grads, gram, cross_gram, norms, coefficients (weighted sums and
principal directions: ``_directions.py``)."""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from uno import _backends
from uno.ops import _dist
from uno.per_sample._blocks import Block, Direct, Factored, block_grad, use_ghost
from uno.per_sample._core import capture
from uno.per_sample._ghost_op import ghost_gram

LossFn = Callable[..., Tensor]


def _merge(plist: List[Tensor], blocks: List[Block]) -> List[List[Block]]:
    """Blocks grouped by parameter; repeated calls of one factored layer are joined along T."""
    by: Dict[int, List[Block]] = {}
    for b in blocks:
        by.setdefault(b.index, []).append(b)
    out: List[List[Block]] = []
    for i in range(len(plist)):
        bs = by.get(i, [])
        if len(bs) > 1:
            if all(isinstance(b, Factored) for b in bs):
                bs = [Factored(i, torch.cat([b.a for b in bs], 1), torch.cat([b.g for b in bs], 1))]
            else:
                bs = [Direct(i, torch.stack([block_grad(b, plist[i].shape) for b in bs]).sum(0))]
        out.append(bs)
    return out


_BATCHNORM = ("error", "frozen")


def _check_options(
    model: Any, loss_fn: Any, batchnorm: Any, check: Any, backend: Any = None
) -> None:
    """The arguments every public function shares, checked before any forward pass."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(loss_fn):
        raise TypeError(
            f"loss_fn must be callable as loss_fn(model, *batch), got {type(loss_fn).__name__}"
        )
    if not isinstance(batchnorm, str) or batchnorm not in _BATCHNORM:
        raise ValueError(
            f"batchnorm must be one of {', '.join(repr(v) for v in _BATCHNORM)}, got {batchnorm!r}"
        )
    if not isinstance(check, bool):
        raise TypeError(f"check must be a bool, got {check!r}")
    if backend is not None and (not isinstance(backend, str) or backend not in _backends.NAMES):
        raise ValueError(
            f"unknown backend={backend!r}; expected None or one of {', '.join(_backends.NAMES)}"
        )


def _check_not_sharded(model: nn.Module, params: Optional[Sequence[Tensor]]) -> None:
    """Per-sample gradients are a local-batch computation; FSDP2 (DTensor) parameters are refused.

    Under DDP (plain parameters on every rank) every function here works on the rank's local batch
    only: no collective runs (docs/distributed.md).
    """
    ps = model.parameters() if params is None else params
    if any(_dist.is_dtensor(p) for p in ps):
        raise TypeError(
            "uno.per_sample does not support DTensor (FSDP2-sharded) parameters: per-sample "
            "gradients need every parameter whole on the rank. Run it on an unsharded copy of the "
            "model, or under DDP, where it works on the rank's local batch"
        )


def _run(model, loss_fn, batch, params, batchnorm, check, backend=None):
    _check_options(model, loss_fn, batchnorm, check, backend)
    _check_not_sharded(model, params)
    plist, blocks, B = capture(model, loss_fn, batch, params, batchnorm, check)
    return plist, _merge(plist, blocks), B


def grads(
    model: nn.Module,
    loss_fn: LossFn,
    *batch: Any,
    params: Optional[Sequence[Tensor]] = None,
    batchnorm: str = "error",
    check: bool = False,
) -> List[Tensor]:
    """Per-sample gradients, one tensor (B, *p.shape) per parameter.

    ``loss_fn(model, *batch)`` must return the (B,) per-sample losses; sample i's gradient is that of
    ``loss[i]``. ``batchnorm='frozen'`` runs BatchNorm layers in training mode with running statistics;
    ``check=True`` verifies with a second backward that the loss does not mix samples.
    """
    plist, groups, B = _run(model, loss_fn, batch, params, batchnorm, check)
    out = []
    for p, bs in zip(plist, groups):
        if not bs:
            out.append(torch.zeros(B, *p.shape, dtype=p.dtype, device=p.device))
        else:
            out.append(block_grad(bs[0], p.shape))
    return out


def _ghost_pair(b1: Block, b2: Block) -> bool:
    return (
        isinstance(b1, Factored)
        and isinstance(b2, Factored)
        and use_ghost(b1.a, b1.g, b2.a.shape[0], b2.a.shape[1])
    )


def _mat_dtype(ts: Sequence[Tensor]) -> torch.dtype:
    """GEMM dtype of materialized blocks: float64 if any block is float64, else float32."""
    return torch.float64 if any(t.dtype == torch.float64 for t in ts) else torch.float32


def _gram_of(
    pairs: Sequence[Tuple[Block, Block, Sequence[int]]], b1: int, b2: int, device, backend
) -> Tensor:
    """Sum over layers of the (b1, b2) Gram blocks: the ghost product where cheaper, else a GEMM of
    the layer's materialized per-sample gradients (never all layers' at once)."""
    out = torch.zeros(b1, b2, dtype=torch.float64, device=device)
    small: List[Tuple[Tensor, Tensor]] = []  # materialized blocks of few columns: one GEMM for all
    for x, y, shape in pairs:
        if _ghost_pair(x, y):
            same = x is y
            if backend is None and x.a.shape[1] == 1 and y.a.shape[1] == 1:
                # T = 1 (a Linear on (B, d) inputs): the ghost product is (A Aᵀ) ∘ (G Gᵀ), two
                # GEMMs that the BLAS runs 2-3x faster than the tiled float64 kernel at this shape;
                # float32 GEMMs for float32/16-bit models as for materialized layers, the Hadamard
                # product and the sum over layers in float64.
                ct = _mat_dtype([x.a, x.g, y.a, y.g])
                a1, g1 = x.a[:, 0].to(ct), x.g[:, 0].to(ct)
                a2, g2 = (a1, g1) if same else (y.a[:, 0].to(ct), y.g[:, 0].to(ct))
                out += (a1 @ a2.T).double().mul_((g1 @ g2.T).double())
            else:
                out += ghost_gram(
                    x.a, x.g, None if same else y.a, None if same else y.g, backend=backend
                )
        elif math.prod(shape) <= _SMALL_COLS:
            m1 = block_grad(x, shape).reshape(b1, -1)
            small.append((m1, m1 if x is y else block_grad(y, shape).reshape(b2, -1)))
        else:
            # float32 GEMM for float32/16-bit models (the per-sample gradients are float32 products
            # themselves; it is what vmap + matmul does), float64 otherwise; layers add up in float64.
            m1 = block_grad(x, shape).reshape(b1, -1)
            m2 = m1 if x is y else block_grad(y, shape).reshape(b2, -1)
            ct = _mat_dtype([m1, m2])
            m1c = m1.to(ct)
            m2c = m1c if m2 is m1 else m2.to(ct)
            out += (m1c @ m2c.T).to(torch.float64)
    if small:
        ct = _mat_dtype([m for pair in small for m in pair])
        m1c = torch.cat([m1 for m1, _ in small], 1).to(ct)
        same_all = all(m1 is m2 for m1, m2 in small)
        m2c = m1c if same_all else torch.cat([m2 for _, m2 in small], 1).to(ct)
        out += (m1c @ m2c.T).to(torch.float64)
    return out


# Materialized blocks of at most this many elements per sample (biases, norm affines, small convs)
# are joined into one GEMM: per-layer GEMMs of a few columns cost more in call overhead than in flops.
_SMALL_COLS = 1024


def gram(
    model: nn.Module,
    loss_fn: LossFn,
    *batch: Any,
    params: Optional[Sequence[Tensor]] = None,
    batchnorm: str = "error",
    check: bool = False,
    backend: Optional[str] = None,
) -> Tensor:
    """(B, B) float64 Gram matrix of the per-sample gradients, layer by layer ghost or materialized."""
    plist, groups, B = _run(model, loss_fn, batch, params, batchnorm, check, backend)
    pairs = [(b, b, p.shape) for p, bs in zip(plist, groups) for b in bs]
    return _gram_of(pairs, B, B, plist[0].device, backend)


def cross_gram(
    model: nn.Module,
    loss_fn: LossFn,
    batch_a: Tuple[Any, ...],
    batch_b: Tuple[Any, ...],
    params: Optional[Sequence[Tensor]] = None,
    batchnorm: str = "error",
    backend: Optional[str] = None,
) -> Tensor:
    """(Ba, Bb) float64 inner products between the per-sample gradients of two batches.

    ``batch_a`` and ``batch_b`` are tuples of ``loss_fn``'s batch arguments (``(x,)`` for one).
    """
    for name, b in (("batch_a", batch_a), ("batch_b", batch_b)):
        if not isinstance(b, (tuple, list)):
            raise TypeError(
                f"{name} must be a tuple of loss_fn's batch arguments (e.g. (x,)), got "
                f"{type(b).__name__}"
            )
    plist, ga, Ba = _run(model, loss_fn, batch_a, params, batchnorm, False, backend)
    _, gb, Bb = _run(model, loss_fn, batch_b, plist, batchnorm, False, backend)
    pairs = [(x[0], y[0], p.shape) for p, x, y in zip(plist, ga, gb) if x and y]
    return _gram_of(pairs, Ba, Bb, plist[0].device, backend)


def norms(
    model: nn.Module,
    loss_fn: LossFn,
    *batch: Any,
    params: Optional[Sequence[Tensor]] = None,
    batchnorm: str = "error",
    check: bool = False,
    backend: Optional[str] = None,
) -> Tensor:
    """(B,) float64 per-sample gradient norms."""
    plist, groups, B = _run(model, loss_fn, batch, params, batchnorm, check, backend)
    sq = torch.zeros(B, dtype=torch.float64, device=plist[0].device)
    for p, bs in zip(plist, groups):
        for b in bs:
            if isinstance(b, Factored) and use_ghost(b.a, b.g, B, b.a.shape[1]):
                sq += ghost_gram(b.a, b.g, diag=True, backend=backend)
            else:
                sq += block_grad(b, p.shape).reshape(B, -1).double().pow(2).sum(1)
    return sq.sqrt()


def _check_basis_kind(basis: Any) -> None:
    if not (
        hasattr(basis, "rows")
        or isinstance(basis, Tensor)
        or (isinstance(basis, (list, tuple)) and all(isinstance(r, Tensor) for r in basis))
    ):
        raise TypeError(
            "basis must be a uno.Basis, a (k, P) tensor or a list of (k, *p.shape) tensors, got "
            f"{type(basis).__name__}"
        )


def _basis_rows(basis: Any, plist: List[Tensor]) -> List[Tensor]:
    if hasattr(basis, "rows"):
        rows = list(basis.rows())
    elif isinstance(basis, Tensor):
        rows, o = [], 0
        for p in plist:
            rows.append(basis[:, o : o + p.numel()])
            o += p.numel()
    else:
        rows = [r.reshape(r.shape[0], -1) for r in basis]
    if len(rows) != len(plist) or any(r.shape[1] != p.numel() for r, p in zip(rows, plist)):
        raise ValueError(
            f"basis pieces {[tuple(r.shape) for r in rows]} do not match the parameters "
            f"{[p.numel() for p in plist]}"
        )
    return rows


def coefficients(
    model: nn.Module,
    loss_fn: LossFn,
    *batch: Any,
    basis: Any,
    params: Optional[Sequence[Tensor]] = None,
    batchnorm: str = "error",
    check: bool = False,
) -> Tensor:
    """(B, k) float64 inner products of each per-sample gradient with each basis vector.

    ``basis``: a ``uno.Basis`` (``.rows()``: per-parameter (k, numel) views), a (k, P) tensor, or a
    list of (k, *p.shape) tensors, in parameter order.
    """
    _check_basis_kind(basis)
    plist, groups, B = _run(model, loss_fn, batch, params, batchnorm, check)
    rows = _basis_rows(basis, plist)
    k = rows[0].shape[0]
    out = torch.zeros(B, k, dtype=torch.float64, device=plist[0].device)
    for p, bs, r in zip(plist, groups, rows):
        for b in bs:
            out += block_grad(b, p.shape).reshape(B, -1).double() @ r.double().T
    return out
