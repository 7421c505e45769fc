"""The DDPM noise schedule: ᾱ_t, forward noising q(x_t | x_0) and the one-step x̂₀ of a noise prediction.

``x_t = √ᾱ_t·x_0 + √(1 − ᾱ_t)·ε`` (Ho et al. 2020); with the noise prediction ε̂,
``x̂₀ = (x_t − √(1 − ᾱ_t)·ε̂) / √ᾱ_t``. The cosine schedule is Nichol & Dhariwal (2021)'s, the linear one
Ho et al.'s (β from 1e-4 to 0.02). Images live in [-1, 1] (:func:`to_model`, :func:`to_image`).
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor


@functools.lru_cache(maxsize=8)
def _alpha_bar(T: int, kind: str) -> Tensor:
    if kind == "linear":
        betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
        return torch.cumprod(1.0 - betas, 0)
    if kind == "cosine":
        s = 0.008
        x = torch.arange(T + 1, dtype=torch.float64) / T
        f = torch.cos((x + s) / (1 + s) * math.pi / 2) ** 2
        betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
        return torch.cumprod(1.0 - betas, 0)
    raise ValueError(f"unknown schedule {kind!r}; choose cosine or linear")


def alpha_bar(T: int, kind: str = "cosine") -> Tensor:
    """ᾱ_t for t = 0..T−1 as float64 ``(T,)`` (a copy; cached per (T, kind))."""
    return _alpha_bar(int(T), kind).clone()


def _coef(ab: Tensor, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
    a = ab.to(like.device)[t].to(like.dtype)[:, None, None, None]
    return a.sqrt(), (1 - a).sqrt()


def q_sample(ab: Tensor, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    """``x_t = √ᾱ_t·x0 + √(1 − ᾱ_t)·eps`` for timesteps ``t (N,)``."""
    sa, sb = _coef(ab, t, x0)
    return sa * x0 + sb * eps


def predict_x0(ab: Tensor, xt: Tensor, t: Tensor, eps_hat: Tensor) -> Tensor:
    """The one-step estimate ``x̂₀ = (x_t − √(1 − ᾱ_t)·ε̂) / √ᾱ_t`` (differentiable in ε̂)."""
    sa, sb = _coef(ab, t, xt)
    return (xt - sb * eps_hat) / sa


#: γ of the Min-SNR loss weight (Hang et al. 2023)
MIN_SNR_GAMMA = 5.0


def loss_weight(ab: Tensor, t: Tensor, gamma: float = MIN_SNR_GAMMA) -> Tensor:
    """Per-sample weight ``min(1, γ / SNR_t)`` of the ε-MSE, SNR_t = ᾱ_t / (1 − ᾱ_t).

    In x₀ terms this is Min-SNR-γ, ``min(SNR_t, γ)·‖x̂₀ − x₀‖²``: the nearly noise-free timesteps, whose
    ε errors are x₀ errors blown up by √SNR, do not dominate the loss.
    """
    a = ab.to(t.device)[t]
    return (gamma * (1 - a) / a).clamp(max=1.0).float()


def to_model(x: Tensor) -> Tensor:
    """Images in [0, 1] → the model's [-1, 1]."""
    return x * 2.0 - 1.0


def to_image(x: Tensor) -> Tensor:
    """The model's [-1, 1] → images in [0, 1] (clamped)."""
    return ((x + 1.0) * 0.5).clamp(0.0, 1.0)
