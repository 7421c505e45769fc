"""The fused step's plumbing: kernel calls grouped by dtype/device/kind, their passes, the driver.

:func:`run` runs one step's :class:`Call` list (the coefficient pass, the cross-piece reduction —
over the mesh for DTensor shards — and the write pass) for :class:`uno.optim._step.Projected` and
for the functional forms :func:`uno.optim.project_sgd_` / :func:`uno.optim.project_adam_`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import Tensor

from uno import _abi, _backends
from uno._abi import (
    FLAG_MAXIMIZE,
    FLAG_PROJECT_UPDATE,
    FLAG_WRITE_GRAD,
    KIND_ADAM,
    PHASE_GRAD_COEF,
    PHASE_UPDATE_COEF,
    PHASE_WRITE,
    StepArgs,
)
from uno.ops import _dist, library
from uno.optim._checks import (
    as_basis,
    basis_rows,
)

_PLAIN = _dist._PLAIN


@dataclass
class Call:
    """One kernel call: pieces of equal dtype (and momentum-buffer age) with shared hyperparameters."""

    params: List[Tensor] = field(default_factory=list)
    grads: List[Tensor] = field(default_factory=list)
    user_grads: List[Tensor] = field(default_factory=list)  # to write back non-contiguous grads
    s1: List[Tensor] = field(default_factory=list)
    s2: List[Tensor] = field(default_factory=list)
    s3: List[Tensor] = field(default_factory=list)
    steps: List[Tensor] = field(default_factory=list)
    rows: List[Tensor] = field(default_factory=list)
    hyper: List[float] = field(default_factory=list)
    flags: int = 0
    be: Any = None  # the backend module (uno._backends) of the call's device
    # DTensor parameters (FSDP2): the pieces above are the local shards; the coefficients are summed
    # over ``group``; ``uncounted`` are the positions of replicated copies another rank counts.
    dist: bool = False
    group: Any = None
    uncounted: List[int] = field(default_factory=list)


def flat_view(t: Tensor, flat: bool = True) -> Tensor:
    if type(t) not in _PLAIN:
        t = _dist.local(t)  # a DTensor state: its local shard
    if not flat and t.is_contiguous():
        return t
    return t.view(-1) if t.is_contiguous() else t.reshape(-1)


def backend_of(bes: Dict[torch.device, Any], backend: Optional[str], device: torch.device) -> Any:
    """The backend module for ``device``, resolved once per step and device (memo ``bes``)."""
    be = bes.get(device)
    if be is None:
        be = bes[device] = _backends.get(backend, device)
    return be


def needs_flat(be: Any) -> bool:
    """Whether the pieces must be 1-D views: the cpu and cuda kernels only read data pointers and
    sizes of contiguous tensors, so they skip the views (a few µs per tensor per step)."""
    return be.NAME not in ("cpu", "cuda")


def group_key(p: Tensor, s: Optional[Tensor], extra: Any = None) -> Tuple[Any, ...]:
    return (p.device, p.dtype, None if s is None else s.dtype, extra)


def add_piece(c: Call, p: Tensor, g: Tensor, rows: List[Tensor], i: int, flat: bool) -> None:
    if type(p) not in _PLAIN and _dist.is_dtensor(p):  # FSDP2: step the local shard
        if not _dist.counts_here(p):
            c.uncounted.append(len(c.params))
        if not c.dist:  # the call's pieces share one mesh (checked with the basis)
            c.dist, c.group = True, _dist.group_of(p.device_mesh)  # type: ignore[attr-defined]
        p, g = _dist.local(p), _dist.local(g)
    c.params.append(p.view(-1) if flat else p)
    c.user_grads.append(g)
    if g.is_contiguous():
        c.grads.append(g.view(-1) if flat else g)
    else:
        c.grads.append(g.contiguous().view(-1))
    if rows:
        c.rows.append(rows[i])


def run(
    kind: int,
    calls: Sequence[Call],
    k: int,
    project: str,
    grad_scale: Optional[Tensor],
    found_inf: Optional[Tensor],
) -> None:
    """The fused step: (with a basis) one coefficient pass over every call, then one write pass each.

    Adam's step counts are incremented here: by the kernels themselves for calls that run on the
    cuda backend (``FLAG_STEPS_PENDING``: no extra launch, and a skipped step leaves them alone),
    else by ``torch._foreach_add_`` before the passes (taken back on the device afterwards when
    ``found_inf`` is a device tensor, see :func:`undo_increment`).
    """
    calls = [c for c in calls if c.params]
    if not calls:
        return
    torch_steps: List[Tensor] = []
    if kind == KIND_ADAM:
        in_kernel = steps_distinct(calls)
        for c in calls:
            if in_kernel and c.be.NAME == "cuda":
                c.flags |= _abi.FLAG_STEPS_PENDING
            else:
                torch_steps += c.steps
        increment(torch_steps)
    coef: Optional[Tensor] = None
    if k > 0:
        phase = PHASE_GRAD_COEF if project == "grad" else PHASE_UPDATE_COEF
        for c in calls:
            cc = counted_part(c)
            if cc.params:
                part = call_phase(cc, None, grad_scale, found_inf, kind, phase)
            else:  # every piece of the call is another rank's to count
                part = torch.zeros(k, dtype=torch.float64, device=c.params[0].device)
            coef = part if coef is None else coef + part
        if calls[0].dist and coef is not None:  # the one collective of a step: k float64 sums
            coef = _dist.all_reduce(coef, calls[0].group)
    for c in calls:
        call_phase(c, coef, grad_scale, found_inf, kind, PHASE_WRITE)
        if c.flags & FLAG_WRITE_GRAD:
            for ug, g in zip(c.user_grads, c.grads):
                if ug.data_ptr() != g.data_ptr() or not ug.is_contiguous():
                    ug.copy_(g.view(ug.shape))
    if kind == KIND_ADAM:
        undo_increment(torch_steps, found_inf)


def counted_part(c: Call) -> Call:
    """The pieces of ``c`` this rank counts in the coefficients (all but replicated copies that
    another rank counts); the coefficient phases only read, so a filtered call is safe."""
    if not c.uncounted:
        return c
    skip = set(c.uncounted)
    keep = [t for t in range(len(c.params)) if t not in skip]
    pick = lambda xs: [xs[t] for t in keep] if xs else xs  # noqa: E731
    return Call(
        pick(c.params), pick(c.grads), pick(c.user_grads), pick(c.s1), pick(c.s2), pick(c.s3),
        pick(c.steps), pick(c.rows), c.hyper, c.flags, c.be,
    )  # fmt: skip


def call_phase(
    c: Call,
    coef: Optional[Tensor],
    grad_scale: Optional[Tensor],
    found_inf: Optional[Tensor],
    kind: int,
    phase: int,
) -> Tensor:
    """One phase of one call (``uno::optim_step``, or its body on a plain eager call)."""
    a = StepArgs(
        c.params, c.grads, c.s1, c.s2, c.s3, c.steps, c.rows, coef, grad_scale, found_inf, kind,
        phase, c.hyper, c.flags,
    )  # fmt: skip
    return library.optim_step(a, c.be)


def steps_distinct(calls: Sequence[Call]) -> bool:
    """True when no step counter appears twice (the kernels store each counter once per step)."""
    ptrs = [s.data_ptr() for c in calls for s in c.steps]
    return len(set(ptrs)) == len(ptrs)


def skip_on_host(found_inf: Optional[Tensor], force: bool) -> bool:
    """True when found_inf says skip and may be read without a device sync (CPU), or must be read."""
    if found_inf is None:
        return False
    if found_inf.device.type == "cpu" or force:
        return bool(found_inf.item() != 0)
    return False


def increment(steps: List[Tensor]) -> None:
    if steps:
        torch._foreach_add_(steps, 1.0)


def undo_increment(steps: List[Tensor], found_inf: Optional[Tensor]) -> None:
    """Device-side: a skipped step (found_inf != 0, known only on the device) takes back the count."""
    if found_inf is None or not steps or found_inf.device.type == "cpu":
        return
    by_dev: Dict[torch.device, List[Tensor]] = {}
    for s in steps:
        by_dev.setdefault(s.device, []).append(s)
    for dev, ss in by_dev.items():
        fi = found_inf.to(device=dev, dtype=torch.float32).reshape(())
        torch._foreach_sub_(ss, [fi] * len(ss))


def mode_flags(project: str, write_grad: bool, maximize: bool) -> int:
    return (
        (FLAG_PROJECT_UPDATE if project == "update" else 0)
        | (FLAG_WRITE_GRAD if write_grad else 0)
        | (FLAG_MAXIMIZE if maximize else 0)
    )


def resolve_rows(basis: Any, params: Sequence[Tensor], backend: Optional[str]) -> List[Tensor]:
    b = as_basis(basis, params, backend)
    return [] if b is None else basis_rows(b, params)


def rank_of(rows: Sequence[Optional[Tensor]]) -> int:
    """k of a step's rows (entries of parameters without a gradient are None)."""
    return next((int(r.shape[0]) for r in rows if r is not None), 0)


#: The state entries one group's calls make: (parameter, state key, tensor), stored into
#: ``optimizer.state`` once every group's calls are built (nothing is stored when one fails).
NewState = List[Tuple[Tensor, str, Tensor]]


class StepGroup(NamedTuple):
    """One parameter group of a step, as :meth:`Projected._group_calls` sees it."""

    group: Dict[str, Any]  # the param_group (its hyperparameters)
    ps: List[Tensor]  # its parameters that have a gradient
    rows: List[Tensor]  # their basis rows (empty without a basis)
    flags: int  # the mode flags (uno._abi.FLAG_*)
    position: Dict[int, int]  # id(parameter) -> position among all the optimizer's parameters
    bes: Dict[torch.device, Any]  # the backend module per device, resolved once per step
