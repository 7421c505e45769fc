"""Relearning attacks (issue 14; docs/method.md §4b): does a forgotten class come back?

Two attacks, each on a copy of the model (the model given is never changed):

- :func:`retain_finetune`, attack (i): 100 Adam steps (lr 1e-3, batch 128) on retain data only — benign
  fine-tuning with no image of the forgotten class. VAE: the sum-reduced negative ELBO of the retain
  images, BatchNorm running statistics frozen (BatchNorm layers in eval mode, as during unlearning). GAN:
  WGAN-GP fine-tuning of the generator against a copy of the original critic, which is trained along
  (otherwise the retain images would not enter at all): per generator step one critic step on a real retain
  batch (gradient penalty 10, Adam betas (0.5, 0.9) as in pretraining, lr 1e-3 for both), generator
  BatchNorm statistics frozen.
- :func:`forget_finetune`, attack (ii): 10 steps on 64 training images of the forgotten class (VAE:
  their ELBO, the 64 images as one batch; GAN: the same WGAN-GP update with the 64 images as the real
  data, batch 64).

After every step f is measured on the first ``n_step`` fresh codes by both judges (1,000 by default: the
attack's own cost is a few ms per step, 10,000 codes would cost more than the step), and after the last
step on every fresh code. Each attack is seeded (``seed``) with its own generators and runs inside
:func:`torch.random.fork_rng`, so it never changes what the caller's RNG draws next.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import Tensor, nn

from uno.unlearn.evaluation import FreshForget, both
from uno.unlearn.models import set_batchnorm
from uno.unlearn.train import wgan_gp_update

#: Attack (i): retain-only fine-tuning.
RETAIN_STEPS = 100
#: Attack (ii): fine-tuning on a few images of the forgotten class.
FORGET_STEPS, FORGET_IMAGES = 10, 64
#: Fresh codes per attack step (the final measurement uses all of the evaluator's codes).
N_STEP = 1000


@dataclass
class AttackResult:
    """f during one attack: index 0 before the first step, index s after step s."""

    f1: list[float] = field(default_factory=list)  # judge 1, on ``n_step`` fresh codes
    f2: list[float] = field(default_factory=list)  # judge 2 (NaN without one)
    final: tuple[float, float] = (float("nan"), float("nan"))  # after the last step, every code

    @property
    def f(self) -> list[float]:
        """The headline curve: the larger of the two judges' fractions per step."""
        return [both([a, b]) for a, b in zip(self.f1, self.f2)]

    @property
    def f_final(self) -> float:
        """The headline f after the attack, on every fresh code."""
        return both(list(self.final))

    def steps_until(self, threshold: float) -> Optional[int]:
        """First step ``s ≥ 1`` after which f ≥ ``threshold`` (``None``: not within the attack)."""
        return next((s for s, x in enumerate(self.f) if s >= 1 and x >= threshold), None)


def retain_finetune(
    model: nn.Module,
    fresh: FreshForget,
    retain_x: Tensor,
    *,
    critic: Optional[nn.Module] = None,
    steps: int = RETAIN_STEPS,
    lr: float = 1e-3,
    batch: int = 128,
    seed: int = 0,
    n_step: int = N_STEP,
) -> AttackResult:
    """Attack (i) on a copy of ``model`` (a VAE, or a GAN generator when ``critic`` is given).

    Args:
        model: the unlearned (or retrained) model; left unchanged.
        fresh: the fresh-code evaluator (judges 1 and 2).
        retain_x: retain images ``(N, C, H, W)``.
        critic: the original WGAN-GP critic (GAN only; a copy is trained along).
        steps, lr, batch: the attack's budget.
        seed: the attack's seed (batches, noise).
        n_step: fresh codes per step.
    """
    return _attack(model, fresh, retain_x, critic, steps, lr, batch, seed, n_step)


def forget_finetune(
    model: nn.Module,
    fresh: FreshForget,
    forget_x: Tensor,
    *,
    critic: Optional[nn.Module] = None,
    steps: int = FORGET_STEPS,
    n_images: int = FORGET_IMAGES,
    lr: float = 1e-3,
    seed: int = 0,
    n_step: int = N_STEP,
) -> AttackResult:
    """Attack (ii): ``steps`` updates on ``n_images`` training images of the forgotten class (drawn
    without replacement with ``seed``), as one batch. Arguments as in :func:`retain_finetune`."""
    g = torch.Generator().manual_seed(_mix(seed, 2))
    x = forget_x[torch.randperm(len(forget_x), generator=g)[:n_images]]
    return _attack(model, fresh, x, critic, steps, lr, len(x), _mix(seed, 3), n_step, full=True)


def _mix(seed: int, k: int) -> int:
    return (int(seed) * 1_000_033 + 7_777 * k + 5) % (2**63 - 1)


def _attack(
    model: nn.Module,
    fresh: FreshForget,
    x: Tensor,
    critic: Optional[nn.Module],
    steps: int,
    lr: float,
    batch: int,
    seed: int,
    n_step: int,
    full: bool = False,
) -> AttackResult:
    """The shared loop: ``steps`` updates of a copy of ``model`` on batches of ``x`` (``full``: every
    image each step), measured after each."""
    m = copy.deepcopy(model)
    m.requires_grad_(True)
    res = AttackResult()
    n = min(n_step, fresh.n)

    def measure() -> None:
        f = [*fresh(m, n), float("nan")]
        res.f1.append(f[0])
        res.f2.append(f[1])

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_mix(seed, 1))
        g = torch.Generator().manual_seed(_mix(seed, 0))
        opt = torch.optim.Adam(m.parameters(), lr=lr, betas=(0.5, 0.9) if critic else (0.9, 0.999))
        d = copy.deepcopy(critic) if critic is not None else None
        opt_d = torch.optim.Adam(d.parameters(), lr=lr, betas=(0.5, 0.9)) if d else None
        if d is not None:
            d.requires_grad_(True).train()
        measure()
        for _ in range(steps):
            m.train()
            set_batchnorm(m, False)  # frozen running statistics, as during unlearning
            if d is not None and opt_d is not None:
                wgan_gp_update(m, d, (opt, opt_d), x, g, batch=batch, n_critic=1)
            else:
                xb = x if full else x[torch.randint(len(x), (batch,), generator=g)]
                opt.zero_grad(set_to_none=True)
                m.loss(xb).backward()  # type: ignore[operator]
                opt.step()
            measure()
        m.eval()
        res.final = fresh.pair(m)
    return res
