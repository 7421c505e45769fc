"""Compact class-conditional denoisers for 28×28 digits (ε-prediction, classifier-free guidance).

:class:`DiffusionMLP` (the default, a residual MLP with adaptive LayerNorm) and :class:`DiffusionUNet`
(a small conv UNet, slower on a CPU). Both take ``(x_t, t, y)`` with ``y = n_classes`` (or ``None``) the
null label of classifier-free guidance, and sample through :meth:`_Denoiser.decode`.

The UNet: three resolutions (28, 14, 7), one residual block per level on the way down and up (with skips), two
in the middle. Each block adds a projection of the embedding e = MLP(sin-cos(t)) + E[y] to its first
convolution's output; label ``n_classes`` is the null label of classifier-free guidance. GroupNorm, no
BatchNorm: a step's statistics never depend on the batch, so ``--bn-train`` has nothing to change.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from uno.unlearn.diffusion.schedule import alpha_bar


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding ``(N, dim)`` of integer (or real) timesteps ``t (N,)``."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs.to(t.device)[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


def _groups(c: int) -> int:
    for g in (8, 4, 2):
        if c % g == 0:
            return g
    return 1


class ResBlock(nn.Module):
    """GroupNorm → SiLU → conv, + embedding, GroupNorm → SiLU → conv, + (1×1) skip."""

    def __init__(self, c_in: int, c_out: int, emb: int) -> None:
        super().__init__()
        self.n1 = nn.GroupNorm(_groups(c_in), c_in)
        self.c1 = nn.Conv2d(c_in, c_out, 3, 1, 1)
        self.e = nn.Linear(emb, c_out)
        self.n2 = nn.GroupNorm(_groups(c_out), c_out)
        self.c2 = nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, e: Tensor) -> Tensor:
        h = self.c1(F.silu(self.n1(x))) + self.e(e)[:, :, None, None]
        h = self.c2(F.silu(self.n2(h)))
        return h + self.skip(x)


class _Denoiser(nn.Module):
    """What both denoisers share: the embedding e = MLP(sin-cos(t)) + E[y] and the sampling interface."""

    config: dict
    null_label: int
    n_classes: int

    def _setup(
        self,
        kind: str,
        arch: dict[str, Any],
        emb: int = 128,
        n_classes: int = 10,
        size: int = 28,
        T: int = 1000,
        schedule: str = "cosine",
        sample_steps: int = 20,
        guidance: float = 2.0,
    ) -> None:
        """The config and the parts both denoisers share: ``arch`` is the architecture's own sizes;
        ``T``, ``schedule`` the DDPM schedule's, ``sample_steps``, ``guidance`` the default chain's
        (kept in the config, so a saved model carries the schedule and chain it was trained for)."""
        self.config = {"kind": kind, **arch, "emb": emb, "n_classes": n_classes, "size": size,
                       "T": T, "schedule": schedule, "sample_steps": sample_steps,
                       "guidance": guidance}  # fmt: skip
        self.n_classes = n_classes
        self.null_label = n_classes
        self.image_shape = (1, size, size)
        self.latent_dim = size * size  # a sample's code is its initial noise x_T
        self.T = T
        self.schedule = schedule
        self.emb_dim = emb
        self.t_mlp = nn.Sequential(nn.Linear(emb, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.y_emb = nn.Embedding(n_classes + 1, emb)

    def embed(self, t: Tensor, y: Optional[Tensor]) -> Tensor:
        """e = MLP(sin-cos(t)) + E[y] (``y=None``: the null label)."""
        if y is None:
            y = torch.full_like(t, self.null_label, dtype=torch.long)
        dt = self.y_emb.weight.dtype
        return self.t_mlp(timestep_embedding(t, self.emb_dim).to(dt)) + self.y_emb(y)

    #: the classes :meth:`decode` draws without labels (None: all of them); the diffusion task sets the
    #: forget classes, so that what the run loop decodes (f, grids, fresh codes) is class-c samples
    decode_labels: Optional[list[int]] = None

    def decode(self, z: Tensor, y: Optional[Tensor] = None) -> Tensor:
        """Images ``(N, 1, H, W)`` in [0, 1] from the codes ``z (N, H·W)`` (the initial noise) by the
        model's default DDIM chain (``config['sample_steps']`` steps, guidance ``config['guidance']``)
        with labels ``y``; without labels, row i of ``z`` gets class ``decode_labels[i mod len]``
        (all classes when unset). No gradients."""
        from uno.unlearn.diffusion.sampling import model_chain

        if y is None:
            classes = torch.as_tensor(self.decode_labels or list(range(self.n_classes)))
            y = classes[torch.arange(len(z)) % len(classes)].to(z.device)
        return model_chain(self, z, y)


class DiffusionMLP(_Denoiser):
    """ε_θ(x_t, t, y) from a residual MLP on the flattened image (the default denoiser).

    ``x → Linear(784→width)``, then ``depth`` blocks ``h += g·W₂·SiLU(W₁·(LN(h)·(1 + s) + b))`` whose
    scale s, shift b and gate g come from the embedding (adaptive LayerNorm, zero-initialised, as in
    DiT's blocks: a DiT with one 784-pixel token and no attention), then ``LN → SiLU → Linear(width→784)``.
    The MLP predicts x̂₀ (which lies near the low-dimensional digit manifold, so a width below 784 can
    hold it) and returns ε̂ = (x_t − √ᾱ_t·x̂₀)/√(1 − ᾱ_t): a width-512 bottleneck cannot copy 784 pixels
    of noise, which ε-prediction at small t needs. Dense layers only: on a CPU one step costs ~1/25 of
    the conv UNet's (docs/diffusion.md). The default (width 384, depth 3, emb 128) has 1.97M parameters.
    """

    sqrt_ab: Tensor
    sqrt_1mab: Tensor

    def __init__(self, width: int = 384, depth: int = 3, **common: Any) -> None:
        """``width``, ``depth``: the MLP's; ``common``: ``emb``, ``n_classes``, ``size``, ``T``,
        ``schedule``, ``sample_steps``, ``guidance`` (see :meth:`_Denoiser._setup`)."""
        super().__init__()
        self._setup("diffusion_mlp", {"width": width, "depth": depth}, **common)
        emb, size = self.emb_dim, self.image_shape[-1]
        d = size * size
        self.inp = nn.Linear(d, width)
        self.norms = nn.ModuleList(
            [nn.LayerNorm(width, elementwise_affine=False) for _ in range(depth)]
        )
        ada = [nn.Linear(emb, 3 * width) for _ in range(depth)]
        for lin in ada:  # adaLN-zero: every block starts as the identity
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)
        self.ada = nn.ModuleList(ada)
        self.w1 = nn.ModuleList([nn.Linear(width, width) for _ in range(depth)])
        self.w2 = nn.ModuleList([nn.Linear(width, width) for _ in range(depth)])
        self.out_norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, d)
        ab = alpha_bar(self.T, self.schedule).float()
        self.register_buffer("sqrt_ab", ab.sqrt(), persistent=False)
        self.register_buffer("sqrt_1mab", (1 - ab).sqrt(), persistent=False)

    def modulations(self, t: Tensor, y: Optional[Tensor]) -> list[Tensor]:
        """Each block's ``(N, 3·width)`` scale, shift and gate from e = embed(t, y). Without autograd
        (sampling: one t and two labels per DDIM step) on the distinct (t, y) pairs only, then
        gathered: the same values, a quarter of a sampling step's multiply-adds saved."""
        if y is None:
            y = torch.full_like(t, self.null_label, dtype=torch.long)
        if torch.is_grad_enabled() or len(t) < 8:
            e = F.silu(self.embed(t, y))
            return [a(e) for a in self.ada]
        key, inv = torch.unique(t * (self.n_classes + 1) + y, return_inverse=True)
        e = F.silu(self.embed(key // (self.n_classes + 1), key % (self.n_classes + 1)))
        return [a(e)[inv] for a in self.ada]

    def forward(self, x: Tensor, t: Tensor, y: Optional[Tensor] = None) -> Tensor:
        """The predicted noise ε̂, shaped like ``x``."""
        h = self.inp(x.reshape(len(x), -1))
        for n, mod, w1, w2 in zip(self.norms, self.modulations(t, y), self.w1, self.w2):
            s, b, g = mod.chunk(3, dim=1)
            h = h + g * w2(F.silu(w1(n(h) * (1 + s) + b)))
        x0 = self.out(F.silu(self.out_norm(h))).reshape(x.shape)
        sa = self.sqrt_ab.to(x.dtype)[t][:, None, None, None]
        sb = self.sqrt_1mab.to(x.dtype)[t][:, None, None, None]
        return (x - sa * x0) / sb


class DiffusionUNet(_Denoiser):
    """ε_θ(x_t, t, y): images ``(N, 1, 28, 28)`` in [-1, 1], timesteps ``(N,)``, labels ``(N,)``.

    With the default ``channels=(32, 64, 64)`` and ``emb=128`` it has 0.62M parameters. ``T`` and ``schedule`` are the DDPM
    schedule's (kept in the config so a saved model carries the schedule it was trained with).
    """

    def __init__(self, channels: Sequence[int] = (32, 64, 64), **common: Any) -> None:
        """``channels``: at 28, 14 and 7 pixels; ``common`` as :class:`DiffusionMLP`'s."""
        super().__init__()
        ch = [int(c) for c in channels]
        if len(ch) != 3:
            raise ValueError(f"channels needs three entries (28, 14, 7), got {ch}")
        self._setup("diffusion_unet", {"channels": ch}, **common)
        emb = self.emb_dim
        c0, c1, c2 = ch
        self.inp = nn.Conv2d(1, c0, 3, 1, 1)
        self.d0 = ResBlock(c0, c0, emb)
        self.down0 = nn.Conv2d(c0, c1, 3, 2, 1)  # 28 → 14
        self.d1 = ResBlock(c1, c1, emb)
        self.down1 = nn.Conv2d(c1, c2, 3, 2, 1)  # 14 → 7
        self.m0 = ResBlock(c2, c2, emb)
        self.m1 = ResBlock(c2, c2, emb)
        self.up1 = nn.ConvTranspose2d(c2, c1, 4, 2, 1)  # 7 → 14
        self.u1 = ResBlock(2 * c1, c1, emb)
        self.up0 = nn.ConvTranspose2d(c1, c0, 4, 2, 1)  # 14 → 28
        self.u0 = ResBlock(2 * c0, c0, emb)
        self.out_norm = nn.GroupNorm(_groups(c0), c0)
        self.out = nn.Conv2d(c0, 1, 3, 1, 1)

    def forward(self, x: Tensor, t: Tensor, y: Optional[Tensor] = None) -> Tensor:
        """The predicted noise ε̂ ``(N, 1, 28, 28)``."""
        e = self.embed(t, y)
        h0 = self.d0(self.inp(x), e)
        h1 = self.d1(self.down0(h0), e)
        h = self.down1(h1)
        h = self.m1(self.m0(h, e), e)
        h = self.u1(torch.cat([self.up1(h), h1], 1), e)
        h = self.u0(torch.cat([self.up0(h), h0], 1), e)
        return self.out(F.silu(self.out_norm(h)))
