"""PNG outputs with matplotlib only (Agg backend): sample grids and forgetting curves."""

from __future__ import annotations

import os
import textwrap
from typing import Optional, Sequence

import numpy as np
from torch import Tensor

from uno.unlearn.io import atomic_write


def _plt():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def image_grid(x: Tensor, nrow: int = 8, pad: int = 2) -> np.ndarray:
    """Tile images ``(N, C, H, W)`` in [0, 1] into one ``(rows·(H+pad), nrow·(W+pad), 3)`` array."""
    x = x.detach().cpu().clamp(0, 1)
    n, c, h, w = x.shape
    rows = (n + nrow - 1) // nrow
    grid = np.ones((rows * (h + pad) + pad, nrow * (w + pad) + pad, 3), dtype=np.float32)
    for i in range(n):
        r, col = divmod(i, nrow)
        img = x[i].permute(1, 2, 0).numpy()
        if c == 1:
            img = np.repeat(img, 3, axis=2)
        y0, x0 = pad + r * (h + pad), pad + col * (w + pad)
        grid[y0 : y0 + h, x0 : x0 + w] = img
    return grid


def save_grid(path: str | os.PathLike[str], x: Tensor, nrow: int = 8) -> None:
    """Write a sample grid as PNG (atomically)."""
    import matplotlib.image as mpimg

    g = image_grid(x, nrow)
    atomic_write(path, lambda tmp: mpimg.imsave(tmp, g, format="png"))


def save_curves(
    path: str | os.PathLike[str],
    curves: dict[str, Sequence[Sequence[float]]],
    tau: Optional[float] = None,
    title: str = "forgetting",
) -> None:
    """Forget fraction vs step, one line per method (mean with a ±std band over repeats)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, runs in curves.items():
        n = min(len(r) for r in runs)
        a = np.array([list(r)[:n] for r in runs], dtype=float)
        m, s = a.mean(0), a.std(0)
        steps = np.arange(n)
        ax.plot(steps, m, label=name)
        if len(runs) > 1:
            ax.fill_between(steps, m - s, m + s, alpha=0.2)
    if tau is not None:
        ax.axhline(tau, color="k", ls="--", lw=0.8, label=f"τ = {tau}")
    ax.set_xlabel("update step")
    ax.set_ylabel("forget fraction f (after the update)")
    ax.set_title("\n".join(textwrap.wrap(title, 60)), fontsize=10)
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
