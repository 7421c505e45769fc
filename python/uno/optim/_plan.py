"""The cached step plan of the projected optimizers on the cpu backend: per-step Python cost O(T) reads.

Building a step's kernel calls (:meth:`uno.optim._step.Projected._group_calls`: the states, their
checks and conversions, the grouping by dtype, the pointer tables) costs a few µs per parameter
tensor, i.e. milliseconds per step for a model of 150 tensors, more than the fused kernels themselves
below a few million parameters. A :class:`StepPlan` keeps what one step built (the calls, their
pointer tables, the basis rows) and the next steps reuse it while nothing it depends on changed.

Validated on every step, in O(T) attribute reads (anything else: the plan is dropped and the step is
built again, which raises the usual errors):

* the optimizer's ``param_groups`` (the group dicts, their parameter lists, which parameters have a
  gradient), ``state`` (the dict, each parameter's state dict and its tensors, by identity),
  ``project``, ``write_grad``, ``backend`` and ``UNO_BACKEND``;
* every parameter's data pointer, shape and dtype (``p.data = ...`` rebuilds);
* the basis: the same object, rank, buffer and layout (and, when the basis is restricted to the
  parameters that have a gradient, the buffer's version counter);
* each group's structure (amsgrad; SGD momentum on/off): the hyperparameters themselves are read and
  checked on every step, as the uncached step does;
* every gradient, each step (a backward pass may allocate new ones): a plain, strided, contiguous
  cpu tensor of its parameter's shape and dtype (else the uncached step runs and says what is wrong).

Plans are only made for plain cpu tensors on the cpu backend, in eager mode (no torch function or
dispatch mode, not compiling), from a step that created no state; everything else takes the
uncached step. Results are bit-identical to the uncached step (the same kernels on the same pieces
in the same order); Adam's step counts are incremented by the kernel's write phase
(``steps_pending``: no ``torch._foreach_add_``, a few µs per tensor) when no counter is shared.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from uno import _abi
from uno._backends._layout import step_kwargs
from uno.ops import library
from uno.optim._calls import Call, increment, skip_on_host, steps_distinct, undo_increment
from uno.optim._checks import check_basis_apart, version_of

if TYPE_CHECKING:  # pragma: no cover
    from uno.optim._step import Projected

_PLAIN = (Tensor, torch.nn.Parameter)
_STRIDED = torch.strided

#: One parameter's state: its state dict (None: none yet) and its (name, value) entries.
StateSig = Tuple[Optional[Dict[str, Any]], Tuple[Tuple[str, Any], ...]]

#: The keyword arguments of ``_C.optim_step_cpu`` that change from step to step (the rest are fixed
#: by the plan's pieces).
_PER_STEP = ("phase", "g_ptrs", "coef_ptr", "grad_scale_ptr", "found_inf_ptr", "hyper", "flags")


class _PlannedCall:
    """One kernel call of a plan: its fixed ``optim_step_cpu`` arguments and where its pieces are."""

    def __init__(self, call: Call, group: int, pos: List[int], kind: int) -> None:
        a = _abi.StepArgs(
            call.params, call.grads, call.s1, call.s2, call.s3, call.steps, call.rows, None, None,
            None, kind, _abi.PHASE_WRITE, call.hyper, call.flags,
        )  # fmt: skip
        kw, _ = step_kwargs(a, torch.device("cpu"))
        for name in _PER_STEP:
            del kw[name]
        self.fixed: Dict[str, Any] = kw
        self.group = group  # index into param_groups: the call's hyperparameters
        self.pos = pos  # positions of its pieces among the plan's pieces
        self.steps = call.steps
        self.rows = call.rows  # keeps the basis rows behind the fixed pointers alive
        # the tensors the write phase changes (their version counters are bumped, as the op does)
        self.written: List[Tensor] = [*call.params, *call.s1, *call.s2, *call.s3, *call.steps]


class StepPlan:
    """What one step of a :class:`~uno.optim._step.Projected` optimizer built, to reuse (module doc).

    Made by :meth:`build` after a step ran the uncached way; :meth:`run` validates and runs a step.
    """

    def __init__(self) -> None:
        self.key: Tuple[Any, ...] = ()
        self.refs: List[Any] = []  # the objects whose ids are in ``key`` (kept alive: no id reuse)
        self.params: List[Tensor] = []  # the parameters that have a gradient, in order
        self.meta: List[Tuple[int, torch.Size, torch.dtype]] = []
        self.states: List[StateSig] = []
        self.state_ids: List[Tuple[Any, ...]] = []
        self.structs: List[Any] = []
        self.calls: List[_PlannedCall] = []
        self.k = 0
        self.basis: Any = None
        self.basis_key: Tuple[Any, ...] = ()
        self.pending = False  # Adam: the kernels increment the step counts

    @classmethod
    def build(
        cls,
        opt: Projected,
        calls: Sequence[Call],
        params: List[Tensor],
        k: int,
        before: List[StateSig],
    ) -> Optional[StepPlan]:
        """The plan of the step that just ran ``calls`` over ``params`` (those with a gradient, in
        order), or None when it cannot be cached: not all plain cpu tensors, or the step created
        or converted state (``before``: :meth:`Projected._state_of` of ``params`` before it)."""
        if not library.direct_ok([]) or any(c.be is None or c.be.NAME != "cpu" for c in calls):
            return None
        if any(c.dist or c.uncounted for c in calls):
            return None
        for c in calls:
            if any(type(t) not in _PLAIN for t in (*c.params, *c.s1, *c.s2, *c.s3, *c.steps)):
                return None
            if any(g is not u for g, u in zip(c.grads, c.user_grads)):
                return None  # a gradient read through a copy: the uncached step handles it
        plan = cls()
        plan.params = params
        plan.states = [opt._state_of(p) for p in params]
        plan.state_ids = _state_ids(plan.states)
        if plan.state_ids != _state_ids(before):
            return None
        position = {id(p): t for t, p in enumerate(params)}
        group_of = {id(p): gi for gi, g in enumerate(opt.param_groups) for p in g["params"]}
        for c in calls:
            pos = [position.get(id(p), -1) for p in c.params]
            if -1 in pos:
                return None
            plan.calls.append(_PlannedCall(c, group_of[id(c.params[0])], pos, opt.KIND))
        plan.meta = [(p.data_ptr(), p.shape, p.dtype) for p in params]
        plan.structs = [opt._group_struct(g) for g in opt.param_groups]
        plan.k = k
        plan.key, plan.refs = _key(opt)
        plan.basis = opt._basis
        plan.basis_key = _basis_key(opt._basis, plan.key[-1])
        plan.pending = any(c.steps for c in calls) and steps_distinct(calls)
        return plan

    def valid(self, opt: Projected) -> bool:
        """Whether the plan still describes ``opt`` (every check of the module docstring but the
        gradients')."""
        key, _ = _key(opt)
        if key != self.key or opt._basis is not self.basis:
            return False
        if _basis_key(self.basis, self.key[-1]) != self.basis_key:
            return False
        if [(p.data_ptr(), p.shape, p.dtype) for p in self.params] != self.meta:
            return False
        if [opt._group_struct(g) for g in opt.param_groups] != self.structs:
            return False
        return self._states_unchanged(opt)

    def _states_unchanged(self, opt: Projected) -> bool:
        """Whether every parameter's state dict is the snapshot's object holding the snapshot's
        entries, by identity (what ``_state_ids`` compares, without building the id tuples: a
        third of a cached step's Python time at 147 tensors)."""
        state = opt.state
        for p, (d, items) in zip(self.params, self.states):
            cur = state.get(p)
            if cur is not d:
                return False
            if d is not None and (
                len(d) != len(items) or any(d.get(n, _MISSING) is not v for n, v in items)
            ):
                return False
        return True

    def grad_ptrs(self) -> Optional[List[int]]:
        """The gradients' data pointers, or None when one is not what the plan's kernels read."""
        out = []
        for p, (_, shape, dtype) in zip(self.params, self.meta):
            g: Any = p.grad
            if (
                type(g) not in _PLAIN
                or g.layout is not _STRIDED
                or not g.is_cpu
                or g.dtype is not dtype
                or not g.is_contiguous()
                or g.shape != shape
            ):
                return None
            out.append(g.data_ptr())
        return out

    def run(
        self, opt: Projected, grad_scale: Optional[Tensor], found_inf: Optional[Tensor]
    ) -> bool:
        """One step through the plan; False (nothing done) when the plan does not apply."""
        if not library.direct_ok([]) or not self.valid(opt):
            return False
        g_ptrs = self.grad_ptrs()
        if g_ptrs is None:
            return False
        grads: List[Tensor] = [p.grad for p in self.params]  # type: ignore[misc]  # checked above
        if opt.write_grad and self.basis is not None:
            check_basis_apart(self.basis, [(f"grad {t}", g) for t, g in enumerate(grads)])
        if skip_on_host(found_inf, force=False):
            return True
        from uno._backends._layout import ptr, scalar32
        from uno._backends.cpu import _kernel, _threads

        fn = _kernel("optim_step_cpu")
        cpu = torch.device("cpu")
        gs32, fi32 = scalar32(grad_scale, cpu), scalar32(found_inf, cpu)
        per = [opt._group_hyper(opt.param_groups[c.group]) for c in self.calls]
        th = _threads()
        if not self.pending:
            increment([s for c in self.calls for s in c.steps])
        common = dict(grad_scale_ptr=ptr(gs32), found_inf_ptr=ptr(fi32), num_threads=th)
        coef: Optional[Tensor] = None
        if self.k > 0:
            phase = _abi.PHASE_GRAD_COEF if opt.project == "grad" else _abi.PHASE_UPDATE_COEF
            for c, (hyper, flags) in zip(self.calls, per):
                out = torch.zeros(self.k, dtype=torch.float64)
                fn(**c.fixed, **common, phase=phase, g_ptrs=[g_ptrs[t] for t in c.pos],
                   coef_ptr=0, hyper=hyper, flags=flags, out_ptr=int(out.data_ptr()),
                   steps_pending=self.pending)  # fmt: skip
                coef = out if coef is None else coef + out
        for c, (hyper, flags) in zip(self.calls, per):
            fn(**c.fixed, **common, phase=_abi.PHASE_WRITE, g_ptrs=[g_ptrs[t] for t in c.pos],
               coef_ptr=ptr(coef), hyper=hyper, flags=flags, out_ptr=0,
               steps_pending=self.pending)  # fmt: skip
        library.bump_versions([t for c in self.calls for t in c.written] + grads)
        if not self.pending:  # a device found_inf: a skipped step takes the counts back
            undo_increment([s for c in self.calls for s in c.steps], found_inf)
        return True


_MISSING = object()


def _basis_key(b: Any, restricted: bool) -> Tuple[Any, ...]:
    """What the basis rows of a step depend on (the content too when they are a restricted copy)."""
    if b is None:
        return ()
    buf = b.buffer
    key = (b.k, buf.data_ptr(), buf.shape, buf.stride(), buf.dtype)
    return (*key, version_of(buf)) if restricted else key


def _state_ids(sigs: List[StateSig]) -> List[Tuple[Any, ...]]:
    """State snapshots by identity (dicts, keys, values): the plan keeps its snapshot's objects
    alive, so an equal id is the same object."""
    return [(id(d), tuple(n for n, _ in ts), tuple(id(v) for _, v in ts)) for d, ts in sigs]


def _key(opt: Projected) -> Tuple[Tuple[Any, ...], List[Any]]:
    """The identity part of a plan's key: groups, parameter lists, which have a gradient, modes."""
    groups = opt.param_groups
    refs: List[Any] = [groups, opt.state, *groups]
    ids = [id(groups), id(opt.state)]
    for g in groups:
        ps = g["params"]
        refs.append(ps)
        ids += [id(g), id(ps), len(ps)]
        ids += [id(p) if p.grad is not None else -1 for p in ps]
    restricted = any(i == -1 for i in ids)
    key = (
        tuple(ids), opt.project, opt.write_grad, opt.backend, os.environ.get("UNO_BACKEND"),
        restricted,
    )  # fmt: skip
    return key, refs
