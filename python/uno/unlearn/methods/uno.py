"""``uno``: minimise L = L_r + λ·c², c² = cos²(g_f, g_r), with the fast second-order step.

With a = g_f·g_r, F = ‖g_f‖², R = ‖g_r‖², D = F·R + ε and c² = a²/D,
    ∇c² = H_f·u_f + H_r·u_r,   u_f = (2a/D)(g_r − (a·R/D)·g_f),   u_r = (2a/D)(g_f − (a·F/D)·g_r)
(exact for the ε-guarded c²; with ε = 0 this is docs/method.md §3). The gradients are built once with
``create_graph=True``: ∇ℓ_f, ∇ℓ_r and, with the histogram loss, ∇U ONCE (L_f = ℓ_f + w·U and L_r = ℓ_r + w·U
share U, whose graph decodes the whole monitor batch). The Hessian-vector products are backwards of those
OUTPUTS with ``grad_outputs`` λu_f, λu_r and w·λ(u_f + u_r) (no dot-product graph), and ∇L_r = ∇ℓ_r + w∇U
rides along in the retain half (ℓ_r and U as outputs with grad_outputs 1 and w, as in
``(L_r + λc²).backward()``). No flattening, and no parameter-sized buffer beyond the first-order gradients
and the result: g_f, g_r are summed with ∇U in place and then overwritten with λu_r and λu_f.

Data-parallel (:mod:`uno.unlearn.parallel`): ∇L_f, ∇L_r are summed over the ranks before a, F, R are
formed, each rank backpropagates the global λu_f, λu_r through its own graphs (rank 0 alone through
U's), and the results are summed once more. Under ``--parallel fsdp2`` the sums are reduce-scattered
into shards, a, F, R and the coefficient vectors are formed on the shards, and λu_f, λu_r are
all-gathered whole for the backward.
"""

from __future__ import annotations

import functools
from typing import Any, Optional, Union

import torch
from torch import Tensor
from torch.autograd.graph import GradientEdge, get_gradient_edge

from uno.unlearn import parallel
from uno.unlearn.methods.base import (
    COS2_EPS,
    Method,
    StepInfo,
    grads,
    log,
    loss_parts,
    norms,
    total_loss,
)
from uno.unlearn.methods.registry import register

Output = Union[Tensor, GradientEdge]


@functools.lru_cache(maxsize=1)
def _backward_takes_edges() -> bool:
    """Whether ``torch.autograd.backward`` accepts gradient edges as outputs (recent torch)."""
    x = torch.zeros(1, requires_grad=True)
    try:
        torch.autograd.backward(
            [get_gradient_edge(x * 2)], grad_tensors=[torch.ones(1)], inputs=[x]
        )
    except (TypeError, RuntimeError, AttributeError):
        return False
    return True


def _outputs(ts: list[Tensor]) -> list[Optional[Output]]:
    """The graph outputs among ``ts`` (None where a gradient carries no graph), as gradient edges when
    ``backward`` takes them: an edge taken before the in-place writes below keeps the output's own node.
    (A tensor view written in place gets a regenerated ``AsStridedBackward`` node, which scatters into a
    zero buffer of the base's size.)"""
    edges = _backward_takes_edges()
    return [(get_gradient_edge(t) if edges else t) if t.requires_grad else None for t in ts]


def _values(ts: list[Tensor]) -> list[Tensor]:
    """Writable value tensors of the gradients: their own storage when dense, else a copy."""
    return [t.detach() if t.is_contiguous() else t.detach().contiguous() for t in ts]


def _shares_nodes(a: Tensor, others: list[Tensor]) -> bool:
    """Whether the graph of ``a`` shares a node other than a leaf's ``AccumulateGrad`` with any of
    ``others``'.

    Their Hessian-vector graphs then share nodes too, and the first of the two backwards must keep its
    graph for the second. Separate forwards (ℓ_f, ℓ_r and U in every task here) share none.
    """

    def nodes(t: Tensor) -> set[int]:
        seen: set[int] = set()
        stack = [t.grad_fn]
        while stack:
            n = stack.pop()
            if n is None or id(n) in seen or not hasattr(n, "next_functions"):
                continue
            if type(n).__name__ == "AccumulateGrad":
                continue
            seen.add(id(n))
            stack.extend(f for f, _ in n.next_functions)
        return seen

    mine = nodes(a)
    return any(not mine.isdisjoint(nodes(b)) for b in others)


def _backward_into(
    outs: list[Optional[Output]], gouts: list[Tensor], params: list[Tensor], retain_graph: bool
) -> None:
    """Accumulate ``Σ ⟨outs, gouts⟩``'s gradient into ``p.grad`` (per-parameter transients only)."""
    pairs = [(o, g) for o, g in zip(outs, gouts) if o is not None]
    if pairs:
        # all edges or all tensors (``_outputs`` decides once per torch), never a mix
        roots: Any = [o for o, _ in pairs]
        torch.autograd.backward(
            roots,
            grad_tensors=[g for _, g in pairs],
            inputs=params,
            retain_graph=retain_graph,
        )


def uno_direction(task: Any, lam: float) -> tuple[list[Tensor], StepInfo]:
    """The gradient of ``L_r + λ·c²`` w.r.t. ``task.params`` (fast form).

    Memory: besides the first-order graphs (U's once), the step holds the first-order gradients (which
    become ∇L_f, ∇L_r, then λu_r, λu_f in place) and the result, accumulated in ``p.grad`` by two backwards:
      1. the forget half, ∂⟨∇ℓ_f, λu_f⟩/∂θ = λH_ℓf·u_f; its graph is released (during that backward when
         it shares no node with the retain half's: separate forwards of ℓ_f, ℓ_r and U);
      2. the retain half, ∂(ℓ_r + w·U + ⟨∇ℓ_r, λu_r⟩ + ⟨∇U, w·λ(u_f + u_r)⟩)/∂θ
         = ∇L_r + λ(H_ℓr·u_r + w·H_U·(u_f + u_r)), added in place.
    Each backward holds the transients of its own half only. ``p.grad`` is restored afterwards.
    """
    params = task.params
    lf, lr, u, w = loss_parts(task)
    g_f = grads(lf, params, create_graph=True, retain_graph=True)
    g_r = grads(lr, params, create_graph=True, retain_graph=True)
    g_u = grads(u, params, create_graph=True, retain_graph=True) if u is not None else []
    o_f, o_r, o_u = _outputs(g_f), _outputs(g_r), _outputs(g_u)
    v_f, v_r, v_u = _values(g_f), _values(g_r), _values(g_u)
    del g_f, g_r, g_u
    with torch.no_grad():
        for x, y, z in zip(v_f, v_r, v_u):  # ∇L_f = ∇ℓ_f + w∇U, ∇L_r = ∇ℓ_r + w∇U
            x.add_(z, alpha=w)
            y.add_(z, alpha=w)
    # data-parallel: the global ∇L_f, ∇L_r (the coefficients below need them), then each rank's
    # graph takes the global coefficient vectors and the results are summed at the end
    (v_f, v_r), (loss_f, loss_r) = parallel.sum_grads(
        task, [v_f, v_r], [total_loss(lf, u, w), total_loss(lr, u, w)]
    )  # fsdp2: this rank's shards (the coefficients below are formed on the shards)
    a, f, r = norms(v_f, v_r)
    info = StepInfo(cos2=a * a / (f * r + COS2_EPS), loss_f=loss_f, loss_r=loss_r)
    info.extra.update(a=a, F=f, R=r)
    # the forget half may free its graph as it goes when the retain half needs nothing of it
    keep_forget_graph = _shares_nodes(lf, [lr] if u is None else [lr, u])
    del lf
    if f == 0.0 or r == 0.0 or a == 0.0:
        # ∇c² = 0 exactly here (a = 0); the step is plain retain descent.
        if f == 0.0 or r == 0.0:
            info.zero_norm = True
            log.info("zero-norm gradient (‖g_f‖²=%g, ‖g_r‖²=%g): c² term is 0", f, r)
        return v_r, info
    d = f * r + COS2_EPS
    cf, kf, kr = lam * 2.0 * a / d, a * r / d, a * f / d
    with torch.no_grad():
        for x, y in zip(v_f, v_r):
            uf = torch.add(y, x, alpha=-kf)
            x.add_(y, alpha=-kr).mul_(cf)  # λu_r, in ∇L_f's storage
            y.copy_(uf).mul_(cf)  # λu_f, in ∇L_r's storage
    # fsdp2: the whole coefficient vectors, which each rank backpropagates through its own graph
    v_f, v_r = parallel.whole(task, v_f), parallel.whole(task, v_r)
    with torch.no_grad():
        for x, y, z in zip(v_f, v_r, v_u):  # U's share of both: w·λ(u_f + u_r), in ∇U's storage
            torch.add(x, y, out=z).mul_(w)
    saved = [p.grad for p in params]
    for p in params:
        p.grad = None
    try:
        _backward_into(o_f, v_r, params, retain_graph=keep_forget_graph)
        del o_f  # frees what is left of the forget half's graph
        ones = torch.ones_like(lr)
        scalars = _outputs([lr, u] if u is not None else [lr])
        _backward_into(
            [*scalars, *o_r, *o_u],
            [ones, *([ones * w] if u is not None else []), *v_f, *v_u],
            params,
            retain_graph=False,
        )
        del o_r, o_u, scalars, v_f, v_r, v_u, lr, u
        out = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
        (out,), _ = parallel.sum_grads(task, [out])
    finally:
        for p, g in zip(params, saved):
            p.grad = g
    return out, info


def uno_direction_naive(task: Any, lam: float) -> list[Tensor]:
    """Reference form (for tests only): flatten, build c² and double-backprop ``L_r + λ·c²``."""
    params = task.params
    lf = task.forget_loss()
    lr = task.retain_loss()
    g_f = torch.cat(
        [g.reshape(-1) for g in grads(lf, params, create_graph=True, retain_graph=True)]
    )
    g_r = torch.cat(
        [g.reshape(-1) for g in grads(lr, params, create_graph=True, retain_graph=True)]
    )
    g_f64, g_r64 = g_f.double(), g_r.double()
    c2 = (g_f64 @ g_r64) ** 2 / ((g_f64 @ g_f64) * (g_r64 @ g_r64) + COS2_EPS)
    total = lr + lam * c2.to(lr.dtype)
    return [g.detach() for g in grads(total, params)]


@register("uno", lam=1e3)
class Uno(Method):
    """UNO (λ = 1e3 by default, the paper's value; ``--lam``)."""

    lam: float

    def direction(self, task: Any, step: int) -> tuple[list[Tensor], StepInfo]:
        return uno_direction(task, self.lam)
