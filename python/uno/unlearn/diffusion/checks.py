"""Checks of a run configuration that concern the diffusion model (called by ``RunConfig.validate``)."""

from __future__ import annotations

from typing import Any

from uno.unlearn.errors import UnoUserError

#: methods whose step needs a VAE's encoder or a generator's latent space
UNSUPPORTED = ("fu",)
#: methods that need the diffusion task
DIFFUSION_ONLY = ("esd",)


def check_config(cfg: Any) -> None:
    """Raise :class:`UnoUserError` for a method/model/dataset combination the diffusion task lacks."""
    diffusion = cfg.model == "diffusion"
    if cfg.method in DIFFUSION_ONLY and cfg.model in ("vae", "gan"):
        raise UnoUserError(f"--method {cfg.method} needs --model diffusion")
    if not diffusion:
        return
    if cfg.method in UNSUPPORTED:
        raise UnoUserError(f"--method {cfg.method} is not available for --model diffusion")
    if cfg.dataset != "mnist":
        raise UnoUserError("--model diffusion is trained on MNIST digits: use --dataset mnist")
    if cfg.critic is not None:
        raise UnoUserError("--critic is the GAN's; --model diffusion has none")
