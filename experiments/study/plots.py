"""Figures of the study from the saved results (no training, no unlearning: reads JSON/CSV only).

    PYTHONPATH=python python experiments/study/plots.py [--study study10]

Writes under ``experiments/results/`` (``--study`` names the sweep folder the study figures read and are written to,
``study`` by default; ``study10`` holds the 10-seed sweeps):
  forgetting_all.png   forgetting curves of every method of the VAE tables (table, table_more, table_hat_more;
                       mean ± std over seeds), one figure
  forgetting_gan_all.png  the same for the GAN tables of the default generator (table_gan1000, table_gan1000_more)
  study/hist_curves.png  f vs step for the histogram-loss / BatchNorm grid (eval-BN monitor and paper's monitor)
  study/cos2.png       c² of the step's gradients vs step (uno, surgery, their -hat variants)
  study/fid_vs_steps.png  classifier FID vs step (fidcurve group)
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

RES = Path(__file__).resolve().parents[1] / "results"


def _save(plt: Any, fig: Any, path: Path) -> None:
    """Lay the figure out, write it at the study's resolution and free it."""
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plt():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _band(ax, runs: list[list[float]], label: str, **kw) -> None:  # type: ignore[no-untyped-def]
    n = min(len(r) for r in runs)
    a = np.array([r[:n] for r in runs], dtype=float)
    m, s = np.nanmean(a, 0), np.nanstd(a, 0)
    x = np.arange(n)
    (line,) = ax.plot(x, m, label=f"{label} (n={len(runs)})", **kw)
    if len(runs) > 1:
        ax.fill_between(x, m - s, m + s, alpha=0.15, color=line.get_color())


VAE_TABLES = ("table", "table_more", "table_hat_more", "table_all3")
GAN_TABLES = ("table_gan1000", "table_gan1000_more")


def table_curves(
    tables: Sequence[str] = VAE_TABLES,
    out: str = "forgetting_all.png",
    title: str = "MNIST VAE, forget digit 1",
    ylabel: str = "forget fraction f after the update (eval-mode BN)",
) -> None:
    """One figure with the forgetting curves of every method found in ``tables`` (first folder wins)."""
    curves: dict[str, dict[int, list[float]]] = {}
    for name in tables:
        p = RES / name / "curves.csv"
        if not p.is_file():
            continue
        here: dict[str, dict[int, list[float]]] = {}
        with open(p) as f:
            for r in csv.DictReader(f):
                d = here.setdefault(r["method"], {})
                d.setdefault(int(r["seed"]), []).append(float(r["f"]))
        for m, d in here.items():  # each method from the first folder that has it
            curves.setdefault(m, d)
    if not curves:
        return
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5), sharey=True)
    for i, (m, seeds) in enumerate(sorted(curves.items())):
        ax = axes[0] if not m.endswith("-hat") and m not in ("fu", "salun") else axes[1]
        _band(ax, list(seeds.values()), m, ls="-" if i < 10 else "--")
    for ax, t in zip(axes, ("without histogram loss", "histogram loss (-hat, w_u=1e3), fu, salun")):
        ax.axhline(0.02, color="k", ls=":", lw=0.8)
        ax.set_xlabel("update step")
        ax.set_title(t)
        ax.legend(fontsize=7, ncol=2)
    axes[0].set_ylabel(ylabel)
    fig.suptitle(f"{title}: forgetting curves, mean ± std over seeds")
    _save(plt, fig, RES / out)


def _load(group: str, study: str = "study") -> list[dict]:
    p = RES / study / f"{group}.json"
    return json.loads(p.read_text()) if p.is_file() else []


def hist_curves(study: str = "study") -> None:
    res = _load("hist", study)
    if not res:
        return
    plt = _plt()
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), sharey=True)
    by: dict[str, list[dict]] = {}
    for r in res:
        by.setdefault(r["label"], []).append(r)
    for lab, rs in by.items():
        col = 1 if "BN train" in lab else 0
        for row, key in ((0, "f"), (1, "f_bn")):
            _band(axes[row][col], [[x[key] for x in r["rows"]] for r in rs], lab.split(",")[0])
    for col, t in enumerate(("BN frozen (drivers' default)", "BN train (the paper's code)")):
        axes[0][col].set_title(f"{t}: f, eval-mode monitor (the rule)")
        axes[1][col].set_title(f"{t}: f, train-mode-BN monitor (the paper's)")
    for ax in axes.flat:
        ax.axhline(0.02, color="k", ls=":", lw=0.8)
        ax.legend(fontsize=7)
        ax.set_xlabel("update step")
    _save(plt, fig, RES / study / "hist_curves.png")
    # c² along the run
    fig, ax = plt.subplots(figsize=(7, 4))
    for lab, rs in by.items():
        if lab.split(",")[0] in ("retain", "retain-hat"):
            continue
        runs = [[x["cos2"] for x in r["rows"][1:]] for r in rs]
        if all(all(math.isnan(v) for v in run) for run in runs):
            continue
        _band(ax, runs, lab)
    ax.set_yscale("log")
    ax.set(xlabel="update step", ylabel="c² = cos²(g_f, g_r) of the step")
    ax.legend(fontsize=7)
    _save(plt, fig, RES / study / "cos2.png")


def fid_curves(study: str = "study") -> None:
    res = _load("fidcurve", study)
    if not res:
        return
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    by: dict[str, list[dict]] = {}
    for r in res:
        by.setdefault(r["label"].split(",")[0], []).append(r)
    for lab, rs in by.items():
        steps = [x["step"] for x in rs[0]["rows"] if "fid" in x]
        vals = np.array([[x["fid"] for x in r["rows"] if "fid" in x] for r in rs])
        ax.errorbar(
            steps,
            vals.mean(0),
            yerr=vals.std(0) if len(rs) > 1 else None,
            label=lab,
            marker="o",
            ms=3,
        )
    ax.set_xscale("symlog", linthresh=1)
    ax.set(xlabel="update step", ylabel="classifier FID (judge features, 2,000 images)")
    ax.set_title("FID vs steps (BN frozen)")
    ax.legend(fontsize=7)
    _save(plt, fig, RES / study / "fid_vs_steps.png")


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(
        description="figures of the tables and the study (reads results only)"
    )
    ap.add_argument(
        "--study", default="study", help="sweep folder under experiments/results/ (study, study10)"
    )
    a = ap.parse_args(argv)
    if not (RES / a.study).is_dir():
        raise SystemExit(f"no folder {RES / a.study}")
    table_curves()
    table_curves(
        GAN_TABLES,
        "forgetting_gan_all.png",
        "MNIST WGAN-GP generator (1,000 steps), forget digit 1",
        "forget fraction f of the monitor latents after the update",
    )
    hist_curves(a.study)
    fid_curves(a.study)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
