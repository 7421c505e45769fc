"""Measures of the diffusion table (docs/diffusion.md "Measuring"): f on fresh codes by several judges,
the quality bar, and the relearning attacks with labels (the stable rule is
:func:`uno.unlearn.metrics.stable_steps_to_forget`; :mod:`uno.unlearn.attacks` fine-tunes with an
unconditional loss, which a class-conditional denoiser has not got).

Every f here is the share of class-c-conditioned DDIM samples from fixed codes that a judge assigns to a
forget class; the codes come from their own seed and enter no loss (the diffusion task's losses see
noised training images only), so they are fresh in the sense of docs/method.md §4b.
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from uno.unlearn.data import ImageData
from uno.unlearn.diffusion.sampling import codes, model_chain
from uno.unlearn.diffusion.schedule import alpha_bar, to_model
from uno.unlearn.diffusion.train import denoising_loss
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


def relearn(
    model: nn.Module,
    data: ImageData,
    judges: Sequence[nn.Module],
    z: Tensor,
    targets: Sequence[int],
    *,
    steps: int,
    lr: float = 1e-3,
    batch: int = 128,
    every: int = 1,
    seed: int = 0,
) -> list[list[float]]:
    """Fine-tune a copy of ``model`` on ``data`` (its own labels, the training loss, Adam) and return
    f by each judge before the attack and after every ``every``-th step (and the last)."""
    m = copy.deepcopy(model)
    m.requires_grad_(True)
    mm: Any = m
    ab = alpha_bar(mm.T, mm.schedule)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(m.parameters(), lr=lr)
    x_all, y_all = to_model(data.x), data.y
    out = [fractions(m, judges, z, targets)]
    for step in range(1, steps + 1):
        m.train()
        idx = torch.randint(len(x_all), (min(batch, len(x_all)),), generator=g)
        t = torch.randint(mm.T, (len(idx),), generator=g)
        eps = torch.randn(x_all[idx].shape, generator=g)
        loss = denoising_loss(m, x_all[idx], y_all[idx], t, eps, ab)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % every == 0 or step == steps:
            out.append(fractions(m, judges, z, targets))
    return out


def fresh_codes(n: int) -> Tensor:
    """The table's ``n`` fresh codes (seed :data:`FRESH_SEED`)."""
    return codes(n, FRESH_SEED)
