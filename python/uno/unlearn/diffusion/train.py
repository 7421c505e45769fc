"""DDPM training of the class-conditional denoiser (ε-prediction, label dropout) and its cache.

Each step: a batch of digits x₀ (in [-1, 1]) with labels y, timesteps t ~ U{0..T−1}, noise ε, and with
probability ``p_uncond`` the label replaced by the null label (classifier-free guidance, Ho & Salimans
2022); minimise the Min-SNR-weighted ‖ε_θ(q_sample(x₀, t, ε), t, y) − ε‖² (:func:`denoising_loss`). Adam with a linear warm-up and a cosine
decay, and an exponential moving average of the weights (the EMA is the model that is saved and used).
The cache is :func:`uno.unlearn.train.cache_dir`'s, keyed like the VAE's by (kind, data, budget, seed);
``exclude`` trains without some classes (the retrained gold standard of docs/diffusion.md).
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn

from uno.unlearn.data import ImageData, load_mnist
from uno.unlearn.diffusion.model import DiffusionMLP, DiffusionUNet
from uno.unlearn.diffusion.schedule import alpha_bar, loss_weight, q_sample, to_model
from uno.unlearn.io import load_model, save_model

#: ``uno train diffusion``'s recipe (docs/diffusion.md "Training").
DEFAULTS: dict[str, Any] = {
    "arch": "mlp",
    "steps": 4000,
    "batch": 128,
    "lr": 1e-3,
    "p_uncond": 0.1,
    "ema": 0.999,
    "exclude": [],
}

MODEL_KINDS = ("diffusion_mlp", "diffusion_unet")


def build_model(arch: str = "mlp", **kw: Any) -> nn.Module:
    """A fresh denoiser: ``arch`` ``mlp`` (:class:`DiffusionMLP`) or ``unet`` (:class:`DiffusionUNet`)."""
    if arch == "mlp":
        return DiffusionMLP(**kw)
    if arch == "unet":
        return DiffusionUNet(**kw)
    raise ValueError(f"unknown diffusion architecture {arch!r}; choose mlp or unet")


def denoising_loss(
    model: nn.Module, x0: Tensor, y: Optional[Tensor], t: Tensor, eps: Tensor, ab: Tensor
) -> Tensor:
    """ℓ_d = mean_i w_i·mean_pixels (ε_θ(x_t, t, y) − ε)² with x_t = q_sample(x0, t, eps), x0 in
    [-1, 1] and w = :func:`~uno.unlearn.diffusion.schedule.loss_weight` (Min-SNR)."""
    return per_sample_loss(model, x0, y, t, eps, ab).mean()


def per_sample_loss(
    model: nn.Module, x0: Tensor, y: Optional[Tensor], t: Tensor, eps: Tensor, ab: Tensor
) -> Tensor:
    """(B,) the weighted denoising loss of each sample (see :func:`denoising_loss`)."""
    err = (model(q_sample(ab, x0, t, eps), t, y) - eps).pow(2).flatten(1).mean(1)
    return loss_weight(ab, t) * err


def _lr_at(step: int, steps: int, lr: float, warmup: int = 200) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def train_diffusion(
    model: nn.Module,
    data: ImageData,
    *,
    steps: int = 4000,
    batch: int = 128,
    lr: float = 1e-3,
    p_uncond: float = 0.1,
    ema: float = 0.999,
    seed: int = 0,
    quiet: bool = False,
) -> tuple[nn.Module, list[float]]:
    """Train ``model`` on ``data`` (images in [0, 1]); returns ``(the EMA model in eval mode, losses)``.

    Deterministic in ``seed``: batches, timesteps, noise and label drops come from one generator.
    """
    from uno.unlearn.train import progress

    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    m: Any = model
    T: int = m.T
    ab = alpha_bar(T, m.schedule)
    x_all, y_all = to_model(data.x), data.y
    avg = copy.deepcopy(model).eval()
    for p in avg.parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    losses: list[float] = []
    null = int(m.null_label)
    for step in progress(range(steps), quiet=quiet, desc="train diffusion"):
        idx = torch.randint(len(x_all), (batch,), generator=g)
        x0, y = x_all[idx], y_all[idx].clone()
        t = torch.randint(T, (batch,), generator=g)
        eps = torch.randn(x0.shape, generator=g)
        y[torch.rand(batch, generator=g) < p_uncond] = null
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, steps, lr)
        loss = denoising_loss(model, x0, y, t, eps, ab)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        with torch.no_grad():
            for a, p in zip(avg.parameters(), model.parameters()):
                a.lerp_(p, 1.0 - ema)
    return avg, losses


def without_classes(data: ImageData, exclude: Sequence[int]) -> ImageData:
    """``data`` without the samples of the classes ``exclude``."""
    if not exclude:
        return data
    return data.subset(~data.forget_mask(list(exclude)))


def get_or_train(
    *,
    data_root: Optional[str] = None,
    seed: int = 0,
    quiet: bool = False,
    retrain: bool = False,
    **budget: Any,
) -> tuple[nn.Module, Path, dict[str, Any]]:
    """The cached diffusion model for this data, budget and seed, trained (and cached) when missing.

    ``budget`` overrides :data:`DEFAULTS` (``None`` values are ignored); model sizes go in as
    ``width``/``depth``/``emb`` (mlp) or ``channels``/``emb`` (unet). Returns ``(model, path, meta)``
    where ``meta`` holds the budget and the training wall time (``train_s``).
    """
    from uno.unlearn.train import _announce, _key, cache_dir

    b = {**DEFAULTS, **{k: v for k, v in budget.items() if v is not None}}
    b["exclude"] = sorted(int(c) for c in b["exclude"])
    data_id = "embedded-mnist" if data_root is None else str(Path(data_root).expanduser().resolve())
    path = cache_dir() / f"{_key('diffusion', data_id, b, seed)}.safetensors"
    if path.is_file() and not retrain:
        model, meta = load_model(path, MODEL_KINDS)
        return model.eval(), path, meta
    _announce("diffusion model", b, path)
    train, _ = load_mnist(data_root)
    train = without_classes(train, b["exclude"])
    sizes = {k: b[k] for k in ("width", "depth", "emb", "channels") if k in b}
    torch.manual_seed(seed)
    model = build_model(b["arch"], **sizes)
    t0 = time.perf_counter()
    fit = {k: b[k] for k in ("steps", "batch", "lr", "p_uncond", "ema")}
    avg, losses = train_diffusion(model, train, seed=seed, quiet=quiet, **fit)
    meta = {
        "kind": "diffusion",
        "data": data_id,
        "budget": b,
        "seed": seed,
        "train_s": time.perf_counter() - t0,
        "threads": torch.get_num_threads(),
        "final_loss": sum(losses[-100:]) / max(1, len(losses[-100:])),
    }
    save_model(path, avg, meta)
    return avg, path, meta


def get_or_train_kind(kind: str, **kw: Any) -> tuple[nn.Module, Path]:
    """:func:`get_or_train` with :func:`uno.unlearn.train.get_or_train`'s signature and result
    (``kind`` is ``"diffusion"``), for ``uno train diffusion``."""
    if kind != "diffusion":
        raise ValueError(f"not a diffusion kind: {kind!r}")
    if kw.get("seed") is None:  # `uno train`'s default
        kw["seed"] = 0
    model, path, _ = get_or_train(**kw)
    return model, path
