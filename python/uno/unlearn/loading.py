"""Loading what a run needs: the models (the cache, a file, or training them) and the data set."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from torch import nn

from uno.unlearn import io
from uno.unlearn.config import RunConfig
from uno.unlearn.data import ImageData, load_celeba, load_mnist
from uno.unlearn.errors import UnoUserError


@dataclass
class Loaded:
    """Models a run needs (pass them in to skip loading/training)."""

    model: nn.Module
    judge: nn.Module
    critic: Optional[nn.Module] = None
    kind: str = "vae"  # "vae" or "gan"
    judge2: Optional[nn.Module] = None  # the second judge (None: f and FID of judge 2 not measured)


def load_models(cfg: RunConfig) -> Loaded:
    """Resolve ``cfg.model`` / ``cfg.judge`` to models (cache, or train on the embedded data)."""
    from uno.unlearn.train import get_or_train

    critic = None
    if cfg.model == "vae":
        model, _ = get_or_train("vae", data_root=cfg.data, quiet=cfg.quiet, epochs=cfg.vae_epochs)
        kind = "vae"
    elif cfg.model == "gan":
        (model, critic), _ = get_or_train(
            "gan", data_root=cfg.data, quiet=cfg.quiet, steps=cfg.gan_steps
        )
        kind = "gan"
    else:
        p = Path(cfg.model).expanduser()
        if not p.exists():
            raise UnoUserError(f"unknown model {cfg.model!r}: not 'vae', 'gan' or an existing file")
        model, _ = io.load_model(p, ("mnist_vae", "conv_vae", "dcgan_g"))
        kind = "gan" if model.config["kind"] == "dcgan_g" else "vae"  # type: ignore[index]
    if cfg.critic is not None:
        critic, _ = io.load_model(cfg.critic, "dcgan_d")
    if cfg.judge is not None:
        judge, _ = io.load_model(cfg.judge, ("mlp_judge", "cnn_judge"))
    else:
        judge, _ = get_or_train(
            "judge", data_root=cfg.data, quiet=cfg.quiet, epochs=cfg.judge_epochs
        )
    return Loaded(model, judge, critic, kind, judge2=_judge2(cfg))


def _judge2(cfg: RunConfig) -> Optional[nn.Module]:
    """``--judge2 FILE``; else the cached CNN judge where the first judge is the cached MNIST one (a
    judge of the user's own has no default partner: judge 2's columns stay NaN)."""
    from uno.unlearn.train import get_or_train

    if cfg.judge2 is not None:
        return io.load_model(cfg.judge2, ("mlp_judge", "cnn_judge"))[0]
    if cfg.judge is None and cfg.dataset == "mnist":
        return get_or_train("judge2", data_root=cfg.data, quiet=cfg.quiet)[0]
    return None


def load_data(cfg: RunConfig) -> tuple[ImageData, ImageData]:
    """``(train, heldout)`` for ``cfg.dataset`` (``mnist``: embedded or ``cfg.data``; ``celeba``: ``cfg.data``)."""
    if cfg.dataset == "mnist":
        return load_mnist(cfg.data)
    if cfg.dataset == "celeba":
        if cfg.data is None:
            raise UnoUserError(
                "--dataset celeba needs --data PATH (torchvision's CelebA folder layout)"
            )
        if cfg.model in ("vae", "gan") or cfg.judge is None:
            raise UnoUserError("--dataset celeba needs --model FILE (a conv VAE) and --judge FILE")
        return load_celeba(cfg.data, size=64)
    raise UnoUserError(f"unknown dataset {cfg.dataset!r}; choose mnist or celeba")
