"""``kick``: judge-guided forgetting with a large first move out of the original's basin, then recovery.

Why (docs/durable.md, experiments/durable/why.py): the judge-guided and ascent methods move the model a
short way off the original (‖θ_u − θ_o‖ ≈ 2–3.5 against ‖θ_o‖ ≈ 58 after 10 steps); 100 steps of
retain-only fine-tuning then move it ≈ 11 — three to six times farther — to where the original goes
under that fine-tuning, and the decoder's output layer, re-fitted on the retain digits, draws the
forgotten digit in its latent region again. A model moved far enough stays out: retain-hat run for 300
updates (‖θ_u − θ_o‖ ≈ 18), or for 10 at a 10× learning rate (at a 32 % loss of retain ELBO), keeps
f near 0 through the same attack. ``kick`` tries to make that move early and repair its cost:

* steps 1..``n_kick``: the ``retain-hat`` direction ∇(ℓ_r + w_u·U) (``U`` the histogram loss on the
  monitor batch) with Adam's learning rate multiplied by ``kick`` (the large move);
* later steps: the same direction at the run's learning rate (recovery: the retain ELBO repairs the
  quality the kick cost while U keeps the digit out).

With ``k_retain > 0`` the kick's update is ``uno.optim.ProjectedAdam(project="update")`` off the top-k
principal directions of the step's per-sample retain gradients (``uno.per_sample.principal_directions``:
the Gram and the k weighted sums from one capture of the retain batch), so the large move does not
change the retain batch's losses to first order; BatchNorm statistics must then be frozen (the default). Without the histogram term (the
plain ``kick``, w_u = 0) the forget signal is ascent on the forget ELBO, weight ``ascent``.

Measured (docs/durable.md): durability comes from the run's length; the kick itself adds little over
``retain-hat`` run as long; the projected kick cost 9.7× a ``retain-hat`` update with one capture per
direction (before ``principal_directions``), see docs/durable.md for its cost now.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from uno.unlearn import parallel
from uno.unlearn.errors import UnoUserError
from uno.unlearn.methods.base import Method, StepInfo, grads
from uno.unlearn.methods.registry import register


def retain_directions(task: Any, k: int) -> list[list[Tensor]]:
    """The top-k principal directions of the step's per-sample retain gradients (BatchNorm frozen):
    ``uno.per_sample.principal_directions``, one capture of the retain batch for the Gram and all k
    weighted sums; direction j as a list of parameter-shaped views."""
    from uno import per_sample

    loss_fn, batch = task.retain_per_sample()
    dirs, _ = per_sample.principal_directions(
        task.model, loss_fn, *batch, k=k, params=task.params, batchnorm="frozen"
    )
    return [[d[j] for d in dirs] for j in range(dirs[0].shape[0])]


@register("kick", kick=10.0, n_kick=5, k_retain=0, ascent=1.0)
class Kick(Method):
    """Retain-hat with a ``kick``× learning rate for the first ``n_kick`` steps (module docstring)."""

    kick: float
    n_kick: int
    k_retain: int
    ascent: float
    measures_cos2 = False

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        if self.kick <= 0 or self.n_kick < 0 or self.k_retain < 0:
            raise UnoUserError(
                f"{self.name}: kick must be > 0 and n_kick, k_retain ≥ 0 "
                f"(got kick={self.kick}, n_kick={self.n_kick}, k_retain={self.k_retain})"
            )
        # the projection is an instance choice: without k_retain the step is plain Adam's
        self.project = "update" if self.k_retain > 0 else None  # type: ignore[misc]
        self.base_lr: Optional[float] = None
        self._step = 0

    def optimizer(self, params: list[Tensor], lr: float) -> torch.optim.Optimizer:
        self.base_lr = lr
        return super().optimizer(params, lr)

    def setup(self, task: Any) -> None:
        if self.k_retain > 0 and parallel.current() is not None:
            raise UnoUserError(
                f"{self.name} with k_retain > 0 needs the per-sample Gram of the global retain "
                "batch, which a data-parallel run does not form; run it in one process"
            )
        if self.k_retain > 0 and getattr(task, "bn_train", False):
            raise UnoUserError(
                f"{self.name} with k_retain > 0 needs per-sample retain gradients, which BatchNorm "
                "in train mode (--bn-train) couples; run it with frozen statistics (the default)"
            )

    def kicking(self) -> bool:
        return 1 <= self._step <= self.n_kick

    def direction(self, task: Any, step: int) -> tuple[list[Tensor], StepInfo]:
        self._step = step
        if self.hat:  # retain-hat's loss (ℓ_r + w_u·U), no forget forward
            loss = task.retain_loss()
            values = [float("nan"), float(loss.detach())]
        else:
            lf, lr = task.ell_forget(), task.ell_retain()
            loss = lr - self.ascent * lf
            values = [float(lf.detach()), float(lr.detach())]
        d = [t.detach() for t in grads(loss, task.params)]
        (d,), values = parallel.sum_grads(task, [d], values)  # data-parallel: the global sums
        info = StepInfo(loss_f=values[0], loss_r=values[1])
        info.extra["lr_scale"] = self.kick if self.kicking() else 1.0
        kick_basis = self.k_retain > 0 and self.kicking()
        self.step_basis = retain_directions(task, self.k_retain) if kick_basis else None
        return d, info

    def step(self, opt: torch.optim.Optimizer) -> None:
        """The optimizer's step at ``kick``× the run's learning rate while kicking."""
        base = self.base_lr if self.base_lr is not None else opt.param_groups[0]["lr"]
        for g in opt.param_groups:
            g["lr"] = base * (self.kick if self.kicking() else 1.0)
        try:
            super().step(opt)
        finally:
            for g in opt.param_groups:
                g["lr"] = base
