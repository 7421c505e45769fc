"""Checks of a run configuration that concern the diffusion model (called by ``RunConfig.validate``)."""

from __future__ import annotations

from typing import Any

from uno.unlearn.errors import UnoUserError


def check_config(cfg: Any) -> None:
    """Raise :class:`UnoUserError` for a dataset or option the diffusion task lacks (which methods
    can unlearn it is each method's ``models``, checked by ``RunConfig.validate`` before this)."""
    if cfg.model != "diffusion":
        return
    if cfg.dataset != "mnist":
        raise UnoUserError("--model diffusion is trained on MNIST digits: use --dataset mnist")
    if cfg.critic is not None:
        raise UnoUserError("--critic is the GAN's; --model diffusion has none")
