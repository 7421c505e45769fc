"""PNG outputs with matplotlib only (Agg backend): sample grids and forgetting curves."""

from __future__ import annotations

import os
import textwrap
from typing import Any, Mapping, Optional, Sequence

import numpy as np
from torch import Tensor

from uno.unlearn.io import atomic_write


def _plt():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def image_grid(
    x: Tensor, nrow: int = 8, pad: int = 2, marks: Optional[Sequence[bool]] = None
) -> np.ndarray:
    """Tile images ``(N, C, H, W)`` in [0, 1] into one ``(rows·(H+pad), nrow·(W+pad), 3)`` array;
    images with ``marks[i]`` get a red frame (in the padding, the image itself untouched)."""
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
        if marks is not None and marks[i]:
            grid[y0 - pad : y0 + h + pad, x0 - pad : x0 + w + pad] = (0.9, 0.05, 0.05)
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
    ylabel: str = "forget fraction f (after the update)",
) -> None:
    """Forget fraction vs step, one line per method (mean with a ±std band over repeats)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    _curves(ax, curves, tau)
    ax.set_xlabel("update step")
    ax.set_ylabel(ylabel)
    ax.set_title("\n".join(textwrap.wrap(title, 60)), fontsize=10)
    ax.legend(fontsize=7 if len(curves) > 6 else None)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


#: line styles that tell more than ten methods apart (the colour cycle has ten colours)
LINE_STYLES = ("-", "--", "-.", ":")


def line_style(i: int) -> tuple[str, str]:
    """``(colour, line style)`` of the ``i``-th line: ten colours, then the next dash pattern, so no
    two of the first 40 lines look alike."""
    return f"C{i % 10}", LINE_STYLES[(i // 10) % len(LINE_STYLES)]


def _curves(ax: Any, curves: dict[str, Sequence[Sequence[float]]], tau: Optional[float]) -> None:
    """Mean ± std lines of ``curves`` (method → runs) on ``ax``, and the τ line."""
    for i, (name, runs) in enumerate(curves.items()):
        n = min(len(r) for r in runs)
        a = np.array([list(r)[:n] for r in runs], dtype=float)
        m, s = a.mean(0), a.std(0)
        steps = np.arange(n)
        color, ls = line_style(i)
        ax.plot(steps, m, label=name, color=color, ls=ls)
        if len(runs) > 1:
            ax.fill_between(steps, m - s, m + s, alpha=0.2, color=color)
    if tau is not None:
        ax.axhline(tau, color="k", ls="--", lw=0.8, label=f"τ = {tau}")


def save_relearning(
    path: str | os.PathLike[str],
    attacks: dict[str, dict[str, Sequence[Sequence[float]]]],
    threshold: float,
    title: str = "relearning",
) -> None:
    """One panel per attack (name → method → runs of f per attack step, mean ± std), with the line
    ``threshold`` (½·f of the original model)."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(attacks), figsize=(6 * len(attacks), 4), squeeze=False)
    for ax, (name, curves) in zip(axes[0], attacks.items()):
        _curves(ax, curves, None)
        ax.axhline(threshold, color="k", ls=":", lw=0.8, label=f"½·f₀ = {threshold:.3g}")
        ax.set_xlabel("attack step")
        ax.set_ylabel("f (fresh codes, both judges)")
        ax.set_title(name, fontsize=10)
        ax.legend(fontsize=7 if len(curves) > 6 else None)
    fig.suptitle("\n".join(textwrap.wrap(title, 100)), fontsize=10)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


def save_sample_sheet(
    path: str | os.PathLike[str],
    panels: Mapping[str, tuple[Tensor, Sequence[bool], str]],
    title: str = "",
    ncols: int = 4,
) -> None:
    """Labelled sample grids side by side in one figure: ``name → (images, marks, caption)``; marked
    images (the judge's forgotten-class calls) get a red frame. Each panel is drawn about 450 px wide."""
    plt = _plt()
    n = len(panels)
    cols = min(ncols, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (name, (x, marks, caption)) in zip(axes.flat, panels.items()):
        ax.imshow(image_grid(x, 8, 2, marks), interpolation="nearest")
        ax.set_title(f"{name}\n{caption}", fontsize=9)
    if title:
        fig.suptitle("\n".join(textwrap.wrap(title, 110)), fontsize=10)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=140))
    plt.close(fig)
