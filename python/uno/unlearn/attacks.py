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

After every step (every ``every``-th with that option) f is measured on the first ``n_step`` fresh codes
by both judges (1,000 by default: the attack's own cost is a few ms per step, 10,000 codes would cost
more than the step), and after the last step on every fresh code.

Any other model fine-tunes with the ``loss`` given (``loss(model, *batch)``, a scalar): the data is then
a tensor or a tuple of row-aligned tensors (e.g. images and labels), and a batch is the same rows of
each. The class-conditional diffusion model passes its labelled denoising loss
(:func:`uno.unlearn.diffusion.evaluate.attack_loss`); without ``loss`` a VAE's ``model.loss(x)``.

Each attack is seeded (``seed``) with its own generators and runs inside
:func:`torch.random.fork_rng`, so it never changes what the caller's RNG draws next.

Two hooks for studying *where* a class comes back (``experiments/durable/why.py``): ``params`` names the
only parameters an attack may change (the others keep their values; the optimizer sees only those), and
the result keeps the attacked copy (:attr:`AttackResult.model`, eval mode) for distances and further
measures.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Optional, Sequence, TypedDict, Union

import torch
from torch import Tensor, nn

from uno.unlearn.evaluation import FreshForget, both
from uno.unlearn.models import set_batchnorm
from uno.unlearn.train import wgan_gp_update

if TYPE_CHECKING:
    from typing_extensions import Unpack

#: Attack (i): retain-only fine-tuning.
RETAIN_STEPS = 100
#: Attack (ii): fine-tuning on a few images of the forgotten class.
FORGET_STEPS, FORGET_IMAGES = 10, 64
#: Fresh codes per attack step (the final measurement uses all of the evaluator's codes).
N_STEP = 1000

#: An attack's data: images, or row-aligned tensors (images, labels, ...) for a ``loss``.
Data = Union[Tensor, tuple[Tensor, ...]]
#: ``loss(model, *batch)``: the fine-tuning loss of a batch (rows of :data:`Data`).
Loss = Callable[..., Tensor]


@dataclass
class AttackResult:
    """f during one attack: index 0 before the first step, index s after step s."""

    f1: list[float] = field(default_factory=list)  # judge 1, on ``n_step`` fresh codes
    f2: list[float] = field(default_factory=list)  # judge 2 (NaN without one)
    final: tuple[float, float] = (float("nan"), float("nan"))  # after the last step, every code
    at: list[int] = field(default_factory=list)  # the step of each entry (0, 1, ... with every=1)
    model: Optional[nn.Module] = None  # the attacked copy after the last step (eval mode)

    @property
    def f(self) -> list[float]:
        """The headline curve: the larger of the two judges' fractions per step."""
        return [both([a, b]) for a, b in zip(self.f1, self.f2)]

    @property
    def f_final(self) -> float:
        """The headline f after the attack, on every fresh code."""
        return both(list(self.final))

    def steps_until(self, threshold: float) -> Optional[int]:
        """First measured step ``s ≥ 1`` after which f ≥ ``threshold`` (``None``: not within the attack)."""
        return next((s for s, x in zip(self.at, self.f) if s >= 1 and x >= threshold), None)


class AttackOptions(TypedDict, total=False):
    """Keyword options of both attacks."""

    steps: int  # attack (i) 100, attack (ii) 10
    lr: float  # Adam's, 1e-3
    batch: int  # attack (i) 128 (attack (ii) uses its images as one batch)
    seed: int  # the attack's batches and noise, 0
    n_step: int  # fresh codes per step, 1,000
    every: int  # f measured after every every-th step (and the last), 1
    loss: Loss  # the fine-tuning loss (default: the VAE's model.loss; not with a critic)
    params: Sequence[str]  # names of the only parameters the attack may change (default: all)


def retain_finetune(
    model: nn.Module,
    fresh: FreshForget,
    retain_x: Data,
    *,
    critic: Optional[nn.Module] = None,
    **opts: Unpack[AttackOptions],
) -> AttackResult:
    """Attack (i) on a copy of ``model`` (a VAE, or a GAN generator when ``critic`` is given).

    Args:
        model: the unlearned (or retrained) model; left unchanged.
        fresh: the fresh-code evaluator (judges 1 and 2).
        retain_x: retain images ``(N, C, H, W)`` (with ``loss``: a tuple, e.g. images and labels).
        critic: the WGAN-GP critic (GAN only; a copy is trained along).
        **opts: :class:`AttackOptions` (the attack's budget, seed and codes per step).
    """
    return _attack(
        model, fresh, retain_x, critic, opts.get("steps", RETAIN_STEPS), opts.get("lr", 1e-3),
        opts.get("batch", 128), opts.get("seed", 0), opts.get("n_step", N_STEP),
        loss=opts.get("loss"), every=opts.get("every", 1), params=opts.get("params"),
    )  # fmt: skip


def forget_finetune(
    model: nn.Module,
    fresh: FreshForget,
    forget_x: Data,
    *,
    critic: Optional[nn.Module] = None,
    n_images: int = FORGET_IMAGES,
    **opts: Unpack[AttackOptions],
) -> AttackResult:
    """Attack (ii): ``steps`` (10) updates on ``n_images`` training images of the forgotten class (drawn
    without replacement with ``seed``), as one batch. Arguments as in :func:`retain_finetune`."""
    seed = opts.get("seed", 0)
    g = torch.Generator().manual_seed(_mix(seed, 2))
    x = _rows(forget_x, torch.randperm(_len(forget_x), generator=g)[:n_images])
    steps, lr, n = opts.get("steps", FORGET_STEPS), opts.get("lr", 1e-3), opts.get("n_step", N_STEP)
    return _attack(model, fresh, x, critic, steps, lr, _len(x), _mix(seed, 3), n, full=True,
                   loss=opts.get("loss"), every=opts.get("every", 1),
                   params=opts.get("params"))  # fmt: skip


def _len(x: Data) -> int:
    return len(x[0]) if isinstance(x, tuple) else len(x)


def _rows(x: Data, idx: Tensor) -> Data:
    return tuple(t[idx] for t in x) if isinstance(x, tuple) else x[idx]


def _vae_loss(model: nn.Module, x: Tensor) -> Tensor:
    return model.loss(x)  # type: ignore[operator, no-any-return]


def _mix(seed: int, k: int) -> int:
    return (int(seed) * 1_000_033 + 7_777 * k + 5) % (2**63 - 1)


def _attack(
    model: nn.Module,
    fresh: FreshForget,
    x: Data,
    critic: Optional[nn.Module],
    steps: int,
    lr: float,
    batch: int,
    seed: int,
    n_step: int,
    full: bool = False,
    loss: Optional[Loss] = None,
    every: int = 1,
    params: Optional[Sequence[str]] = None,
) -> AttackResult:
    """The shared loop: ``steps`` updates of a copy of ``model`` on batches of ``x`` (``full``: every
    image each step) with ``loss`` (default: the VAE's), measured after every ``every``-th; only the
    parameters named in ``params`` change (default: all)."""
    if critic is not None and (loss is not None or isinstance(x, tuple)):
        raise ValueError("a GAN attack (critic given) trains WGAN-GP on images: no loss, no labels")
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    step_loss = _vae_loss if loss is None else loss
    m = copy.deepcopy(model)
    m.requires_grad_(True)
    trained = _trained(m, params)
    res = AttackResult()
    n = min(n_step, fresh.n)

    def measure(step: int) -> None:
        f = [*fresh(m, n), float("nan")]
        res.f1.append(f[0])
        res.f2.append(f[1])
        res.at.append(step)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_mix(seed, 1))
        g = torch.Generator().manual_seed(_mix(seed, 0))
        opt = torch.optim.Adam(trained, lr=lr, betas=(0.5, 0.9) if critic else (0.9, 0.999))
        d = copy.deepcopy(critic) if critic is not None else None
        opt_d = torch.optim.Adam(d.parameters(), lr=lr, betas=(0.5, 0.9)) if d else None
        if d is not None:
            d.requires_grad_(True).train()
        measure(0)
        for step in range(1, steps + 1):
            m.train()
            set_batchnorm(m, False)  # frozen running statistics, as during unlearning
            if d is not None and opt_d is not None:
                wgan_gp_update(m, d, (opt, opt_d), x, g, batch=batch, n_critic=1)  # type: ignore[arg-type]
            else:
                xb = x if full else _rows(x, torch.randint(_len(x), (batch,), generator=g))
                opt.zero_grad(set_to_none=True)
                step_loss(m, *(xb if isinstance(xb, tuple) else (xb,))).backward()
                opt.step()
            if step % every == 0 or step == steps:
                measure(step)
        m.eval()
        res.final = fresh.pair(m)
    m.requires_grad_(True)
    res.model = m
    return res


def _trained(m: nn.Module, params: Optional[Sequence[str]]) -> list[nn.Parameter]:
    """The parameters of ``m`` an attack updates (``params``: their names; the rest are frozen)."""
    named = dict(m.named_parameters())
    if params is None:
        return list(named.values())
    unknown = [n for n in params if n not in named]
    if unknown or not params:
        raise ValueError(
            f"params must name parameters of the model; unknown: {unknown or '(none given)'}"
        )
    keep = set(params)
    for n, p in named.items():
        p.requires_grad_(n in keep)
    return [named[n] for n in named if n in keep]
