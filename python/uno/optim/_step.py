"""The step every projected optimizer shares: call grouping, the fused passes, the optimizer base.

:class:`Projected` holds the one ``step`` body of :class:`uno.optim.ProjectedSGD` and
:class:`uno.optim.ProjectedAdam` (closure, this step's basis rows, AMP scalars, the groups' calls, the
fused passes); a subclass says what its groups' kernel calls are (``_group_calls``) and which
hyperparameters it takes. :func:`run` is the driver the classes and the functional forms share.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Dict, List, NamedTuple, Optional, Sequence, Tuple

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
    check_basis_apart,
    check_param,
    check_project,
    check_scalars,
    version_of,
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


class Projected(torch.optim.Optimizer):
    """The base of the projected optimizers: the basis, the projection mode, the mixed-precision
    attributes and the one :meth:`step` body. A subclass sets :attr:`KIND` and
    :attr:`GROUP_DEFAULTS` and implements :meth:`_check_group` and :meth:`_group_calls`."""

    _step_supports_amp_scaling = True  # torch.amp.GradScaler passes grad_scale/found_inf to step
    KIND: ClassVar[int]  # uno._abi.KIND_SGD or KIND_ADAM
    GROUP_DEFAULTS: ClassVar[
        Dict[str, Any]
    ] = {}  # group keys a state_dict of an older torch may lack

    def __init__(
        self,
        params: Any,
        defaults: Dict[str, Any],
        project: str,
        basis: Any,
        write_grad: bool,
        backend: Optional[str],
    ) -> None:
        super().__init__(params, defaults)
        self.project = check_project(project)
        self.write_grad = bool(write_grad)
        self.backend = backend
        self._basis: Any = None
        # (basis, key, restricted basis): see _rows_within
        self._restricted: Optional[Tuple[Any, Tuple[Any, ...], Any]] = None
        if basis is not None:
            self.set_basis(basis)

    def _params(self) -> List[Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    def set_basis(self, basis: Any) -> None:
        """Use ``basis`` from now on (None: plain optimizer steps).

        Args:
            basis: a :class:`uno.Basis` over all the optimizer's parameters, in ``param_groups``
                order (kept by reference: growing it with ``append_`` takes effect at the next step),
                or raw vectors (a list of tensors shaped like the parameters, or a sequence of such
                lists), orthonormalised once here.
        """
        b = as_basis(basis, self._params(), self.backend)
        if b is not None:  # the parameters are written in place: they must not be the basis
            check_basis_apart(b, [(f"parameter {i}", p) for i, p in enumerate(self._params())])
        self._basis = b
        self._restricted = None  # drop the old basis's restricted copy (and its reference)

    @property
    def basis(self) -> Any:
        return self._basis

    def _step_basis_rows(self, basis: Any) -> Tuple[Any, List[Tensor]]:
        b = self._basis if basis is None else as_basis(basis, self._params(), self.backend)
        if b is None:
            return None, []
        return b, basis_rows(b, self._params())

    def _rows_within(
        self, b: Any, rows_all: List[Tensor], updated: Tuple[int, ...]
    ) -> List[Optional[Tensor]]:
        """This step's rows when only the parameters ``updated`` (indices, ascending) have a gradient.

        The basis restricted to those parameters and re-orthonormalised there (the rank rule drops
        directions that vanish on them), so that a step that leaves the other parameters alone is
        still orthogonal to every vector of the full basis. Entries of skipped parameters are None;
        an empty list when the restricted rank is 0 (an unprojected step). The restricted basis is
        cached while the basis (object, rank, buffer and its version counter) and ``updated`` stay.
        """
        if not rows_all or len(updated) == len(rows_all):
            return list(rows_all)
        if not updated:
            return []
        key = (updated, b.k, b.buffer.data_ptr(), version_of(b.buffer))
        cached = self._restricted
        if cached is not None and cached[0] is b and cached[1] == key and key[-1] is not None:
            sub = cached[2]
        else:
            from uno.ops.orthonormalize import orthonormalize

            params = self._params()
            if b.dist is None:
                vecs = [[rows_all[i][j].view(params[i].shape) for i in updated] for j in range(b.k)]
            else:  # DTensors over the local rows: the restricted basis is distributed alike
                shapes, lay = b.shapes, b.dist
                vecs = [
                    [_dist.as_dtensor(rows_all[i][j].view(shapes[i]), lay, i) for i in updated]
                    for j in range(b.k)
                ]
            sub = orthonormalize(vecs, dtype=b.dtype, backend=self.backend)
            self._restricted = (b, key, sub)
        if sub.k == 0:
            return []
        out: List[Optional[Tensor]] = [None] * len(rows_all)
        for i, r in zip(updated, sub.rows()):
            out[i] = r
        return out

    def __setstate__(self, state: Dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            for key, value in self.GROUP_DEFAULTS.items():
                group.setdefault(key, value)

    def _check_group(self, group: Dict[str, Any]) -> None:
        """Raise TypeError/ValueError for a group's bad hyperparameters (per optimizer)."""

    def _group_calls(self, g: StepGroup) -> Tuple[List[Call], NewState]:
        """The kernel calls of one group's parameters that have a gradient, and the state entries
        they create."""
        raise NotImplementedError

    def _must_read_found_inf(self, groups: List[Tuple[Dict[str, Any], List[Tensor]]]) -> bool:
        """Whether this step must read ``found_inf`` on the host (what it builds depends on it)."""
        return False

    @torch.no_grad()
    def step(  # type: ignore[override]
        self,
        closure: Optional[Callable[[], Any]] = None,
        *,
        basis: Any = None,
        grad_scale: Optional[Tensor] = None,
        found_inf: Optional[Tensor] = None,
    ) -> Any:
        """One step. ``basis`` overrides the optimizer's basis for this step only."""
        loss, rows_all, gs, fi, index, groups = self._begin_step(
            closure, basis, grad_scale, found_inf
        )
        if skip_on_host(fi, force=self._must_read_found_inf(groups)):
            return loss
        calls: List[Call] = []
        new_state: NewState = []
        bes: Dict[torch.device, Any] = {}  # the backend per device, resolved once per step
        for group, ps in groups:
            rows = [rows_all[index[id(p)]] for p in ps] if rows_all else []
            flags = mode_flags(self.project, self.write_grad, group["maximize"])
            group_calls, group_state = self._group_calls(
                StepGroup(group, ps, rows, flags, index, bes)
            )
            calls += group_calls
            new_state += group_state
        for p, key, t in new_state:
            self.state[p][key] = t
        run(self.KIND, calls, rank_of(rows_all), self.project, gs, fi)  # Adam: increments steps
        return loss

    def _amp(self, grad_scale: Optional[Tensor], found_inf: Optional[Tensor]):
        gs = grad_scale if grad_scale is not None else getattr(self, "grad_scale", None)
        fi = found_inf if found_inf is not None else getattr(self, "found_inf", None)
        check_scalars(gs, fi)
        return gs, fi

    def _begin_step(
        self,
        closure: Optional[Callable[[], Any]],
        basis: Any,
        grad_scale: Optional[Tensor],
        found_inf: Optional[Tensor],
    ) -> Tuple[Any, List[Any], Any, Any, Dict[int, int], List[Tuple[Dict[str, Any], List[Tensor]]]]:
        """The start every step() shares: the closure, this step's basis rows (restricted to the
        parameters that have a gradient, see :meth:`_rows_within`), the AMP scalars, and the groups'
        parameters that have a gradient (checked against the basis layout)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:  # a scheduler may have changed them since __init__
            self._check_group(group)
        b, rows_all = self._step_basis_rows(basis)
        gs, fi = self._amp(grad_scale, found_inf)
        index = {id(p): i for i, p in enumerate(self._params())}
        groups = []
        for group in self.param_groups:
            ps = [p for p in group["params"] if p.grad is not None]
            for p in ps:
                check_param(p, p.grad, index[id(p)], self.write_grad)
            if ps:
                groups.append((group, ps))
        updated = tuple(sorted(index[id(p)] for _, ps in groups for p in ps))
        if b is not None and self.write_grad:
            grads = [(f"grad {index[id(p)]}", p.grad) for _, ps in groups for p in ps]
            check_basis_apart(b, [(n, g) for n, g in grads if g is not None])
        return loss, self._rows_within(b, rows_all, updated), gs, fi, index, groups
