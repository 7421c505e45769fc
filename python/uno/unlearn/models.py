"""Models of the drivers: VAEs, a DCGAN generator/critic and judges.

Every generative model exposes ``latent_dim``, ``decode(z) -> images`` and (VAEs) ``loss(x)``, the
sum-reduced negative ELBO of docs/method.md §2. Images are ``(N, C, H, W)`` in ``[0, 1]``.
Each model is built from a plain ``config`` dict (stored in checkpoints to rebuild it).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from uno.unlearn.diffusion.model import DiffusionMLP, DiffusionUNet


class VAEBase(nn.Module):
    """What the VAEs share: the reparameterised forward pass and the loss (subclasses: encode, decode)."""

    beta: float
    #: ``(n, lo, hi)`` while a data-parallel step runs (:mod:`uno.unlearn.parallel`): every forward
    #: is on rows ``lo:hi`` of a global batch of ``n``, and takes those rows of the noise drawn for
    #: all ``n`` (so the ranks together draw exactly what one process draws); None: its own batch.
    noise_rows: Optional[tuple[int, int, int]] = None

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def decode(self, z: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``x`` → ``(reconstruction, μ, log σ²)`` with z = μ + σ·ε, ε ~ N(0, I) from torch's RNG."""
        mu, logvar = self.encode(x)
        z = mu + noise_like(mu, self.noise_rows) * torch.exp(0.5 * logvar)
        return self.decode(z), mu, logvar

    def loss(self, x: Tensor) -> Tensor:
        """Negative ELBO, sum-reduced over the batch (BCE for one channel, MSE for RGB, + β·KL)."""
        return vae_loss(self, x)


def noise_like(mu: Tensor, rows: Optional[tuple[int, int, int]] = None) -> Tensor:
    """ε ~ N(0, I) shaped like ``mu`` from torch's RNG; with ``rows = (n, lo, hi)``, rows ``lo:hi`` of
    the ``(n, *mu.shape[1:])`` draw (one process's draw for the whole batch, this rank's share of it).

    Raises:
        ValueError: ``mu`` does not have ``hi - lo`` rows.
    """
    if rows is None:
        return torch.randn_like(mu)
    n, lo, hi = rows
    if mu.shape[0] != hi - lo:
        raise ValueError(f"noise for rows {lo}:{hi} of {n}, but the batch has {mu.shape[0]} rows")
    return torch.randn((n, *mu.shape[1:]), dtype=mu.dtype, device=mu.device)[lo:hi]


class MnistVAE(VAEBase):
    """The paper's MNIST VAE (docs/method.md §5): 632,788 parameters with the default sizes.

    Encoder ``Linear(784→400), BatchNorm, ReLU`` with heads ``Linear(400→2)`` for μ and log σ²;
    decoder ``Linear(2→400), BatchNorm, ReLU, Linear(400→784), Sigmoid``.
    """

    def __init__(self, hidden: int = 400, latent: int = 2, beta: float = 1.0) -> None:
        super().__init__()
        self.config = {"kind": "mnist_vae", "hidden": hidden, "latent": latent, "beta": beta}
        self.latent_dim = latent
        self.beta = beta
        self.image_shape = (1, 28, 28)
        self.enc = nn.Sequential(nn.Linear(784, hidden), nn.BatchNorm1d(hidden), nn.ReLU())
        self.mu = nn.Linear(hidden, latent)
        self.logvar = nn.Linear(hidden, latent)
        self.dec = nn.Sequential(
            nn.Linear(latent, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Linear(hidden, 784),
            nn.Sigmoid(),
        )

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x (N, 1, 28, 28)`` → ``(μ, log σ²)``, each ``(N, latent)``."""
        h = self.enc(x.reshape(x.shape[0], -1))
        return self.mu(h), self.logvar(h)

    def decode(self, z: Tensor) -> Tensor:
        """``z (N, latent)`` → images ``(N, 1, 28, 28)`` in [0, 1]."""
        return self.dec(z).reshape(z.shape[0], *self.image_shape)


def vae_loss(model: Any, x: Tensor) -> Tensor:
    """Sum-reduced negative ELBO: BCE (1 channel) or MSE (RGB) + β·KL(N(μ, σ²) ‖ N(0, I))."""
    xr, mu, logvar = model(x)
    if x.shape[1] == 1:
        rec = F.binary_cross_entropy(xr, x, reduction="sum")
    else:
        rec = F.mse_loss(xr, x, reduction="sum")
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return rec + model.beta * kl


def _conv_sizes(size: int, n: int) -> list[int]:
    sizes = [size]
    for _ in range(n):
        sizes.append((sizes[-1] - 1) // 2 + 1)  # k3 s2 p1
    return sizes


class ConvVAE(VAEBase):
    """Convolutional VAE in the paper's CelebA shape (conv blocks of stride 2, latent, transposed convs).

    With ``channels=(32, 64, 128, 256, 512)``, ``latent=512``, ``size=64``, ``in_channels=3`` this is the
    CelebA VAE of docs/method.md §5. Any size works: transposed convs get the output padding that restores the
    encoder's spatial sizes exactly (28 → 14 → 7 → 4 and back).
    """

    def __init__(
        self,
        in_channels: int = 1,
        size: int = 28,
        channels: Sequence[int] = (32, 64, 128),
        latent: int = 16,
        beta: float = 1.0,
    ) -> None:
        super().__init__()
        ch = list(channels)
        self.config = {
            "kind": "conv_vae",
            "in_channels": in_channels,
            "size": size,
            "channels": ch,
            "latent": latent,
            "beta": beta,
        }
        self.latent_dim = latent
        self.beta = beta
        self.image_shape = (in_channels, size, size)
        self.sizes = _conv_sizes(size, len(ch))
        self.last_channels = ch[-1]
        enc: list[nn.Module] = []
        c_in = in_channels
        for c in ch:
            enc += [nn.Conv2d(c_in, c, 3, 2, 1), nn.BatchNorm2d(c), nn.LeakyReLU(0.2)]
            c_in = c
        self.enc = nn.Sequential(*enc)
        flat = ch[-1] * self.sizes[-1] ** 2
        self.mu = nn.Linear(flat, latent)
        self.logvar = nn.Linear(flat, latent)
        self.fc = nn.Linear(latent, flat)
        dec: list[nn.Module] = []
        rev = ch[::-1]
        for i in range(len(rev)):
            c_out = rev[i + 1] if i + 1 < len(rev) else rev[-1]
            s_in, s_out = self.sizes[-1 - i], self.sizes[-2 - i]
            op = s_out - 2 * s_in + 1
            dec += [nn.ConvTranspose2d(rev[i], c_out, 3, 2, 1, output_padding=op)]
            dec += [nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2)]
        dec += [nn.Conv2d(rev[-1], in_channels, 3, 1, 1), nn.Sigmoid()]
        self.dec = nn.Sequential(*dec)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x (N, C, H, W)`` → ``(μ, log σ²)``, each ``(N, latent)``."""
        h = self.enc(x).flatten(1)
        return self.mu(h), self.logvar(h)

    def decode(self, z: Tensor) -> Tensor:
        """``z (N, latent)`` → images ``(N, C, H, W)``."""
        c, s = self.last_channels, self.sizes[-1]
        return self.dec(self.fc(z).reshape(z.shape[0], c, s, s))


class DCGANGenerator(nn.Module):
    """DCGAN generator for 28×28 (or 64×64) images: ``z (N, latent)`` → ``(N, C, size, size)``."""

    def __init__(self, latent: int = 64, width: int = 64, out_channels: int = 1, size: int = 28):
        super().__init__()
        if size not in (28, 64):
            raise ValueError(f"DCGANGenerator supports size 28 or 64, got {size}")
        self.config = {
            "kind": "dcgan_g",
            "latent": latent,
            "width": width,
            "out_channels": out_channels,
            "size": size,
        }
        self.latent_dim = latent
        self.image_shape = (out_channels, size, size)
        w = width
        self.start = 7 if size == 28 else 4
        c0 = 2 * w if size == 28 else 8 * w
        self.c0 = c0
        self.fc = nn.Sequential(
            nn.Linear(latent, c0 * self.start**2), nn.BatchNorm1d(c0 * self.start**2)
        )
        layers: list[nn.Module] = [nn.ReLU()]
        c = c0
        n_up = 2 if size == 28 else 4
        for i in range(n_up):
            last = i == n_up - 1
            c_out = out_channels if last else c // 2
            layers.append(nn.ConvTranspose2d(c, c_out, 4, 2, 1))
            if not last:
                layers += [nn.BatchNorm2d(c_out), nn.ReLU()]
            c = c_out
        layers.append(nn.Sigmoid())
        self.net = nn.Sequential(*layers)

    def decode(self, z: Tensor) -> Tensor:
        """``z (N, latent)`` → images in [0, 1]."""
        h = self.fc(z).reshape(z.shape[0], self.c0, self.start, self.start)
        return self.net(h)

    def forward(self, z: Tensor) -> Tensor:
        return self.decode(z)


class DCGANCritic(nn.Module):
    """WGAN-GP critic (no BatchNorm, as the gradient penalty requires): images → one score each ``(N,)``."""

    def __init__(self, width: int = 64, in_channels: int = 1, size: int = 28):
        super().__init__()
        self.config = {"kind": "dcgan_d", "width": width, "in_channels": in_channels, "size": size}
        w = width
        layers: list[nn.Module] = []
        c = in_channels
        n_down = 2 if size == 28 else 4
        for i in range(n_down):
            c_out = w * 2**i
            layers += [nn.Conv2d(c, c_out, 4, 2, 1), nn.LeakyReLU(0.2)]
            c = c_out
        self.net = nn.Sequential(*layers)
        s = 7 if size == 28 else 4
        self.out = nn.Linear(c * s * s, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.net(x).flatten(1)).squeeze(1)


class MLPJudge(nn.Module):
    """The paper's judge: MLP 784→200→10; ``features`` gives the 200-d hidden layer (classifier FID)."""

    def __init__(self, in_features: int = 784, hidden: int = 200, n_classes: int = 10):
        super().__init__()
        self.config = {
            "kind": "mlp_judge",
            "in_features": in_features,
            "hidden": hidden,
            "n_classes": n_classes,
        }
        self.n_classes = n_classes
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, n_classes)

    def features(self, x: Tensor) -> Tensor:
        """``x (N, ...)`` → hidden features ``(N, hidden)`` (after the ReLU)."""
        return F.relu(self.fc1(x.reshape(x.shape[0], -1)))

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(N, n_classes)``."""
        return self.fc2(self.features(x))


class CNNJudge(nn.Module):
    """Small CNN judge: images ``(N, C, H, W)`` → logits ``(N, n_classes)``.

    With ``n_classes=1`` it is the one-logit attribute judge (sigmoid = probability of the attribute).
    """

    def __init__(self, in_channels: int = 1, size: int = 28, n_classes: int = 10, width: int = 32):
        super().__init__()
        self.config = {
            "kind": "cnn_judge",
            "in_channels": in_channels,
            "size": size,
            "n_classes": n_classes,
            "width": width,
        }
        self.n_classes = n_classes
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, 2, 1),
            nn.ReLU(),
            nn.Conv2d(w, 2 * w, 3, 2, 1),
            nn.ReLU(),
            nn.Conv2d(2 * w, 4 * w, 3, 2, 1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(4 * w, n_classes)

    def features(self, x: Tensor) -> Tensor:
        """Pooled features ``(N, 4·width)``."""
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def attribute_judge(in_channels: int = 3, size: int = 64, width: int = 32) -> CNNJudge:
    """The one-logit attribute judge (CelebA): a :class:`CNNJudge` with ``n_classes=1``."""
    return CNNJudge(in_channels, size, 1, width)


_KINDS: dict[str, Any] = {
    "mnist_vae": MnistVAE,
    "conv_vae": ConvVAE,
    "dcgan_g": DCGANGenerator,
    "dcgan_d": DCGANCritic,
    "mlp_judge": MLPJudge,
    "cnn_judge": CNNJudge,
    "diffusion_mlp": DiffusionMLP,
    "diffusion_unet": DiffusionUNet,
}


def build(config: dict) -> nn.Module:
    """Rebuild a model from its ``config`` dict (as stored in checkpoints)."""
    cfg = dict(config)
    kind = cfg.pop("kind", None)
    if kind not in _KINDS:
        raise ValueError(f"unknown model kind {kind!r}; known: {', '.join(_KINDS)}")
    return _KINDS[kind](**cfg)


def n_params(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def set_batchnorm(model: nn.Module, train: bool) -> None:
    """Put only the BatchNorm layers in train (``True``) or eval (frozen running statistics) mode."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.train(train)


def sample_images(model: Any, z: Tensor, chunk: Optional[int] = 4096) -> Tensor:
    """Decode ``z`` in eval mode without gradients (restores the previous modes)."""
    modes = [m.training for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            n = z.shape[0]
            step = n if chunk is None else chunk
            return torch.cat([model.decode(z[i : i + step]) for i in range(0, n, step)])
    finally:
        for m, t in zip(model.modules(), modes):
            m.training = t
