"""The durable-forgetting study's runs and measures, on the package's shared API (issue 15; docs/durable.md).

* :func:`setup` — the cached VAE, the MLP judge and the CNN judge of ``uno unlearn``
  (``get_or_train("vae" / "judge" / "judge2")``), the VAE retrained from scratch without the digit
  (``get_or_train("vae-retain", forget=[digit])``, its wall time from the cache file), the embedded MNIST
  split and the digit's forget/retain images.
* :func:`fresh` — :class:`uno.unlearn.evaluation.FreshForget` with both judges on each seed's own 10,000
  fresh codes (seed ``FRESH_BASE + seed``: the codes the study's first pass used, so its MLP-judge numbers
  stay comparable); the per-update curves use the first :data:`N_CURVE` of them.
* :func:`unlearn` — a registered method on :class:`~uno.unlearn.tasks.VAETask`, stepped by the drivers'
  own run loop (:func:`uno.unlearn.run.loop`: the same timed update, monitor f and cos² as ``uno unlearn``
  and ``uno bench table``), f on the fresh codes by both judges after every update.
* :func:`attack` — relearning attack (i) (:func:`uno.unlearn.attacks.retain_finetune`: 100 Adam steps,
  lr 1e-3, batch 128, retain images only, BatchNorm statistics frozen) and :func:`attack_ii`
  (:func:`~uno.unlearn.attacks.forget_finetune`: 10 steps on 64 images of the digit).
"""

from __future__ import annotations

import copy
import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from torch import Tensor, nn

from uno.unlearn import attacks, methods, run
from uno.unlearn.data import ImageData, load_mnist
from uno.unlearn.evaluation import N_FRESH, FreshForget, both
from uno.unlearn.metrics import ClassifierFID
from uno.unlearn.models import sample_images
from uno.unlearn.tasks import VAETask, retain_elbo
from uno.unlearn.train import get_or_train, trained_meta

#: the seed of seed s's fresh codes is FRESH_BASE + s (the study's codes since its first pass)
FRESH_BASE = 900_000
#: codes of the per-update curves (the first of the fresh codes); the final values use all N_FRESH
N_CURVE = 2_000
#: attack (i)'s f is measured on N_CURVE codes every ATTACK_EVERY steps (all N_FRESH after the last)
ATTACK_EVERY = 10


@dataclass
class Setup:
    """What every run of one digit shares."""

    vae: nn.Module
    judges: list[
        Optional[nn.Module]
    ]  # the MLP judge (drives the monitor and FID) and the CNN judge
    train: ImageData
    heldout: ImageData
    digit: int
    retrain: Optional[nn.Module] = None
    retrain_s: float = float("nan")  # the retraining's wall time (from the cache file)
    retain_x: Tensor = field(init=False)
    forget_x: Tensor = field(init=False)
    fid: ClassifierFID = field(init=False)

    def __post_init__(self) -> None:
        mask = self.train.forget_mask([self.digit])
        self.retain_x, self.forget_x = self.train.x[~mask], self.train.x[mask]
        judge: nn.Module = self.judges[0]  # type: ignore[assignment]
        self.fid = ClassifierFID(judge, self.retain_x, self.vae.latent_dim)  # type: ignore[arg-type]

    @property
    def judge(self) -> nn.Module:
        return self.judges[0]  # type: ignore[return-value]


def setup(digit: int = 1) -> Setup:
    """The cached models (trained once into ``$UNO_CACHE_DIR`` if missing) and the data."""
    vae, _ = get_or_train("vae", quiet=True)
    judge, _ = get_or_train("judge", quiet=True)
    judge2, _ = get_or_train("judge2", quiet=True)
    ret, path = get_or_train("vae-retain", forget=[str(digit)], quiet=True)
    train, heldout = load_mnist()
    s = Setup(vae.eval(), [judge.eval(), judge2.eval()], train, heldout, digit, ret.eval())
    s.retrain_s = float(trained_meta(path).get("train_time_s", float("nan")))
    return s


def fresh(s: Setup, seed: int, n: int = N_FRESH) -> FreshForget:
    """Both judges on seed ``seed``'s first ``n`` fresh codes."""
    return FreshForget(s.judges, [s.digit], s.vae.latent_dim, n=n, seed=FRESH_BASE + seed)  # type: ignore[arg-type]


def elbo(model: nn.Module, s: Setup) -> float:
    """Mean held-out retain ELBO per sample (the drivers' measure)."""
    return retain_elbo(model, s.heldout, [s.digit])


@dataclass
class Unlearned:
    model: nn.Module
    f1: list[float]  # judge 1 (MLP) on the N_CURVE codes after each update (index 0: before)
    f2: list[float]  # judge 2 (CNN), the same codes
    dt: list[float]  # seconds of each update (the run loop's timed region)

    @property
    def f(self) -> list[float]:
        """The headline curve: the larger of the two judges' fractions after each update."""
        return [both([a, b]) for a, b in zip(self.f1, self.f2)]

    @property
    def per_step_s(self) -> float:
        return statistics.median(self.dt) if self.dt else float("nan")


def prepare(
    s: Setup,
    method: str,
    seed: int,
    *,
    steps: int,
    lr: float,
    hparams: Optional[dict[str, Any]] = None,
    n_curve: int = N_CURVE,
) -> run.Run:
    """A run of ``method`` from the cached VAE, ready for :func:`uno.unlearn.run.loop` (no files; FID
    and ELBO are measured by the caller once, after the run, not by the loop)."""
    model = copy.deepcopy(s.vae).requires_grad_(True)
    original = copy.deepcopy(s.vae).eval().requires_grad_(False)
    w_u = 1e3 if method.endswith("-hat") else 0.0  # the drivers' default w_u for the -hat methods
    task = VAETask(model, s.judge, s.train, [s.digit], w_u=w_u, seed=seed, original=original)
    m = methods.create(method, **(hparams or {}))
    cfg = run.RunConfig(
        method=method, forget=[str(s.digit)], steps=steps, seed=seed, lr=lr, quiet=True,
        ckpt_every=10**9, fresh_n=n_curve,
    )  # fmt: skip
    r = run.Run(
        cfg=cfg, out_dir=None, model=model, task=task, method=m, opt=m.optimizer(task.params, lr),
        fid=lambda _m: math.nan, elbo=lambda: math.nan, grid_z=task.z_monitor[:1],
        fresh=fresh(s, seed, n_curve), write_pngs=False,
    )  # fmt: skip
    task.begin_step(0)
    m.setup(task)
    task.end_step()
    f1, f2 = r.fresh_now()
    r.rows = [
        {"step": 0, "f": task.forget_fraction(), "f_fresh": f1, "f_fresh2": f2, "fid": math.nan}
    ]
    return r


def unlearn(
    s: Setup,
    method: str,
    seed: int,
    *,
    steps: int = 10,
    lr: float = 1e-3,
    hparams: Optional[dict[str, Any]] = None,
) -> Unlearned:
    """Run ``method`` for ``steps`` updates through the drivers' loop; the model after the budget."""
    r = prepare(s, method, seed, steps=steps, lr=lr, hparams=hparams)
    run.loop(r)
    rows = r.rows
    return Unlearned(
        r.model.eval(),
        [x["f_fresh"] for x in rows],
        [x["f_fresh2"] for x in rows],
        [x["dt"] for x in rows[1:]],
    )


def attack(
    model: nn.Module,
    s: Setup,
    seed: int,
    *,
    params: Optional[Sequence[str]] = None,
    every: int = ATTACK_EVERY,
) -> attacks.AttackResult:
    """Attack (i) on a copy of ``model`` (``params``: the only parameters it may change; default all):
    f by both judges every ``every`` steps on :data:`N_CURVE` codes, after the last on all of them; the
    attacked model is the result's ``model``."""
    return attacks.retain_finetune(
        model, fresh(s, seed), s.retain_x, seed=seed, n_step=N_CURVE, every=every, params=params
    )


def attack_ii(model: nn.Module, s: Setup, seed: int) -> attacks.AttackResult:
    """Attack (ii) on a copy of ``model``: 10 steps on 64 training images of the digit."""
    return attacks.forget_finetune(model, fresh(s, seed), s.forget_x, seed=seed, n_step=N_CURVE)


def f_images(judge: nn.Module, x: Tensor, digit: int) -> float:
    """Share of the images ``x`` the judge calls ``digit``."""
    from uno.unlearn.tasks import in_forget

    return float(in_forget(judge, x, [digit]).float().mean())


def f_codes(model: nn.Module, s: Setup, z: Tensor) -> float:
    """Judge 1's share of ``decode(z)`` (eval mode) that is the digit (for code subsets, why.py)."""
    return f_images(s.judge, sample_images(model.eval(), z), s.digit) if len(z) else math.nan
