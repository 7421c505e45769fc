"""The step every projected optimizer shares: the optimizer base and its one ``step`` body.

:class:`Projected` holds the one ``step`` body of :class:`uno.optim.ProjectedSGD` and
:class:`uno.optim.ProjectedAdam` (closure, this step's basis rows, AMP scalars, the groups' calls, the
fused passes); a subclass says what its groups' kernel calls are (``_group_calls``) and which
hyperparameters it takes. :func:`uno.optim._calls.run` is the driver the classes and the functional forms share.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Dict, List, Optional, Tuple

import torch
from torch import Tensor

from uno.ops import _dist
from uno.optim._calls import (
    Call,
    NewState,
    StepGroup,
    mode_flags,
    rank_of,
    run,
    skip_on_host,
)
from uno.optim._checks import (
    as_basis,
    basis_rows,
    check_basis_apart,
    check_param,
    check_project,
    check_scalars,
    version_of,
)
from uno.optim._plan import StateSig, StepPlan


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
        self._plan: Optional[StepPlan] = None  # the cached step (uno.optim._plan)
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
        self._plan = None  # and the cached step holding its rows

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
        # load_state_dict comes here: drop the cached step, which holds the old states alive
        self._plan = None
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

    def _group_hyper(self, group: Dict[str, Any]) -> Tuple[List[float], int]:
        """A group's kernel hyperparameters and flags (what :meth:`_group_calls` passes), for a cached
        step (:mod:`uno.optim._plan`)."""
        raise NotImplementedError

    def _group_struct(self, group: Dict[str, Any]) -> Any:
        """The group options that change which kernel calls and states a step has (a cached step is
        rebuilt when they change)."""
        raise NotImplementedError

    def _state_of(self, p: Tensor) -> StateSig:
        """``p``'s state dict and its entries (the identity a cached step checks)."""
        d = self.state.get(p)
        return (d, tuple(d.items()) if d is not None else ())

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
        """One step. ``basis`` overrides the optimizer's basis for this step only.

        A step without ``basis`` reuses what the previous one built while nothing it depends on changed
        (:mod:`uno.optim._plan`; cpu backend): the same kernels on the same pieces, bit-identical.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:  # a scheduler may have changed them since __init__
            self._check_group(group)
        gs, fi = self._amp(grad_scale, found_inf)
        plan = getattr(self, "_plan", None)  # (absent on an optimizer unpickled from an older one)
        if basis is None and plan is not None:
            if plan.run(self, gs, fi):
                return loss
            self._plan = None
        rows_all, index, groups = self._begin_step(basis)
        if skip_on_host(fi, force=self._must_read_found_inf(groups)):
            return loss
        stepped = [p for _, ps in groups for p in ps]
        before = [self._state_of(p) for p in stepped]
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
        k = rank_of(rows_all)
        run(self.KIND, calls, k, self.project, gs, fi)  # Adam: increments steps
        if basis is None:  # cached unless the step made or converted state (compared with `before`)
            self._plan = StepPlan.build(self, [c for c in calls if c.params], stepped, k, before)
        return loss

    def _amp(self, grad_scale: Optional[Tensor], found_inf: Optional[Tensor]):
        gs = grad_scale if grad_scale is not None else getattr(self, "grad_scale", None)
        fi = found_inf if found_inf is not None else getattr(self, "found_inf", None)
        check_scalars(gs, fi)
        return gs, fi

    def _begin_step(
        self, basis: Any
    ) -> Tuple[List[Any], Dict[int, int], List[Tuple[Dict[str, Any], List[Tensor]]]]:
        """The start of an uncached step: this step's basis rows (restricted to the parameters that
        have a gradient, see :meth:`_rows_within`), the parameters' positions, and the groups'
        parameters that have a gradient (checked against the basis layout)."""
        b, rows_all = self._step_basis_rows(basis)
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
        return self._rows_within(b, rows_all, updated), index, groups
