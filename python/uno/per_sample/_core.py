"""Hook-based capture of layer inputs and output gradients, and per-layer per-sample products.

One forward records, for every module that owns requested parameters, its inputs and a gradient edge of
its output; one ``torch.autograd.grad`` call returns the output gradients (no parameter gradient is
formed). Each parameter then becomes a *block*:
- factored (Linear, Conv1d/Conv2d via unfold): per-sample grad_i = g_i^T a_i, a (B, T, d), g (B, T, p);
- direct (biases, norm affines, torch.func fallback): the per-sample gradients (B, *shape) themselves.
Gram/norms of factored blocks use the ghost product when 2 T^2 <= p d and it needs fewer flops, else
materialize that one layer's per-sample gradients.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.graph import get_gradient_edge
from torch.overrides import TorchFunctionMode

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


def _check_bn(model: nn.Module, batchnorm: str) -> List[nn.Module]:
    frozen: List[nn.Module] = []
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training:
            if batchnorm == "frozen":
                frozen.append(m)
            else:
                raise ValueError(
                    f"BatchNorm module {name!r} ({type(m).__name__}) is in training mode: it normalises "
                    "with batch statistics, which couples the samples of a batch, so per-sample "
                    "gradients are not defined. Call .eval() on it, or pass batchnorm='frozen' to "
                    "compute with its running statistics."
                )
    return frozen


def capture(
    model: nn.Module,
    loss_fn: Callable[..., Tensor],
    batch: Sequence[Any],
    params: Optional[Sequence[Tensor]],
    batchnorm: str = "error",
    check: bool = False,
) -> Tuple[List[Tensor], List[Block], int]:
    """Run one forward and one backward; return (params, blocks, B)."""
    plist: List[Tensor] = (
        [p for p in model.parameters() if p.requires_grad] if params is None else list(params)
    )
    if not plist:
        raise ValueError("no parameters to differentiate")
    pindex = {id(p): i for i, p in enumerate(plist)}
    frozen = _check_bn(model, batchnorm)
    calls: List[_Call] = []
    handles = []
    owners: Dict[int, List[nn.Module]] = {}
    for m in model.modules():
        for p in m.parameters(recurse=False):
            if id(p) in pindex:
                owners.setdefault(id(p), []).append(m)
    active: List[nn.Module] = []
    outside: Dict[int, str] = {}  # requested params used where no module that owns them is running

    def pre_hook(m: nn.Module, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> None:
        active.append(m)

    def hook(m: nn.Module, args: Tuple[Any, ...], kwargs: Dict[str, Any], out: Any) -> None:
        if active and active[-1] is m:
            active.pop()
        if isinstance(out, Tensor) and out.requires_grad:
            calls.append(_Call(m, args, kwargs, out, get_gradient_edge(out)))

    for m in model.modules():
        if any(id(p) in pindex for p in m.parameters(recurse=False)):
            handles.append(m.register_forward_pre_hook(pre_hook, with_kwargs=True))
            handles.append(m.register_forward_hook(hook, with_kwargs=True))
    for m in frozen:
        m.eval()
    try:
        try:
            with _UseTracker(pindex, owners, active, outside):
                losses = loss_fn(model, *batch)
        finally:
            for h in handles:
                h.remove()
        plist, blocks, B = _finish(plist, pindex, calls, losses, check)
        if outside:
            blocks = _whole_loss_fallback(model, loss_fn, batch, plist, blocks, outside, B)
        return plist, blocks, B
    finally:
        for m in frozen:  # BatchNorm stays in eval mode through the torch.func fallback too
            m.train()


class _UseTracker(TorchFunctionMode):
    """Records requested parameters that enter a differentiable op while none of their owning
    modules is running (used in ``loss_fn`` itself, or by a module that does not own them, as in
    weight tying): the module hooks cannot see those uses."""

    def __init__(
        self,
        pindex: Dict[int, int],
        owners: Dict[int, List[nn.Module]],
        active: List[nn.Module],
        outside: Dict[int, str],
    ) -> None:
        super().__init__()
        self.pindex, self.owners, self.active, self.outside = pindex, owners, active, outside

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        res = out if isinstance(out, (tuple, list)) else (out,)
        if any(isinstance(r, Tensor) and r.requires_grad for r in res):
            for t in _tensors(args, kwargs):
                if id(t) in self.pindex and id(t) not in self.outside:
                    own = self.owners.get(id(t), [])
                    if not any(m in self.active for m in own):
                        self.outside[id(t)] = getattr(func, "__name__", str(func))
        return out


def _tensors(args: Any, kwargs: Dict[str, Any]) -> List[Tensor]:
    out: List[Tensor] = []
    for a in (*args, *kwargs.values()):
        if isinstance(a, Tensor):
            out.append(a)
        elif isinstance(a, (list, tuple)):
            out.extend(x for x in a if isinstance(x, Tensor))
    return out


class _LossModule(nn.Module):
    def __init__(self, model: nn.Module, loss_fn: Callable[..., Tensor]) -> None:
        super().__init__()
        self.m, self.fn = model, loss_fn

    def forward(self, *b: Any) -> Tensor:
        return self.fn(self.m, *b)


def _whole_loss_fallback(
    model: nn.Module,
    loss_fn: Callable[..., Tensor],
    batch: Sequence[Any],
    plist: List[Tensor],
    blocks: List[Block],
    outside: Dict[int, str],
    B: int,
) -> List[Block]:
    """Per-sample gradients of the parameters used outside their modules with
    torch.func.vmap(grad(loss of one sample)) over the whole loss; they replace those parameters'
    hook-based blocks."""
    from torch.func import functional_call, grad, vmap

    names: Dict[int, str] = {}
    for n, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), n)
    missing = [i for i, p in enumerate(plist) if id(p) in outside and id(p) not in names]
    if missing:
        bad = plist[missing[0]]
        raise ValueError(
            f"parameter #{missing[0]} (shape {tuple(bad.shape)}) is used by {outside[id(bad)]!r} "
            "outside any module and is not a parameter of the model, so its per-sample gradient "
            "cannot be computed (neither module hooks nor torch.func.functional_call see it). "
            "Register it on a module of the model, or leave it out of params="
        )
    sel = [i for i, p in enumerate(plist) if id(p) in outside]
    wrap = _LossModule(model, loss_fn)
    prm = {"m." + names[id(plist[i])]: plist[i].detach() for i in sel}
    in_dims = tuple(
        0 if isinstance(t, Tensor) and t.dim() > 0 and t.shape[0] == B else None for t in batch
    )

    def one(pp: Dict[str, Tensor], *xi: Any) -> Tensor:
        xb = tuple(t.unsqueeze(0) if d == 0 else t for t, d in zip(xi, in_dims))
        return functional_call(wrap, pp, xb)[0]

    g = vmap(grad(one), in_dims=(None, *in_dims), randomness="error")(prm, *batch)
    keep = [b for b in blocks if id(plist[b.index]) not in outside]
    return keep + [Direct(i, g["m." + names[id(plist[i])]]) for i in sel]


def _finish(
    plist: List[Tensor], pindex: Dict[int, int], calls: List[_Call], losses: Any, check: bool
) -> Tuple[List[Tensor], List[Block], int]:
    if not isinstance(losses, Tensor) or losses.dim() != 1:
        raise ValueError(
            "loss_fn must return a 1-D tensor of per-sample losses (B,), got "
            f"{getattr(losses, 'shape', type(losses))}; a mean- or sum-reduced loss has no per-sample "
            "structure"
        )
    B = losses.shape[0]
    if B == 0:
        raise ValueError("the batch is empty: loss_fn returned 0 per-sample losses")
    for c in calls:
        if c.out.shape[0] != B:
            raise ValueError(
                f"module {type(c.module).__name__} produced an output with leading dimension "
                f"{c.out.shape[0]}, expected the batch size {B}"
            )
    edges = [c.edge for c in calls]
    grads = torch.autograd.grad(losses.sum(), edges, allow_unused=True, retain_graph=check)
    if check:
        w = torch.rand(B, generator=torch.Generator().manual_seed(0)).to(losses) + 0.5
        wgrads = torch.autograd.grad((losses * w).sum(), edges, allow_unused=True)
        for c, g0, gw in zip(calls, grads, wgrads):
            if g0 is None or gw is None:
                continue
            exp = g0 * w.view(-1, *([1] * (g0.dim() - 1)))
            if not torch.allclose(gw, exp, rtol=1e-3, atol=1e-6 * float(exp.abs().max()) + 1e-12):
                raise ValueError(
                    f"loss_fn mixes samples: the loss of one sample reaches the output of "
                    f"{type(c.module).__name__} for other samples (a batch mean, BatchNorm in training "
                    "mode, attention across the batch...). Per-sample gradients need loss[i] to "
                    "depend on sample i only."
                )
    blocks: List[Block] = []
    for c, go in zip(calls, grads):
        if go is None:
            continue
        blocks.extend(_blocks_for(c, go.detach(), pindex))
    return plist, blocks, B


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
