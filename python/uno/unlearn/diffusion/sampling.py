"""Deterministic DDIM sampling (η = 0, Song et al. 2021) with classifier-free guidance.

With S steps on the evenly spaced timesteps τ_S > … > τ_1 and the guided noise prediction
``ε̃ = ε_θ(x, t, ∅) + w·(ε_θ(x, t, y) − ε_θ(x, t, ∅))`` (Ho & Salimans 2022; w = 1 is the plain
conditional model), each step is ``x ← √ᾱ_prev·x̂₀ + √(1 − ᾱ_prev)·ε̃`` with x̂₀ clipped to [-1, 1].
The conditional and unconditional predictions share one forward of the doubled batch. The chain is a
deterministic function of the initial noise x_T and the labels: fixed codes give the same images.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from uno.unlearn.diffusion.schedule import alpha_bar, predict_x0, to_image


def timesteps(T: int, steps: int) -> list[int]:
    """The S = ``steps`` DDIM timesteps, descending from T − 1 (evenly spaced, integer)."""
    if not 1 <= steps <= T:
        raise ValueError(f"DDIM steps must be in [1, {T}], got {steps}")
    if steps == 1:
        return [T - 1]
    return [round((T - 1) * (1 - i / (steps - 1))) for i in range(steps)]


def guided_eps(model: Any, x: Tensor, t: Tensor, y: Optional[Tensor], w: float) -> Tensor:
    """ε̃ = ε_∅ + w·(ε_y − ε_∅) (``y=None`` or ``w = 1``: one forward, no doubling)."""
    if y is None:
        return model(x, t, None)
    if w == 1.0:
        return model(x, t, y)
    null = torch.full_like(y, model.null_label)
    eps = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]))
    e_c, e_u = eps.chunk(2)
    return e_u + w * (e_c - e_u)


def ddim(
    model: Any,
    xT: Tensor,
    y: Optional[Tensor],
    steps: int = 20,
    guidance: float = 2.0,
    chunk: int = 512,
) -> Tensor:
    """Deterministic DDIM from the noise ``xT (N, 1, H, W)`` with labels ``y (N,)`` (None: unconditional).

    Returns images in [0, 1] (made in inference mode: no gradients); eval mode for the call (the
    previous modes are restored).
    ``chunk`` bounds the batch of one forward (the memory of a long list of codes).
    """
    ab = alpha_bar(model.T, model.schedule)
    ts = timesteps(model.T, steps)
    was = model.training
    model.eval()
    out = []
    try:
        with torch.inference_mode():  # no autograd bookkeeping at all (the images leave as data)
            for i in range(0, len(xT), chunk):
                x = xT[i : i + chunk]
                yc = None if y is None else y[i : i + chunk]
                for k, t in enumerate(ts):
                    tt = torch.full((len(x),), t, dtype=torch.long, device=x.device)
                    eps = guided_eps(model, x, tt, yc, guidance)
                    x0 = predict_x0(ab, x, tt, eps).clamp(-1.0, 1.0)
                    a_prev = float(ab[ts[k + 1]]) if k + 1 < len(ts) else 1.0
                    a_t = float(ab[t])
                    # ε consistent with the clipped x̂₀ (the DDIM update's noise direction)
                    eps = (x - a_t**0.5 * x0) / (1 - a_t) ** 0.5
                    x = a_prev**0.5 * x0 + (1 - a_prev) ** 0.5 * eps
                out.append(x)
    finally:
        model.train(was)
    return to_image(torch.cat(out))


def codes(n: int, seed: int, size: int = 28) -> Tensor:
    """``n`` fixed initial noises x_T ``(n, 1, size, size)`` from a generator seeded by ``seed``."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.randn(n, 1, size, size, generator=g)


def model_chain(model: Any, z: Tensor, y: Optional[Tensor]) -> Tensor:
    """Images from codes ``z`` (``(N, H·W)`` or ``(N, 1, H, W)``) with labels ``y`` by the model's own
    default chain (``config['sample_steps']`` DDIM steps, guidance ``config['guidance']``)."""
    x = z.reshape(len(z), *model.image_shape)
    return ddim(model, x, y, model.config["sample_steps"], model.config["guidance"])
