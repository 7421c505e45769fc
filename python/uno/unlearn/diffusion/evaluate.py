"""Measures of the diffusion table (docs/diffusion.md "Measuring"): f by several judges on the same
class-c samples, the quality bar, and the relearning attacks of :mod:`uno.unlearn.attacks` with the
model's labelled denoising loss (:func:`attack_loss`; the stable rule is
:func:`uno.unlearn.metrics.stable_steps_to_forget`).

Every f here is the share of class-c-conditioned DDIM samples from fixed codes that a judge assigns to a
forget class; the codes come from their own seed and enter no loss (the diffusion task's losses see
noised training images only), so they are fresh in the sense of docs/method.md §4b.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

from uno.unlearn import attacks
from uno.unlearn.data import ImageData
from uno.unlearn.diffusion.sampling import codes, model_chain
from uno.unlearn.diffusion.schedule import alpha_bar, to_model
from uno.unlearn.diffusion.train import denoising_loss
from uno.unlearn.evaluation import FreshForget
from uno.unlearn.tasks import in_forget

#: the seed of the fresh codes (distinct from every run seed's monitor codes)
FRESH_SEED = 20_250_619


def class_samples(model: Any, z: Tensor, targets: Sequence[int]) -> Tensor:
    """DDIM samples from codes ``z (N, 1, H, W)`` conditioned on the forget classes (cycling)."""
    y = torch.as_tensor(list(targets))[torch.arange(len(z)) % len(targets)]
    return model_chain(model, z, y)


def fractions(
    model: Any, judges: Sequence[nn.Module], z: Tensor, targets: Sequence[int]
) -> list[float]:
    """f by each judge on the same class-c samples from the codes ``z``."""
    x = class_samples(model, z, targets)
    return [float(in_forget(j.eval(), x, targets).float().mean()) for j in judges]


def conditional_accuracy(model: Any, judges: Sequence[nn.Module], n: int = 1000) -> list[float]:
    """The quality bar: the share of class-conditioned samples (labels 0..9 cycling, ``n`` fresh
    codes) that each judge classifies as their label."""
    z = fresh_codes(n)
    y = torch.arange(n) % int(model.n_classes)
    x = model_chain(model, z, y)
    with torch.no_grad():
        return [float((j.eval()(x).argmax(1) == y).float().mean()) for j in judges]


def attack_loss(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """The relearning attacks' loss (``loss`` of :mod:`uno.unlearn.attacks`): the training loss ℓ_d of
    images ``x`` in [0, 1] with their labels ``y``, timesteps and noises from torch's RNG (which the
    attack seeds inside its own :func:`torch.random.fork_rng`)."""
    m: Any = model
    ab = alpha_bar(m.T, m.schedule)
    t = torch.randint(m.T, (len(x),))
    return denoising_loss(model, to_model(x), y, t, torch.randn(x.shape), ab)


def relearn(
    model: nn.Module,
    fresh: FreshForget,
    data: tuple[ImageData, ImageData],
    targets: Sequence[int],
    seed: int,
    **kw: int,
) -> tuple[attacks.AttackResult, attacks.AttackResult]:
    """Both attacks of :mod:`uno.unlearn.attacks` on (a copy of) ``model``, with labels.

    Args:
        model: the denoiser, its ``decode_labels`` the forget classes (``fresh`` decodes class-c samples).
        fresh: the fresh-code evaluator (both judges); attack (i)'s f after its last step uses every code.
        data: ``(retain, forget)`` training images with their labels.
        targets: the forget classes.
        seed: the attacks' seed (the run's).
        **kw: ``steps`` (attack (i), 100), ``every`` (attack (i)'s f every so many steps, 1),
            ``n_step`` (codes per measured step).

    Returns:
        attack (i) (retain-only fine-tuning) and attack (ii) (10 steps on 64 forget images, f after each).
    """
    retain, forget = data
    n_step = kw.get("n_step", attacks.N_STEP)
    a = attacks.retain_finetune(
        model, fresh, (retain.x, retain.y), seed=seed, loss=attack_loss, n_step=n_step,
        steps=kw.get("steps", attacks.RETAIN_STEPS), every=kw.get("every", 1),
    )  # fmt: skip
    # attack (ii) is read per step only: its final f on n_step codes, not on every fresh code
    small = FreshForget(fresh.judges, targets, fresh.z.shape[1], n=min(n_step, fresh.n))
    small.z = fresh.z[: small.n]
    b = attacks.forget_finetune(
        model, small, (forget.x, forget.y), seed=seed, loss=attack_loss, n_step=n_step
    )
    return a, b


def fresh_codes(n: int) -> Tensor:
    """The table's ``n`` fresh codes (seed :data:`FRESH_SEED`)."""
    return codes(n, FRESH_SEED)
