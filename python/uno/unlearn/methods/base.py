"""The method interface: one step of an unlearning rule on a :class:`~uno.unlearn.tasks.Task`."""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

import torch
from torch import Tensor

from uno.unlearn import _ops, parallel

log = logging.getLogger("uno.unlearn")

#: ε in c² = a² / (F·R + ε) (the paper has none; it guards zero-norm gradients).
COS2_EPS = 1e-30


@dataclass
class StepInfo:
    """What a step reports besides its update (all floats; NaN when not measured)."""

    cos2: float = float("nan")
    loss_f: float = float("nan")
    loss_r: float = float("nan")
    zero_norm: bool = False
    extra: dict = field(default_factory=dict)


class Method:
    """Base class. A method turns the task's losses into a descent direction for Adam.

    Subclasses implement :meth:`direction`, returning one tensor per parameter: the update direction
    that the optimizer treats as the gradient (so ``-g_f`` means ascent on the forget loss).
    Adding a method = a subclass in its own file + ``@register("name")`` (see ``registry.py``).

    Hyper-parameters: a method declares them with their defaults in :attr:`defaults` (through
    ``@register("name", lam=1e3)``); the constructor
    takes them as keyword arguments (``create("uno", lam=10.0)``) and sets each as an attribute, and
    :meth:`options` picks them from a run configuration (a ``RunConfig`` field of the same name: ``lam``
    of ``uno`` is ``--lam``). A method with its own constructor also gets its keyword parameters taken
    from the configuration.
    """

    name: ClassVar[str] = ""
    #: also register ``<name>-hat`` (histogram loss with weight w_u = 1e3)
    has_hat: ClassVar[bool] = True
    #: whether the step measures cos²(g_f, g_r) itself (else the run loop measures it when monitoring)
    measures_cos2: ClassVar[bool] = True
    #: the method's hyper-parameters and their defaults
    defaults: ClassVar[dict[str, Any]] = {}
    #: where the step's projection acts: None (no projection: ``torch.optim.Adam``), or ``"grad"`` /
    #: ``"update"``, the mode of the ``uno.optim.ProjectedAdam`` that steps the method, with the
    #: basis its :meth:`direction` leaves in :attr:`step_basis` (see :meth:`optimizer`)
    project: ClassVar[Optional[str]] = None
    #: the model kinds the method can unlearn (``RunConfig.validate`` refuses the others before
    #: anything is loaded)
    models: ClassVar[tuple[str, ...]] = ("vae", "gan", "diffusion")

    def __init__(self, hat: bool = False, **hparams: Any) -> None:
        self.hat = hat
        self.hparams = {**self.defaults, **hparams}
        for k in self.defaults:
            setattr(self, k, self.hparams[k])
        #: the basis of the last direction's projection (raw vectors or a ``uno.Basis``; None: none)
        self.step_basis: Any = None

    def optimizer(self, params: list[Tensor], lr: float) -> torch.optim.Optimizer:
        """The optimizer the run loop steps this method with (its state is checkpointed).

        ``torch.optim.Adam`` for a method without a projection; ``uno.optim.ProjectedAdam`` in the
        method's :attr:`project` mode otherwise (the same state layout, so checkpoints read alike).
        """
        if self.project is None:
            return torch.optim.Adam(params, lr=lr)
        from uno.optim import ProjectedAdam

        return ProjectedAdam(params, lr=lr, project=self.project)

    def step(self, opt: torch.optim.Optimizer) -> None:
        """Step ``opt`` (made by :meth:`optimizer`) on the gradients in ``p.grad``: the direction of
        the last :meth:`direction`, projected off :attr:`step_basis` by a projection method."""
        if self.project is None:
            opt.step()
        else:
            opt.step(basis=self.step_basis)  # type: ignore[call-overload]

    def projected(self, d: list[Tensor]) -> list[Tensor]:
        """The gradient a ``project="grad"`` step of the last :meth:`direction` ``d`` feeds Adam:
        ``d`` projected off :attr:`step_basis` (a copy; ``d`` itself for a method without a basis).
        For tests and diagnostics; the run loop leaves this to the optimizer's fused pass."""
        if self.step_basis is None:
            return d
        out = [t.detach().clone() for t in d]
        _ops.project_(out, self.step_basis)
        return out

    @classmethod
    def options(cls, cfg: Any) -> dict[str, Any]:
        """The hyper-parameters ``cfg`` (a ``RunConfig``) sets: those with a field of the same name."""
        names = set(cls.defaults)
        init = inspect.signature(cls.__init__).parameters.values()
        kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        names.update(p.name for p in init if p.kind in kinds and p.name not in ("self", "hat"))
        return {k: getattr(cfg, k) for k in sorted(names) if hasattr(cfg, k)}

    def setup(self, task: Any) -> None:
        """Called once before the first step (and again on resume, before loading the state)."""

    def direction(self, task: Any, step: int) -> tuple[list[Tensor], StepInfo]:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Tensor]:
        """Tensors to checkpoint (method state kept across steps)."""
        return {}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        pass


class OwnLossMethod(Method):
    """A baseline with its own objective (``fu``, ``salun``) instead of ℓ_f and ℓ_r: no ``-hat``
    variant, and cos²(g_f, g_r) is measured by the run loop (the step does not take g_f, g_r)."""

    has_hat = False
    measures_cos2 = False


def grads(loss: Tensor, params: list[Tensor], **kw: Any) -> list[Tensor]:
    """``∇ loss`` w.r.t. ``params`` (zeros for parameters the loss does not reach)."""
    gs = torch.autograd.grad(loss, params, allow_unused=True, **kw)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, gs)]


def norms(g_f: list[Tensor], g_r: list[Tensor]) -> tuple[float, float, float]:
    """``(a, F, R) = (g_f·g_r, ‖g_f‖², ‖g_r‖²)`` as Python floats (float64 accumulation), from one
    pass over both gradients (``uno.dot_norms``)."""
    a, f, r = _ops.dot_norms([t.detach() for t in g_f], [t.detach() for t in g_r]).tolist()
    return a, f, r


def cos2_of(a: float, f: float, r: float) -> float:
    """Guarded squared cosine ``a² / (F·R + ε)``."""
    return a * a / (f * r + COS2_EPS)


def loss_parts(task: Any, hat_sign: float = 1.0) -> tuple[Tensor, Tensor, Optional[Tensor], float]:
    """``(ℓ_f, ℓ_r, U, w)`` with L_f = ℓ_f + hat_sign·w·U and L_r = ℓ_r + w·U.

    The histogram term U is shared by both losses, so a method that needs ∇L_f and ∇L_r can take ∇U once
    instead of backpropagating U's graph (a decode of the whole monitor batch and the judge) twice. The
    draws are those of ``forget_loss()`` then ``retain_loss()``. Without a histogram term (w = 0), or for a
    task that only provides ``forget_loss``/``retain_loss``, U is None and ℓ_f, ℓ_r are the whole losses.
    In a data-parallel run ℓ_f and ℓ_r are this rank's shares, and U (on the replicated monitor codes)
    is taken on rank 0 only (None elsewhere, with w kept), so that the summed gradients count it once.
    """
    w = float(getattr(task, "w_u", 0.0) or 0.0)
    if w and all(hasattr(task, n) for n in ("ell_forget", "ell_retain", "histogram_loss")):
        lf = task.ell_forget()
        u = task.histogram_loss() if parallel.counts_replicated() else None
        return lf, task.ell_retain(), u, w
    return task.forget_loss(u_sign=hat_sign), task.retain_loss(), None, 0.0


def total_loss(ell: Tensor, u: Optional[Tensor], w: float) -> float:
    """The value of ``ℓ + w·U`` (``ℓ`` alone when U is None), for the step's log."""
    return float(ell.detach()) + (w * float(u.detach()) if u is not None else 0.0)


def forget_retain_grads(
    task: Any, hat_sign: float = 1.0
) -> tuple[list[Tensor], list[Tensor], StepInfo]:
    """First-order ``g_f``, ``g_r`` (histogram term with sign ``hat_sign`` in the forget loss, its
    gradient taken once and added to both); summed over the ranks of a data-parallel run (DTensor
    shards under ``--parallel fsdp2``)."""
    lf, lr, u, w = loss_parts(task, hat_sign)
    g_f = grads(lf, task.params, retain_graph=True)
    g_r = grads(lr, task.params, retain_graph=u is not None)
    if u is not None:
        g_u = grads(u, task.params)
        g_f = [torch.add(a, c, alpha=hat_sign * w) for a, c in zip(g_f, g_u)]
        g_r = [torch.add(b, c, alpha=w) for b, c in zip(g_r, g_u)]
        del g_u
    (g_f, g_r), (loss_f, loss_r) = parallel.sum_grads(
        task, [g_f, g_r], [total_loss(lf, u, hat_sign * w), total_loss(lr, u, w)]
    )  # fsdp2: this rank's shards of the sums
    a, f, r = norms(g_f, g_r)
    info = StepInfo(cos2=cos2_of(a, f, r), loss_f=loss_f, loss_r=loss_r)
    info.extra.update(a=a, F=f, R=r)
    if f == 0.0 or r == 0.0:
        info.zero_norm = True
        log.info("zero-norm gradient (‖g_f‖²=%g, ‖g_r‖²=%g): cos² guarded by ε", f, r)
    return g_f, g_r, info


def neg(v: list[Tensor]) -> list[Tensor]:
    return [-t for t in v]


def surgery_direction(
    g_f: list[Tensor], g_r: list[Tensor], info: StepInfo
) -> tuple[list[Tensor], Optional[list[Tensor]]]:
    """``(g_r, [g_f])``: the gradient and the basis whose ``project="grad"`` step descends along
    ``g_r − (g_f·g_r / ‖g_f‖²) g_f`` (always projects; no basis when ``g_f = 0``)."""
    basis = [t.detach() for t in g_f] if info.extra.get("F", 1.0) > 0.0 else None
    return [t.detach() for t in g_r], basis


def maybe_float(x: Optional[Tensor]) -> float:
    return float("nan") if x is None else float(x)
