"""Measuring forgetting on samples no loss sees, by two judges (issue 14; docs/method.md §4b).

The monitor batch z̄ of a task is what the histogram loss U is optimised on, so f measured on z̄ can be
driven to 0 without the class leaving the generator. :class:`FreshForget` measures f on a fixed set of
fresh latent codes (10,000 by default, seed :data:`FRESH_SEED`, drawn apart from every seed a task or a
loss uses) with one or two judges: each chunk of codes is decoded once (eval mode, inference mode) and every
judge reads the same images. :func:`both` is the headline value: the larger of the two judges' fractions
(forgotten only when neither judge sees the class).

Nothing here draws from torch's global RNG, so measuring never changes what a run draws next (a resumed
run stays bit-identical).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from uno.unlearn.models import sample_images
from uno.unlearn.tasks import in_forget

#: The seed of the fresh codes: fixed across runs (like the FID latents, seed 1234), and apart from the
#: task's monitor batch (``step_seed(seed, -1)``), the GAN latent pool (``step_seed(seed, -2)``) and the
#: steps' batches (``step_seed(seed, step)``), none of which can equal it by construction of their use:
#: each draws from its own generator.
FRESH_SEED = 31_415_926
#: Number of fresh codes of every headline measurement.
N_FRESH = 10_000


def fresh_codes(latent_dim: int, n: int = N_FRESH, seed: int = FRESH_SEED) -> Tensor:
    """``(n, latent_dim)`` standard normal codes from their own generator (the same on every call)."""
    return torch.randn(n, latent_dim, generator=torch.Generator().manual_seed(seed))


def both(fractions: Sequence[float]) -> float:
    """The headline f of several judges: their maximum (NaN entries, judges not measured, are skipped;
    NaN when none was measured)."""
    v = [f for f in fractions if not math.isnan(f)]
    return max(v) if v else float("nan")


class FreshForget:
    """Forget fraction on fixed fresh codes, one value per judge.

    Args:
        judges: one or two frozen classifiers (a ``None`` entry is a judge not available: its f is NaN).
        targets: the forget classes (judge outputs).
        latent_dim: the generator's latent size.
        n: number of fresh codes.
        seed: their seed.
        chunk: codes decoded at a time (bounds the memory of a measurement).
    """

    def __init__(
        self,
        judges: Sequence[Optional[nn.Module]],
        targets: Sequence[int],
        latent_dim: int,
        *,
        n: int = N_FRESH,
        seed: int = FRESH_SEED,
        chunk: int = 1000,
    ) -> None:
        if n < 1:
            raise ValueError(f"FreshForget needs at least one code, got n={n}")
        self.judges = [j.eval() if j is not None else None for j in judges]
        for j in self.judges:
            if j is not None:
                j.requires_grad_(False)
        self.targets = list(targets)
        self.z = fresh_codes(latent_dim, n, seed)
        self.chunk = chunk

    @property
    def n(self) -> int:
        return int(self.z.shape[0])

    def __call__(self, model: nn.Module, n: Optional[int] = None) -> list[float]:
        """f of each judge on the first ``n`` codes (default: all), decoded once per chunk.

        Returns:
            One fraction in [0, 1] per judge (NaN for a missing judge).
        """
        ref = next(model.parameters())
        z = self.z[: self.n if n is None else n].to(ref.dtype).to(ref.device)
        hits = [0] * len(self.judges)
        # inference mode: no autograd bookkeeping at all (the same kernels, the same numbers as no_grad)
        with torch.inference_mode():
            for c in z.split(self.chunk):
                x = sample_images(model, c, chunk=None)
                for i, j in enumerate(self.judges):
                    if j is not None:
                        hits[i] += int(in_forget(j, x, self.targets).sum())
        return [
            hits[i] / len(z) if j is not None else float("nan") for i, j in enumerate(self.judges)
        ]

    def pair(self, model: nn.Module) -> tuple[float, float]:
        """Judges 1 and 2 (NaN for a second judge not given) on every code."""
        f = [*self(model), float("nan")]
        return f[0], f[1]


def for_run(
    judges: Sequence[Optional[nn.Module]], targets: Sequence[int], latent_dim: int, n: int
) -> Optional[FreshForget]:
    """The run loop's measure: ``n`` fresh codes (``None`` for ``n == 0``: not measured)."""
    return FreshForget(judges, targets, latent_dim, n=n) if n else None
