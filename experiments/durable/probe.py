"""The durable-forgetting probe (issue 15 item 2): unlearn, then attack with retain-only fine-tuning.

A small, self-contained stand-in for the honest measures of issue 14 (fresh codes, relearning attack (i),
the retrained gold standard), on the drivers' own task, methods and optimizers:

* :func:`setup` — the cached VAE and MLP judge of ``uno unlearn`` (``get_or_train``), the embedded MNIST
  split, the forget/retain images of a digit.
* :func:`retrained` — the same VAE trained from scratch on the retain digits only (same recipe: 50
  epochs, Adam 1e-3, batch 128, seed 0; ``train_vae``), cached in ``$UNO_CACHE_DIR``.
* :func:`f_fresh` — f on 10,000 fixed fresh codes per seed (no loss sees them), eval mode; the
  per-step curves use the first 2,000 of them (decoding 10,000 codes and judging them costs more than
  an update here), the values after a run and after an attack all 10,000.
* :func:`unlearn` — a registered method on :class:`~uno.unlearn.tasks.VAETask`, stepped like the run loop
  (``method.optimizer`` / ``method.step``), f on the fresh codes after every update, and an optional
  **stable stop**: the first step after which f stays below τ for ``hold`` consecutive updates (the model
  returned is the one at that step).
* :func:`attack` — relearning attack (i): Adam (lr 1e-3, batch 128) on the retain ELBO only, BatchNorm
  statistics frozen, f on the fresh codes at a few steps.
"""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn

from uno.unlearn import io, methods
from uno.unlearn.data import ImageData, load_mnist
from uno.unlearn.metrics import ClassifierFID
from uno.unlearn.models import MnistVAE, sample_images, set_batchnorm
from uno.unlearn.tasks import VAETask, in_forget
from uno.unlearn.train import cache_dir, get_or_train, train_vae

N_FRESH = 10_000
#: codes of the per-step curves (the first of the fresh codes); the final values use all N_FRESH
N_CURVE = 2_000
#: the steps of attack (i) at which f is recorded
ATTACK_AT = (0, 1, 2, 5, 10, 20, 50, 100)


@dataclass
class Setup:
    """What every probe run of one digit shares."""

    vae: nn.Module
    judge: nn.Module
    train: ImageData
    heldout: ImageData
    digit: int
    retain_x: Tensor = field(init=False)
    forget_x: Tensor = field(init=False)
    fid: ClassifierFID = field(init=False)

    def __post_init__(self) -> None:
        mask = self.train.forget_mask([self.digit])
        self.retain_x, self.forget_x = self.train.x[~mask], self.train.x[mask]
        self.fid = ClassifierFID(self.judge, self.retain_x, self.vae.latent_dim)  # type: ignore[arg-type]


def setup(digit: int = 1) -> Setup:
    """The cached VAE and judge (trained once into ``$UNO_CACHE_DIR`` if missing) and the data."""
    vae, _ = get_or_train("vae", quiet=True)
    judge, _ = get_or_train("judge", quiet=True)
    train, heldout = load_mnist()
    return Setup(vae.eval(), judge.eval(), train, heldout, digit)


def retrained(s: Setup) -> tuple[nn.Module, float]:
    """``(model, seconds)``: the VAE retrained without ``s.digit`` (cached; seconds of the first fit)."""
    path = cache_dir() / f"durable-retrain-vae-digit{s.digit}.safetensors"
    if path.is_file():
        model, meta = io.load_model(path)
        return model.eval(), float(meta.get("train_s", float("nan")))
    data = ImageData(s.retain_x, s.train.y[~s.train.forget_mask([s.digit])], s.train.names)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = train_vae(MnistVAE(), data, seed=0, quiet=True)
    dt = time.perf_counter() - t0
    path.parent.mkdir(parents=True, exist_ok=True)
    io.save_model(path, model, {"kind": "vae", "retain_of": s.digit, "train_s": dt})
    return model.eval(), dt


def fresh_codes(seed: int, n: int = N_FRESH, zdim: int = 2) -> Tensor:
    """The fixed fresh codes of ``seed`` (a generator of their own: no loss and no monitor draws them)."""
    return torch.randn(n, zdim, generator=torch.Generator().manual_seed(900_000 + seed))


def f_fresh(model: nn.Module, judge: nn.Module, z: Tensor, digit: int) -> float:
    """Share of ``decode(z)`` (eval mode) the judge calls ``digit``."""
    return float(in_forget(judge, sample_images(model, z), [digit]).float().mean())


def retain_elbo(model: nn.Module, s: Setup) -> float:
    """Mean held-out retain ELBO per sample (the drivers' ``VAETask.retain_elbo``)."""
    task = VAETask(model, s.judge, s.train, [s.digit])
    return task.retain_elbo(s.heldout)


@dataclass
class Unlearned:
    model: nn.Module
    f: list[float]  # f on the fresh codes after each update (index 0: before)
    dt: list[float]  # seconds of each update (the run loop's timed region)
    stop: Optional[int]  # the stable stop (None: not reached within the budget)
    f_end: float = float("nan")  # f on all N_FRESH codes after the run

    @property
    def per_step_s(self) -> float:
        return statistics.median(self.dt) if self.dt else float("nan")


def update(task: VAETask, m: methods.Method, opt: torch.optim.Optimizer, step: int) -> float:
    """One update as the run loop times it (batches, direction, optimizer step); its seconds."""
    t0 = time.perf_counter()
    task.begin_step(step)
    d, _ = m.direction(task, step)
    for p, g in zip(task.params, d):
        p.grad = g
    m.step(opt)
    dt = time.perf_counter() - t0
    task.end_step()
    for p in task.params:
        p.grad = None
    return dt


def unlearn(
    s: Setup,
    method: str,
    seed: int,
    *,
    steps: int = 10,
    lr: float = 1e-3,
    w_u: float = 1e3,
    tau: float = 0.02,
    hold: Optional[int] = None,
    hparams: Optional[dict[str, Any]] = None,
) -> Unlearned:
    """Run ``method`` from the cached VAE for ``steps`` updates (or to its stable stop with ``hold``).

    With ``hold``, the run stops once f < τ has held for ``hold`` updates and returns the model at the
    first of them (the stable stop); without, the model after ``steps`` updates (``stop`` still reports
    the stable stop within the run, counted with 10 held updates or to the end of the run).
    """
    model = copy.deepcopy(s.vae)
    model.requires_grad_(True)
    w = w_u if method.endswith("-hat") else 0.0
    task = VAETask(
        model, s.judge, s.train, [s.digit], w_u=w, seed=seed, original=copy.deepcopy(s.vae).eval()
    )
    m = methods.create(method, **(hparams or {}))
    opt = m.optimizer(task.params, lr)
    task.begin_step(0)
    m.setup(task)
    task.end_step()
    z = fresh_codes(seed)[:N_CURVE]
    fs, dts = [f_fresh(model, s.judge, z, s.digit)], []
    streak_start: Optional[int] = None
    snapshot: Optional[dict[str, Tensor]] = None
    for step in range(1, steps + 1):
        dts.append(update(task, m, opt, step))
        fs.append(f_fresh(model, s.judge, z, s.digit))
        if fs[-1] < tau:
            if streak_start is None:
                streak_start = step
                snapshot = copy.deepcopy(model.state_dict()) if hold else None
        else:
            streak_start, snapshot = None, None
        if hold and streak_start is not None and step - streak_start + 1 >= hold:
            assert snapshot is not None
            model.load_state_dict(snapshot)
            out = Unlearned(model.eval(), fs, dts, streak_start)
            out.f_end = f_fresh(model, s.judge, fresh_codes(seed), s.digit)
            return out
    held = streak_start is not None and (steps - streak_start + 1 >= 10 or hold is None)
    out = Unlearned(model.eval(), fs, dts, streak_start if held else None)
    out.f_end = f_fresh(model, s.judge, fresh_codes(seed), s.digit)
    return out


def attack(
    model: nn.Module,
    s: Setup,
    seed: int,
    *,
    steps: int = 100,
    lr: float = 1e-3,
    batch: int = 128,
    params: Optional[Sequence[str]] = None,
    at: Sequence[int] = ATTACK_AT,
) -> tuple[nn.Module, dict[int, float]]:
    """Relearning attack (i) on a copy of ``model``: ``(attacked model, {step: f on fresh codes})``
    (the first :data:`N_CURVE` codes at the steps ``at``, all of them at the last step).

    Args:
        params: names of the parameters the attack may change (default: all).
    """
    m = copy.deepcopy(model)
    named = dict(m.named_parameters())
    train_names = list(named) if params is None else list(params)
    for n, p in named.items():
        p.requires_grad_(n in train_names)
    opt = torch.optim.Adam([named[n] for n in train_names], lr=lr)
    g = torch.Generator().manual_seed(700_000 + seed)
    z_all = fresh_codes(seed)
    z = z_all[:N_CURVE]
    out = {0: f_fresh(m, s.judge, z, s.digit)} if 0 in at else {}
    m.train()
    set_batchnorm(m, False)  # BatchNorm statistics frozen (the drivers' default)
    for step in range(1, steps + 1):
        x = s.retain_x[torch.randint(len(s.retain_x), (batch,), generator=g)]
        opt.zero_grad(set_to_none=True)
        m.loss(x).backward()  # type: ignore[operator]
        opt.step()
        if step in at:
            out[step] = f_fresh(m, s.judge, z_all if step == steps else z, s.digit)
    m.requires_grad_(True)
    return m.eval(), out
