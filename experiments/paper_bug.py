"""The paper's MNIST UNO numbers come from a swapped weight tuple: this script reproduces the bug by code.

The bug (authors' repository pinakm9/forget, ``modules/mnist/vae_ortho.py`` at commit bee54c0, the one
holding the published data): the step unpacks

    kl_weight, orthogonality_weight, uniformity_weight, forget_weight = weights          # line 42

while ``train`` builds the tuple as

    (kl_weight, uniformity_weight, orthogonality_weight, forget_weight)                  # line 162

so the step reads the uniformity weight as the orthogonality weight and vice versa. Commit c63489b
("tuple bugfix") swaps the tuple back. The step minimises

    forget_weight·ℓ_f + ℓ_r + orthogonality_weight·c² + uniformity_weight·U,
    c² = (g_f·g_r)² / (‖g_f‖²‖g_r‖²),  g_f = ∇(ℓ_f + uniformity_weight·U),  g_r = ∇(ℓ_r + uniformity_weight·U)

with g_f, g_r built with ``create_graph=True`` (so c² is differentiated, second order), ℓ the sum-reduced
negative ELBO with KL weight ``kl_weight`` and U the histogram ("uniformity") loss on the fixed latent codes
that the forget fraction is measured on.

In the drivers' terms (python/uno/unlearn/tasks.py and methods/*.py): ``task.forget_loss() = ℓ_f + w_u·U``
and ``task.retain_loss() = ℓ_r + w_u·U`` (w_u: the task's histogram weight, ``RunConfig.w_u`` for the
``-hat`` variants, U on the monitor batch z̄ that f is measured on, as in the paper); ``uno``/``uno-paper``
minimise ``L_r + λ·c²(∇L_f, ∇L_r)`` (λ: ``lam``); ``retain-hat`` is plain descent on ``L_r``. So the
paper's step with the weights **as it reads them** is the ``uno-paper`` step
(experiments/paper_uno_step.py, same flat-vector double backprop) with

    λ   = the step's orthogonality_weight,
    w_u = the step's uniformity_weight,
    the VAE's β = kl_weight (the drivers' MnistVAE has β = 1, the paper's setting),
    forget_weight = 0 (the drivers' ``uno`` has no ℓ_f term in its loss; 0 is the paper's default).

The published ``vae-o`` runs were configured with orthogonality 1000, uniformity 0, forget 0, KL 1;
``train`` passed ``(1, 0, 1000, 0)``, which the step read as orthogonality 0, uniformity 1000. So the
published runs took ``uno-paper`` steps with **λ = 0, w_u = 1e3**: ℓ_r + 1e3·U + 0·c², i.e. exactly
``retain-hat`` (w_u = 1e3), while still paying for the cos² double backward (×0). The corrected call gives
**λ = 1e3, w_u = 0**: plain ``uno`` at the paper's λ. (The same swap in ``vae_hat.py``, whose loss has no c²
term, read "uniformity 1e3, orthogonality 0" as uniformity 0: the published ``vae-hat`` run was plain retain
descent.)

What the script does, on the drivers' cached VAE and judge (``UNO_CACHE_DIR``):
  1. From one state, with the same batches and the same noise, one Adam step of each configuration:
     the buggy call (``uno-paper-hat``, λ = 0, w_u = 1e3), ``retain-hat`` (w_u = 1e3), the corrected call
     (``uno-paper``, λ = 1e3, w_u = 0) and plain ``retain``; prints the differences of the step directions
     and of the parameters after the step. The buggy step equals ``retain-hat`` to float rounding, the
     corrected one does not. Same noise: each step seeds torch's RNG from (seed, step)
     (``Task.begin_step``); the paper's step draws the forget batch's reparameterisation noise before the
     retain batch's, ``retain`` draws only the retain batch's, so the ``retain`` steps first run the forget
     batch's forward without a graph (value discarded), exactly as the paper's step runs it.
  2. Each configuration for ``--steps`` updates on ``--seeds`` seeds: f after every update by the drivers'
     rule (docs/method.md §4: monitor decoded in eval mode, measured after each update; steps to forget = the
     first number of updates with f < τ) and by the paper's monitor (the same codes decoded with BatchNorm
     in train mode, logged before each update: the reference code's log row t holds f after t − 1 updates,
     and its steps to forget is that row number) and on 10,000 fixed fresh codes per seed that no loss
     sees (the histogram loss U is computed on z̄, the codes f is measured on), written to ``--out`` as ``table.md``, ``runs.csv`` (one
     row per configuration and seed, f per step), ``equality.csv``, ``meta.json`` and ``curves.png``.
     BatchNorm statistics stay frozen during the updates (the drivers' default); ``--bn-train`` runs them
     in train mode as the paper did.

Usage::

    UNO_CACHE_DIR=... PYTHONPATH=python python experiments/paper_bug.py --seeds 10 --steps 20 --threads 1
    PYTHONPATH=python python experiments/paper_bug.py --quick       # 2 seeds, 5 steps, a smoke run
    PYTHONPATH=python python experiments/paper_bug.py --plot-only   # redraw curves.png from runs.csv
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))  # experiments/ (paper_uno_step)

import paper_uno_step  # noqa: F401  (registers the uno-paper methods)
from step_cost import step as adam_step
from study.common import f_trainmode  # the paper's monitor (BatchNorm in train mode)

from uno.unlearn import methods
from uno.unlearn.data import ImageData
from uno.unlearn.models import sample_images
from uno.unlearn.tasks import VAETask, in_forget, step_seed

RESULTS = Path(__file__).resolve().parent / "results" / "paper_bug"
FORGET = [1]
#: fresh latent codes per seed on which f is also measured (no loss ever sees them)
N_FRESH = 10_000
#: relative difference of two steps below which the script calls them equal (float32 rounding)
EQUAL_RTOL = 1e-5


@dataclass(frozen=True)
class PaperWeights:
    """The weights of the paper's ``vae_ortho`` step, named as the step uses them."""

    kl: float
    orthogonality: float
    uniformity: float
    forget: float


def call_tuple(w: PaperWeights) -> tuple[float, float, float, float]:
    """The tuple ``train`` passes to the step at bee54c0 (line 162): kl, uniformity, orthogonality, forget."""
    return (w.kl, w.uniformity, w.orthogonality, w.forget)


def as_read_by_step(passed: Sequence[float]) -> PaperWeights:
    """How the step at bee54c0 unpacks the tuple it is given (line 42): kl, orthogonality, uniformity, forget."""
    if len(passed) != 4:
        raise ValueError(f"passed: expected the 4 weights of the paper's step, got {len(passed)}")
    kl, orthogonality, uniformity, forget = (float(x) for x in passed)
    return PaperWeights(kl, orthogonality, uniformity, forget)


#: the configuration of the published ``vae-o`` runs
PUBLISHED = PaperWeights(kl=1.0, orthogonality=1e3, uniformity=0.0, forget=0.0)


def drivers_terms(w: PaperWeights) -> dict[str, float]:
    """The drivers' hyperparameters of the paper's step with weights ``w``: ``{"lam": λ, "w_u": w_u}``.

    Raises:
        TypeError: a weight is not a real number.
        ValueError: a weight is not finite or negative, ``w.kl`` is not the drivers' β = 1, or
            ``w.forget`` is not 0 (the drivers' ``uno`` step has no ℓ_f term).
    """
    for name in ("kl", "orthogonality", "uniformity", "forget"):
        v = getattr(w, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(f"{name} weight must be a real number, got {type(v).__name__} {v!r}")
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"{name} weight must be finite and >= 0, got {v!r}")
    if w.kl != 1.0:
        raise ValueError(f"kl weight must be 1 (the drivers' VAE has β = 1), got {w.kl!r}")
    if w.forget != 0.0:
        raise ValueError(
            f"forget weight must be 0 (the drivers' uno step has no ℓ_f term), got {w.forget!r}"
        )
    return {"lam": w.orthogonality, "w_u": w.uniformity}


@dataclass(frozen=True)
class Config:
    """One configuration run by the script: a drivers' method, its λ and the task's w_u."""

    key: str
    label: str
    method: str
    lam: Optional[float]
    w_u: float

    @property
    def replay_forget(self) -> bool:
        """Whether the step must first run the forget forward to draw the paper's noise (``retain``)."""
        return self.method.removesuffix("-hat") == "retain"


def paper_config(key: str, label: str, w: PaperWeights) -> Config:
    """The ``uno-paper`` step with the weights ``w`` as the step reads them."""
    t = drivers_terms(w)
    name = "uno-paper-hat" if t["w_u"] else "uno-paper"
    return Config(key, label, name, t["lam"], t["w_u"])


def configs(published: PaperWeights = PUBLISHED) -> dict[str, Config]:
    """The buggy and the corrected call of ``published`` and their first-order twins (``retain[-hat]``)."""
    buggy = paper_config("buggy", "buggy call", as_read_by_step(call_tuple(published)))
    fixed = paper_config("corrected", "corrected call", published)
    out = {c.key: c for c in (buggy, fixed)}
    out["retain-hat"] = Config("retain-hat", "retain-hat", "retain-hat", None, buggy.w_u)
    out["retain"] = Config("retain", "retain", "retain", None, 0.0)
    return out


@dataclass
class Models:
    """What every run starts from: the pretrained VAE (copied per run), the judge and the training data."""

    vae: nn.Module
    judge: nn.Module
    train: ImageData


def fresh_codes(seed: int, zdim: int, n: Optional[int] = None) -> Tensor:
    """``n`` (default ``N_FRESH``) fixed latent codes per seed, disjoint in seed from the monitor batch z̄."""
    g = torch.Generator().manual_seed(step_seed(seed, -3))  # -1: the monitor, -2: the GAN pool
    return torch.randn(N_FRESH if n is None else n, zdim, generator=g)


@dataclass
class Run:
    """One configuration on one seed: f after every update (``f[0]``: before), the first step's details.

    ``f_paper[t]``: the paper's monitor after t updates (z̄ decoded with BatchNorm in train mode, as the
    reference code's step decodes it); the paper logs it in row t + 1, before update t + 1.
    ``f_fresh[t]``: f on ``N_FRESH`` fixed fresh codes that no loss sees (eval mode), after t updates.
    """

    f: list[float]
    f_paper: list[float]
    f_fresh: list[float]
    theta0: list[Tensor]
    direction1: list[Tensor]
    theta1: list[Tensor]


class PaperNoiseOrder:
    """A drivers' method whose step draws its noise in the paper's order; keeps its first direction.

    The paper's step (and ``uno-paper``) runs the forget batch's forward before the retain batch's, so the
    retain batch's reparameterisation noise is the second draw from the step's RNG; ``retain`` runs only the
    retain forward. With ``replay_forget`` the forget forward runs first (no graph, value discarded), which
    gives ``retain`` the paper's noise and changes nothing else (with ``--bn-train`` it moves the BatchNorm
    running statistics, as the paper's forget forward does).
    """

    def __init__(self, method: Any, replay_forget: bool) -> None:
        self.method = method
        self.replay_forget = replay_forget
        self.first: list[Tensor] = []

    def setup(self, task: Any) -> None:
        self.method.setup(task)

    def direction(self, task: Any, step: int) -> tuple[list[Tensor], Any]:
        if self.replay_forget:
            with torch.no_grad():
                task.ell_forget()
        d, info = self.method.direction(task, step)
        if not self.first:
            self.first = [t.detach().clone() for t in d]
        return d, info


def run(
    cfg: Config,
    models: Models,
    seed: int,
    steps: int,
    *,
    lr: float = 1e-3,
    bn_train: bool = False,
    batch: int = 128,
) -> Run:
    """``steps`` Adam updates of ``cfg`` from the pretrained state; f measured after each (the drivers' rule)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps!r}")
    model = copy.deepcopy(models.vae).requires_grad_(True)
    task = VAETask(
        model, models.judge, models.train, FORGET, batch=batch, w_u=cfg.w_u, seed=seed,
        bn_train=bn_train,
    )  # fmt: skip
    method = PaperNoiseOrder(
        methods.create(cfg.method, **({} if cfg.lam is None else {"lam": cfg.lam})),
        replay_forget=cfg.replay_forget,
    )
    opt = torch.optim.Adam(task.params, lr=lr)
    task.begin_step(0)
    method.setup(task)
    task.end_step()
    theta0 = [p.detach().clone() for p in task.params]
    z_fresh = fresh_codes(seed, task.zdim).to(task.dtype)

    def fresh() -> float:
        x = sample_images(model, z_fresh)
        return float(in_forget(models.judge, x, FORGET).float().mean())

    f = [task.forget_fraction()]
    f_paper = [f_trainmode(task)]
    f_fresh = [fresh()]
    theta1: list[Tensor] = []
    for s in range(1, steps + 1):
        adam_step(task, method, opt, s)  # the drivers' step: batches, direction, Adam
        if s == 1:
            theta1 = [p.detach().clone() for p in task.params]
        f.append(task.forget_fraction())
        f_paper.append(f_trainmode(task))
        f_fresh.append(fresh())
    direction1 = method.first
    return Run(f, f_paper, f_fresh, theta0, direction1, theta1)


def difference(
    a: Sequence[Tensor], b: Sequence[Tensor], ref: Optional[Sequence[Tensor]] = None
) -> dict[str, float]:
    """``max |a − b|`` and ``‖a − b‖ / ‖b − ref‖`` (``ref`` None: ``‖b‖``), float64 accumulation."""
    num = den = 0.0
    mx = 0.0
    for i, (x, y) in enumerate(zip(a, b)):
        dx = x.double() - y.double()
        mx = max(mx, float(dx.abs().max()))
        num += float((dx * dx).sum())
        base = y.double() - ref[i].double() if ref is not None else y.double()
        den += float((base * base).sum())
    rel = math.sqrt(num) / math.sqrt(den) if den > 0 else (0.0 if num == 0 else math.inf)
    return {"max_abs": mx, "rel": rel}


#: (a, b): the pairs of one-step comparisons; the first must be equal, the others must differ
PAIRS = (("buggy", "retain-hat"), ("corrected", "buggy"), ("corrected", "retain"))


def one_step_comparison(
    models: Models, seed: int = 0, *, lr: float = 1e-3, bn_train: bool = False
) -> list[dict[str, Any]]:
    """One step of each configuration from the same state, batches and noise; the differences of ``PAIRS``.

    Each row: ``a``, ``b``, the direction's ``dir_max_abs``/``dir_rel`` (relative to ‖d_b‖), the parameters'
    ``theta_max_abs``/``theta_rel`` (relative to b's update ‖θ_b − θ_0‖) and ``equal`` (both rel ≤ EQUAL_RTOL).
    """
    cs = configs()
    runs = {k: run(cs[k], models, seed, 1, lr=lr, bn_train=bn_train) for k in cs}
    rows = []
    for a, b in PAIRS:
        d = difference(runs[a].direction1, runs[b].direction1)
        t = difference(runs[a].theta1, runs[b].theta1, ref=runs[b].theta0)
        rows.append(
            {
                "a": a, "b": b, "dir_max_abs": d["max_abs"], "dir_rel": d["rel"],
                "theta_max_abs": t["max_abs"], "theta_rel": t["rel"],
                "equal": d["rel"] <= EQUAL_RTOL and t["rel"] <= EQUAL_RTOL,
            }
        )  # fmt: skip
    return rows


@dataclass
class Curves:
    """Per configuration, ``[seed][step]``: f by the drivers' rule, the paper's monitor, fresh codes (``Run``)."""

    seeds: list[int]
    f: dict[str, list[list[float]]]
    f_paper: dict[str, list[list[float]]]
    f_fresh: dict[str, list[list[float]]]


def run_seeds(
    models: Models,
    seeds: Sequence[int],
    steps: int,
    *,
    keys: Sequence[str] = ("buggy", "corrected", "retain-hat", "retain"),
    lr: float = 1e-3,
    bn_train: bool = False,
    progress: bool = False,
) -> Curves:
    """The three measurements of f per step of each configuration in ``keys`` on each seed."""
    if not seeds:
        raise ValueError("seeds must name at least one seed, got none")
    cs = configs()
    unknown = [k for k in keys if k not in cs]
    if unknown:
        raise ValueError(f"keys: unknown configuration {unknown[0]!r}; choose from {', '.join(cs)}")
    out = Curves([int(s) for s in seeds], *({k: [] for k in keys} for _ in range(3)))
    for s in out.seeds:
        for k in keys:
            r = run(cs[k], models, s, steps, lr=lr, bn_train=bn_train)
            out.f[k].append(r.f)
            out.f_paper[k].append(r.f_paper)
            out.f_fresh[k].append(r.f_fresh)
        if progress:
            print(f"  seed {s} done", file=sys.stderr, flush=True)
    return out


def first_below(f: Sequence[float], tau: float) -> Optional[int]:
    """Steps to forget: the first update count ``s`` with ``f[s] < τ``; None when not reached."""
    return next((s for s, v in enumerate(f) if v < tau), None)


def paper_count(f_paper: Sequence[float], tau: float) -> Optional[int]:
    """The paper's count: the log row (from 1) whose value, taken before that row's update, is < τ."""
    s = first_below(f_paper, tau)
    return None if s is None else s + 1


def _ms(v: Sequence[float]) -> str:
    m = statistics.fmean(v)
    return f"{m:.3f} ± {statistics.pstdev(v):.3f}" if len(v) > 1 else f"{m:.3f}"


def _steps(hit: Sequence[int]) -> str:
    """``median (mean ± std) [range]`` of the seeds that reached τ; "—" when none did."""
    if not hit:
        return "—"
    sd = f" ± {statistics.pstdev(hit):.1f}" if len(hit) > 1 else ""
    return f"{statistics.median(hit):g} ({statistics.fmean(hit):.1f}{sd}) [{min(hit)}–{max(hit)}]"


def summarize(curves: Curves, tau: float) -> list[dict[str, Any]]:
    """One row per configuration: reached count, steps to forget (three counts), f after some steps."""
    rows = []
    for key, runs in curves.f.items():
        hit = [s for s in (first_below(f, tau) for f in runs) if s is not None]
        paper = [s for s in (paper_count(f, tau) for f in curves.f_paper[key]) if s is not None]
        fresh = [s for s in (first_below(f, tau) for f in curves.f_fresh[key]) if s is not None]
        n = len(runs[0]) - 1
        row: dict[str, Any] = {
            "key": key, "seeds": len(runs), "reached": len(hit), "steps": _steps(hit),
            "paper_reached": len(paper), "paper_steps": _steps(paper),
            "fresh_reached": len(fresh), "fresh_steps": _steps(fresh),
        }  # fmt: skip
        for s in sorted({0, 1, 2, 3, 5, n} & set(range(n + 1))):
            row[f"f{s}"] = _ms([f[s] for f in runs])
        row["fresh_end"] = _ms([f[n] for f in curves.f_fresh[key]])
        rows.append(row)
    return rows


def max_curve_gap(a: list[list[float]], b: list[list[float]]) -> float:
    """``max |f_a − f_b|`` over seeds and steps (the buggy run against ``retain-hat``)."""
    return max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb))


def markdown(
    eq: list[dict[str, Any]], summary: list[dict[str, Any]], tau: float, gap: Optional[float]
) -> str:
    """The result page: the one-step equality and the multi-seed table."""
    cs = configs()
    lines = [
        "# The paper's bug, reproduced (experiments/paper_bug.py)",
        "",
        "One Adam step from the same state, batches and noise (direction: ‖d_a − d_b‖/‖d_b‖; parameters:",
        "‖θ_a − θ_b‖/‖θ_b − θ_0‖, i.e. relative to b's update):",
        "",
        "| a | b | direction max abs | direction rel | parameters max abs | parameters rel | equal |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in eq:
        lines.append(
            f"| {r['a']} | {r['b']} | {r['dir_max_abs']:.3g} | {r['dir_rel']:.3g} | "
            f"{r['theta_max_abs']:.3g} | {r['theta_rel']:.3g} | {'yes' if r['equal'] else 'no'} |"
        )
    fcols = [k for k in summary[0] if k.startswith("f") and k[1:].isdigit()]
    lines += [
        "",
        f"Steps to forget (f < τ = {tau}): by the drivers' rule (f after each update, monitor decoded in",
        "eval mode: the number of updates) and in the paper's count (the same codes decoded with BatchNorm in",
        "train mode, logged before each update: the log row, from 1). Median (mean ± std) [range] over the",
        "seeds that reached it (with the count that did when not all did); on fresh codes: f on",
        f"{N_FRESH:,} fixed codes per seed that no loss sees, after each update; f (drivers' rule) after the",
        "given number of updates, mean ± std over all seeds.",
        "",
        "| configuration | drivers' method | λ | w_u | reached | steps to forget | paper's count | "
        "steps on fresh codes | "
        + " | ".join(f"f after {c[1:]}" for c in fcols)
        + f" | f after {fcols[-1][1:]}, fresh codes |",
        "|---|---|---|---|---|---|---|---|" + "---|" * (len(fcols) + 1),
    ]
    for r in summary:
        c = cs[r["key"]]
        lam = "—" if c.lam is None else f"{c.lam:g}"
        paper, fresh = (
            r[f"{m}_steps"]
            + (f", {r[f'{m}_reached']}/{r['seeds']}" if 0 < r[f"{m}_reached"] < r["seeds"] else "")
            for m in ("paper", "fresh")
        )
        lines.append(
            f"| {c.label} | `{c.method}` | {lam} | {c.w_u:g} | {r['reached']}/{r['seeds']} | "
            f"{r['steps']} | {paper} | {fresh} | "
            + " | ".join(r[k] for k in fcols)
            + f" | {r['fresh_end']} |"
        )
    if gap is not None:
        lines += ["", f"Largest |f(buggy) − f(retain-hat)| over all seeds and steps: {gap:.3g}."]
    return "\n".join(lines) + "\n"


def save_figure(path: Path, curves: Curves, tau: float, bn_train: bool = False) -> None:
    """f vs update step, mean ± std band over seeds; the paper's configurations solid, their twins dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cs = configs()
    style: dict[str, dict[str, Any]] = {
        "buggy": dict(color="tab:red", lw=2.2),
        "corrected": dict(color="tab:blue", lw=2.2),
        "retain-hat": dict(color="black", lw=1.2, ls="--"),
        "retain": dict(color="dimgray", lw=1.2, ls=":"),
    }
    fig, ax = plt.subplots(figsize=(7.5, 5.2))
    for key, runs in curves.f.items():
        a = np.array(runs, dtype=float)
        m, s = a.mean(0), a.std(0)
        x = np.arange(a.shape[1])
        c = cs[key]
        lam = "" if c.lam is None else f"λ={c.lam:g}, "
        label = f"{c.label}: {c.method} ({lam}w_u={c.w_u:g})"
        (line,) = ax.plot(x, m, label=label, **style.get(key, {}))
        if key in ("buggy", "corrected") and len(runs) > 1:
            ax.fill_between(x, m - s, m + s, alpha=0.18, color=line.get_color())
    ax.axhline(tau, color="k", lw=0.8, ls="-.", label=f"τ = {tau}")
    ax.set_xlabel("updates")
    ax.set_ylabel("forget fraction f (after the update)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_title(
        "The paper's vae-o weights as passed (buggy) and as meant (corrected)\n"
        f"{len(curves.seeds)} seeds, mean ± std; BatchNorm {'in train mode' if bn_train else 'frozen'}"
        " during the updates",
        fontsize=10,
    )
    ax.set_ylim(bottom=0)
    # below the axes: inside, it would cover a band in one of the two BatchNorm modes
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_results(
    out: Path, eq: list[dict[str, Any]], curves: Curves, tau: float, meta: dict[str, Any]
) -> str:
    """Write ``table.md``, ``runs.csv``, ``equality.csv``, ``meta.json``, ``curves.png`` under ``out``.

    ``runs.csv``: one row per configuration and seed, with the three step counts, ``f0..fN`` (the drivers'
    rule), ``paper_f0..paper_fN`` (the paper's monitor) and ``fresh_f0..fresh_fN`` (fresh codes), each after
    0..N updates.
    """
    out.mkdir(parents=True, exist_ok=True)
    gap = (
        max_curve_gap(curves.f["buggy"], curves.f["retain-hat"])
        if "buggy" in curves.f and "retain-hat" in curves.f
        else None
    )
    md = markdown(eq, summarize(curves, tau), tau, gap)
    (out / "table.md").write_text(md)
    with open(out / "equality.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(eq[0]))
        w.writeheader()
        w.writerows(eq)
    cs = configs()
    n = len(next(iter(curves.f.values()))[0])
    with open(out / "runs.csv", "w", newline="") as fh:
        w2 = csv.writer(fh)
        w2.writerow(
            [
                "config",
                "method",
                "lam",
                "w_u",
                "seed",
                "steps_to_forget",
                "paper_count",
                "fresh_steps",
            ]
            + [f"f{s}" for s in range(n)]
            + [f"paper_f{s}" for s in range(n)]
            + [f"fresh_f{s}" for s in range(n)]
        )
        for key, runs in curves.f.items():
            c = cs[key]
            for seed, f, fp, ff in zip(
                curves.seeds, runs, curves.f_paper[key], curves.f_fresh[key]
            ):
                hits = (first_below(f, tau), paper_count(fp, tau), first_below(ff, tau))
                w2.writerow(
                    [key, c.method, "" if c.lam is None else c.lam, c.w_u, seed]
                    + ["" if h is None else h for h in hits]
                    + [f"{v:.6f}" for v in (*f, *fp, *ff)]
                )
    meta = {**meta, "seeds": curves.seeds, "max_f_gap_buggy_vs_retain_hat": gap}
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    save_figure(out / "curves.png", curves, tau, bool(meta.get("bn_train", False)))
    return md


def read_runs(path: Path) -> Curves:
    """The curves of a ``runs.csv`` written by :func:`write_results` (to redraw the figure)."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "config" not in rows[0]:
        raise ValueError(
            f"{path}: not a runs.csv of experiments/paper_bug.py (no rows or no 'config' column)"
        )
    n = sum(1 for k in rows[0] if k.startswith("f") and k[1:].isdigit())
    out = Curves([], {}, {}, {})
    for r in rows:
        if int(r["seed"]) not in out.seeds:
            out.seeds.append(int(r["seed"]))
        for prefix, d in (("f", out.f), ("paper_f", out.f_paper), ("fresh_f", out.f_fresh)):
            d.setdefault(r["config"], []).append([float(r[f"{prefix}{s}"]) for s in range(n)])
    return out


def load_models() -> Models:
    """The drivers' cached VAE and judge (trained on the embedded digits on first use) and the data."""
    from uno.unlearn.data import load_mnist
    from uno.unlearn.train import get_or_train

    train, _ = load_mnist()
    vae, _ = get_or_train("vae", quiet=True)
    judge, _ = get_or_train("judge", quiet=True)
    return Models(vae, judge, train)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1 (default 10)")
    ap.add_argument("--steps", type=int, default=20, help="updates per run (default 20)")
    ap.add_argument("--tau", type=float, default=0.02)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--bn-train", action="store_true", help="BatchNorm in train mode (the paper's)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--quick", action="store_true", help="2 seeds, 5 steps (a smoke run)")
    ap.add_argument(
        "--plot-only",
        action="store_true",
        help="redraw OUT/curves.png from OUT/runs.csv and OUT/meta.json (no runs)",
    )
    a = ap.parse_args(argv)
    if a.plot_only:
        meta_path = a.out / "meta.json"
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        tau = float(meta.get("tau", a.tau))
        save_figure(
            a.out / "curves.png", read_runs(a.out / "runs.csv"), tau, bool(meta.get("bn_train"))
        )
        return 0
    if a.quick:
        a.seeds, a.steps = 2, 5
    if a.seeds < 1 or a.steps < 1 or a.threads < 1:
        ap.error(
            f"--seeds, --steps and --threads must be >= 1, got {a.seeds}, {a.steps}, {a.threads}"
        )
    if not (0 < a.tau <= 1) or not (math.isfinite(a.lr) and a.lr > 0):
        ap.error(f"need 0 < --tau <= 1 and a finite --lr > 0, got {a.tau}, {a.lr}")
    torch.set_num_threads(a.threads)
    t0 = time.time()
    models = load_models()
    for k, c in configs().items():
        lam = "—" if c.lam is None else f"{c.lam:g}"
        print(f"{k:11s} {c.method:14s} λ={lam:6s} w_u={c.w_u:g}")
    eq = one_step_comparison(models, 0, lr=a.lr, bn_train=a.bn_train)
    print("\none step from the same state (seed 0):")
    for r in eq:
        verdict = "EQUAL" if r["equal"] else "DIFFERENT"
        print(
            f"  {r['a']:>9s} vs {r['b']:<10s} direction max abs {r['dir_max_abs']:.3e} rel {r['dir_rel']:.3e}"
            f" | parameters max abs {r['theta_max_abs']:.3e} rel {r['theta_rel']:.3e}  {verdict}"
        )
    seeds = list(range(a.seeds))
    curves = run_seeds(models, seeds, a.steps, lr=a.lr, bn_train=a.bn_train, progress=True)
    meta = {
        "command": "python experiments/paper_bug.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "steps": a.steps, "tau": a.tau, "lr": a.lr, "bn_train": a.bn_train,
        "threads": a.threads, "torch": torch.__version__, "machine": platform.machine(),
        "python": platform.python_version(), "wall_s": round(time.time() - t0, 1),
    }  # fmt: skip
    print()
    print(write_results(a.out, eq, curves, a.tau, meta))
    ok = eq[0]["equal"] and not any(r["equal"] for r in eq[1:])
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
