"""Hook-based capture of layer inputs and output gradients; the blocks are built in ``_blocks.py``.

One forward records, for every module that owns requested parameters, its inputs and a gradient edge of
its output; one ``torch.autograd.grad`` call returns the output gradients (no parameter gradient is
formed). Each parameter then becomes a *block*:
- factored (Linear, Conv1d/Conv2d via unfold): per-sample grad_i = g_i^T a_i, a (B, T, d), g (B, T, p);
- direct (biases, norm affines, torch.func fallback): the per-sample gradients (B, *shape) themselves.
Gram/norms of factored blocks use the ghost product when 2 T^2 <= p d and it needs fewer flops, else
materialize that one layer's per-sample gradients.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.autograd.graph import get_gradient_edge
from torch.overrides import TorchFunctionMode

from uno.per_sample._blocks import Block, Direct, _blocks_for, _Call


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
