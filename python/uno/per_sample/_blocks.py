"""Per-sample gradient blocks of one captured module call (see :mod:`uno.per_sample._core`).

A *block* is one parameter's per-sample gradient in the cheapest form its layer allows:
- factored (Linear, Conv1d/Conv2d/ConvTranspose2d via unfold): grad_i = g_i^T a_i, a (B, T, d),
  g (B, T, p);
- direct (biases, norm affines, the torch.func fallback): the per-sample gradients (B, *shape).
Gram/norms of factored blocks use the ghost product when 2 T^2 <= p d and it needs fewer flops
(:func:`use_ghost`), else materialize that one layer's per-sample gradients (:func:`block_grad`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_FAST = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.ConvTranspose2d,
    nn.Embedding,
    nn.LayerNorm,
    nn.GroupNorm,
)


@dataclass
class Factored:
    """per-sample grad_i of params[index] = (g_i^T a_i).reshape(shape)."""

    index: int
    a: Tensor  # (B, T, d)
    g: Tensor  # (B, T, p)


@dataclass
class Direct:
    index: int
    grad: Tensor  # (B, *shape)


Block = Any


@dataclass
class _Call:
    module: nn.Module
    args: Tuple[Any, ...]
    kwargs: Dict[str, Any]
    out: Tensor
    edge: Any


def _blocks_for(c: _Call, go: Tensor, pindex: Dict[int, int]) -> List[Block]:
    m = c.module
    x = c.args[0].detach() if c.args and isinstance(c.args[0], Tensor) else None
    own: List[Tuple[str, Tensor]] = [
        (n, p) for n, p in m.named_parameters(recurse=False) if id(p) in pindex
    ]
    B = go.shape[0]
    out: List[Block] = []
    fast = type(m) in _FAST and not c.kwargs and len(c.args) == 1 and x is not None
    if isinstance(m, nn.Embedding) and (m.scale_grad_by_freq or m.sparse):
        fast = False
    if isinstance(m, nn.ConvTranspose2d) and m.padding_mode != "zeros":  # pragma: no cover
        fast = False  # torch itself only supports zero padding for transposed convolutions
    if not fast or x is None:
        return _fallback(c, go, own, pindex)
    for name, p in own:
        i = pindex[id(p)]
        if isinstance(m, nn.Linear):
            if name == "weight":
                out.append(
                    Factored(i, x.reshape(B, -1, x.shape[-1]), go.reshape(B, -1, go.shape[-1]))
                )
            else:
                out.append(Direct(i, go.reshape(B, -1, go.shape[-1]).sum(1)))
        elif isinstance(m, nn.ConvTranspose2d):
            if name == "weight":
                # dW[ci, (co, kh, kw)] = sum_pos x[ci, pos] * unfold(grad_out)[(co, kh, kw), pos]
                pt: Tuple[int, int] = tuple(m.padding)  # type: ignore[assignment]
                # the patches of grad_out at the input positions (output_padding rows dropped)
                u = _unfold(
                    go,
                    tuple(m.kernel_size),
                    tuple(m.dilation),
                    pt,
                    tuple(m.stride),
                    (x.shape[2], x.shape[3]),
                )
                xs = x.flatten(2)  # (B, C_in, L)
                gr = m.groups
                if gr == 1:
                    out.append(Factored(i, u.transpose(1, 2), xs.transpose(1, 2)))
                else:
                    # grouped: weight (C_in, C_out/groups, kh, kw); group k pairs input channels
                    # [k*cig, (k+1)*cig) with the unfolded output rows of its cog output channels
                    cig, rows = xs.shape[1] // gr, u.shape[1] // gr
                    parts = [
                        torch.bmm(
                            xs[:, k * cig : (k + 1) * cig],
                            u[:, k * rows : (k + 1) * rows].transpose(1, 2),
                        )
                        for k in range(gr)
                    ]
                    out.append(Direct(i, torch.cat(parts, 1)))
            else:
                out.append(Direct(i, go.flatten(2).sum(2)))
        elif isinstance(m, (nn.Conv1d, nn.Conv2d)):
            if name == "weight":
                out.extend(_conv_blocks(m, x, go, i))
            else:
                out.append(Direct(i, go.flatten(2).sum(2)))
        elif isinstance(m, nn.Embedding):
            idx = x.reshape(B, -1)
            gg = go.reshape(B, -1, go.shape[-1])
            if m.padding_idx is not None:
                gg = gg * (idx != m.padding_idx).unsqueeze(-1).to(gg.dtype)
            full = torch.zeros(B * m.num_embeddings, gg.shape[-1], dtype=gg.dtype, device=gg.device)
            off = (
                idx + torch.arange(B, device=idx.device).unsqueeze(1) * m.num_embeddings
            ).reshape(-1)
            full.index_add_(0, off, gg.reshape(-1, gg.shape[-1]))
            out.append(Direct(i, full.view(B, m.num_embeddings, -1)))
        elif isinstance(m, nn.LayerNorm):
            nd = len(m.normalized_shape)
            xh = F.layer_norm(x, m.normalized_shape, None, None, m.eps)
            src = go * xh if name == "weight" else go
            out.append(
                Direct(
                    i,
                    src.reshape(B, -1, *m.normalized_shape).sum(1)
                    if x.dim() > nd + 1
                    else src.reshape(B, *m.normalized_shape),
                )
            )
        elif isinstance(m, nn.GroupNorm):
            xh = F.group_norm(x, m.num_groups, None, None, m.eps)
            src = go * xh if name == "weight" else go
            out.append(Direct(i, src.reshape(B, m.num_channels, -1).sum(2)))
    return out


def _unfold(
    x: Tensor,
    ks: Tuple[int, ...],
    dl: Tuple[int, ...],
    pd: Tuple[int, ...],
    st: Tuple[int, ...],
    limit: Optional[Tuple[int, int]] = None,
) -> Tensor:
    """``F.unfold(x, ks, dl, pd, st)`` (B, C*kh*kw, L) as one strided copy of a zero-copy window view
    (about twice as fast as im2col on CPU); ``limit`` keeps only the first (h, w) output positions."""
    if pd[0] or pd[1]:
        x = F.pad(x, (pd[1], pd[1], pd[0], pd[0]))
    B, C, H, W = x.shape
    ho = (H - dl[0] * (ks[0] - 1) - 1) // st[0] + 1
    wo = (W - dl[1] * (ks[1] - 1) - 1) // st[1] + 1
    if limit is not None:
        ho, wo = min(ho, limit[0]), min(wo, limit[1])
    sb, sc, sh, sw = x.stride()
    v = x.as_strided(
        (B, C, ks[0], ks[1], ho, wo),
        (sb, sc, sh * dl[0], sw * dl[1], sh * st[0], sw * st[1]),
        x.storage_offset(),
    )
    return v.reshape(B, C * ks[0] * ks[1], ho * wo)


def _conv_blocks(m: nn.Module, x: Tensor, go: Tensor, i: int) -> List[Block]:
    assert isinstance(m, (nn.Conv1d, nn.Conv2d))
    one_d = isinstance(m, nn.Conv1d)
    if one_d:
        x, go = x.unsqueeze(2), go.unsqueeze(2)
    ks = (1, *m.kernel_size) if one_d else tuple(m.kernel_size)
    st = (1, *m.stride) if one_d else tuple(m.stride)
    dl = (1, *m.dilation) if one_d else tuple(m.dilation)
    pad = m.padding
    if isinstance(pad, str):
        pads = [0, 0] if pad == "valid" else [d * (k - 1) for k, d in zip(ks, dl)]
        lr: List[int] = []
        for tot in reversed(pads):
            lr += [tot // 2, tot - tot // 2]
        x = F.pad(x, lr)
        pd: Tuple[int, ...] = (0, 0)
    else:
        pd = (0, *pad) if one_d else tuple(pad)
        if m.padding_mode != "zeros":
            lr = []
            for q in reversed(pd):
                lr += [q, q]
            x = F.pad(x, lr, mode=m.padding_mode)
            pd = (0, 0)
    B = x.shape[0]
    u = _unfold(x, ks, dl, pd, st)  # (B, C_in*kk, L)
    gr = m.groups
    g = go.reshape(B, m.out_channels, -1)
    a = u.transpose(1, 2)  # (B, L, C_in*kk)
    cig = u.shape[1] // gr
    cog = m.out_channels // gr
    if gr == 1:
        return [Factored(i, a, g.transpose(1, 2))]
    # grouped: materialize per group (small) and assemble the parameter-shaped gradient
    parts = [
        torch.bmm(g[:, k * cog : (k + 1) * cog], a[:, :, k * cig : (k + 1) * cig])
        for k in range(gr)
    ]
    return [Direct(i, torch.cat(parts, 1))]


def _fallback(c: _Call, go: Tensor, own: List[Tuple[str, Tensor]], pindex: Dict[int, int]):
    """Per-sample vjp of this module alone with torch.func (samples must be independent)."""
    from torch.func import functional_call, vjp, vmap

    m = c.module
    B = go.shape[0]
    names = [n for n, _ in own]
    prm = {n: p.detach() for n, p in own}
    flat_args = list(c.args)
    in_dims = tuple(
        0 if isinstance(t, Tensor) and t.dim() > 0 and t.shape[0] == B else None for t in flat_args
    )
    args = [t.detach() if isinstance(t, Tensor) else t for t in flat_args]
    kwargs = {k: (v.detach() if isinstance(v, Tensor) else v) for k, v in c.kwargs.items()}

    def one(gi: Tensor, *xi: Any) -> Tuple[Tensor, ...]:
        xb = [t.unsqueeze(0) if d == 0 else t for t, d in zip(xi, in_dims)]

        def f(pp: Dict[str, Tensor]) -> Tensor:
            return functional_call(m, pp, tuple(xb), kwargs)

        pull = vjp(f, prm)[1]
        (res,) = pull(gi.unsqueeze(0))
        return tuple(res[n] for n in names)

    outs = vmap(one, in_dims=(0, *in_dims), randomness="error")(go, *args)
    return [Direct(pindex[id(p)], o) for (_, p), o in zip(own, outs)]


def block_grad(b: Block, shape: Sequence[int]) -> Tensor:
    """Per-sample gradients (B, *shape) of one block."""
    if isinstance(b, Direct):
        return b.grad.reshape(b.grad.shape[0], *shape)
    return torch.bmm(b.g.transpose(1, 2), b.a).reshape(b.a.shape[0], *shape)


def use_ghost(a: Tensor, g: Tensor, b2: int, t2: int) -> bool:
    B, T, d = a.shape
    p = g.shape[2]
    ghost_flops = B * b2 * T * t2 * (d + p)
    mat_flops = (B * T + b2 * t2) * d * p + B * b2 * d * p
    return bool(2 * T * t2 <= p * d and ghost_flops <= mat_flops)
