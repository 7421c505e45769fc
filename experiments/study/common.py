"""The study's run loop: the drivers' task and methods, with extra measurements for the "when does UNO forget" study.

Same timed region and the same after-update forget fraction as ``uno.unlearn.run.unlearn`` (docs/method.md §4),
plus, at every step and for every method alike:

* ``f``: forget fraction after the update, monitor decoded in eval mode (BatchNorm running statistics): the rule.
* ``f_bn``: the paper's monitor: the same fixed z̄ decoded with BatchNorm in TRAIN mode (batch statistics of
  z̄), as the reference code's ``generated_img = net.decoder(z_random)`` inside the step does (running statistics
  are left untouched: momentum 0 during this pass). The paper logs this BEFORE the update, i.e. the value of
  the previous step's ``f_bn``; ``steps_pre`` counts that way.
* ``cos2``: c² of the step's g_f, g_r (before the update).
* for ``uno``/``uno-hat`` only (diagnostic, not timed): per layer ‖λ·∇c²‖ / ‖∇L_r‖ and the share of
  coordinates where the sign of the update direction differs from the sign of ∇L_r (Adam's first step moves each
  coordinate by ≈ lr·sign(direction), so this is the part of the step that c² actually steers).
"""

from __future__ import annotations

import copy
import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Iterator, Optional

import torch
from torch import nn

from uno.unlearn import methods
from uno.unlearn.data import ImageData
from uno.unlearn.methods.base import grads
from uno.unlearn.metrics import ClassifierFID
from uno.unlearn.tasks import VAETask, in_forget


@dataclass
class StudyConfig:
    method: str = "uno"
    lam: float = 1e3
    lr: float = 1e-3
    w_u: float = 1e3
    bn_train: bool = False
    steps: int = 100
    tau: float = 0.02
    batch: int = 128
    seed: int = 0
    diag_every: int = 5  # uno diagnostics every k steps (0: never)
    fid_steps: tuple = ()  # also measure FID after these steps (FID-vs-steps curves)


@contextmanager
def frozen_bn_stats(model: nn.Module) -> Iterator[None]:
    """BatchNorm layers keep their running statistics (momentum 0) inside the block."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [
        (m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None)
        for m in bns
    ]
    for m in bns:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (mom, nbt) in zip(bns, saved):
            m.momentum = mom
            if nbt is not None:
                m.num_batches_tracked.copy_(nbt)


def f_trainmode(task: VAETask) -> float:
    """Forget fraction of z̄ decoded with BatchNorm in train mode (batch statistics), statistics untouched."""
    model = task.model
    modes = [m.training for m in model.modules()]
    model.train()
    try:
        with torch.no_grad(), frozen_bn_stats(model):
            x = model.decode(task.z_monitor)  # type: ignore[operator]
        return float(in_forget(task.judge, x, task.targets).float().mean())
    finally:
        for m, t in zip(model.modules(), modes):
            m.training = t


def retain_grad(task: VAETask, step: int) -> list[torch.Tensor]:
    """∇L_r on the batches of ``step`` at the current parameters (BatchNorm statistics untouched)."""
    task.begin_step(step)
    with frozen_bn_stats(task.model):
        g_r = grads(task.retain_loss(), task.params)
    task.end_step()
    return [g.detach() for g in g_r]


def uno_diagnostics(
    d: list[torch.Tensor], g_r: list[torch.Tensor], names: list[str]
) -> dict[str, Any]:
    """Per-layer ‖d − ∇L_r‖/‖∇L_r‖ (= ‖λ∇c²‖/‖∇L_r‖ for uno) and the sign disagreement of d and ∇L_r."""
    out: dict[str, Any] = {}
    tot_c = tot_r = 0.0
    flips = n = 0
    for name, di, gi in zip(names, d, g_r):
        c = (di.detach() - gi).norm().item()
        r = gi.norm().item()
        tot_c += c * c
        tot_r += r * r
        fl = int((torch.sign(di.detach()) != torch.sign(gi)).sum())
        flips += fl
        n += gi.numel()
        out[f"ratio.{name}"] = c / (r + 1e-30)
        out[f"flip.{name}"] = fl / gi.numel()
    out["ratio"] = math.sqrt(tot_c) / (math.sqrt(tot_r) + 1e-30)
    out["flip"] = flips / n
    return out


def run(
    cfg: StudyConfig,
    vae: nn.Module,
    judge: nn.Module,
    train: ImageData,
    fid: Optional[ClassifierFID] = None,
) -> dict[str, Any]:
    """One run; returns ``{"config", "rows", "summary"}``."""
    model = copy.deepcopy(vae)
    model.requires_grad_(True)
    hat = cfg.method.endswith("-hat")
    task = VAETask(
        model,
        judge,
        train,
        [1],
        batch=cfg.batch,
        w_u=cfg.w_u if hat else 0.0,
        seed=cfg.seed,
        bn_train=cfg.bn_train,
        original=copy.deepcopy(vae).eval(),
    )
    base = cfg.method.removesuffix("-hat")
    kw = {"lam": cfg.lam} if base in ("uno", "uno-s", "uno-paper") else {}
    method = methods.create(cfg.method, **kw)
    opt = method.optimizer(task.params, cfg.lr)  # ProjectedAdam for a projection method
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    task.begin_step(0)
    method.setup(task)
    task.end_step()
    rows = [
        {
            "step": 0,
            "f": task.forget_fraction(),
            "f_bn": f_trainmode(task),
            "cos2": math.nan,
            "dt": 0.0,
        }
    ]
    fid0 = fid(model) if fid is not None else math.nan
    rows[0]["fid"] = fid0
    for s in range(1, cfg.steps + 1):
        diag = base in ("uno", "uno-paper") and cfg.diag_every and (s - 1) % cfg.diag_every == 0
        g_r = retain_grad(task, s) if diag else None  # same batches and parameters as the step
        t0 = time.perf_counter()
        task.begin_step(s)
        d, info = method.direction(task, s)
        for p, g in zip(task.params, d):
            p.grad = g
        method.step(opt)
        dt = time.perf_counter() - t0
        task.end_step()
        for p in task.params:
            p.grad = None
        row: dict[str, Any] = {"step": s, "cos2": info.cos2, "dt": dt}
        if g_r is not None:
            row.update(uno_diagnostics(d, g_r, names))
        row["f"] = task.forget_fraction()
        row["f_bn"] = f_trainmode(task)
        if fid is not None and s in cfg.fid_steps:
            row["fid"] = fid(model)
        rows.append(row)
        if not all(torch.isfinite(p).all() for p in task.params):
            break
    summary = summarize(rows, cfg.tau)
    summary.update(
        fid_before=fid0,
        fid_after=fid(model) if fid is not None else math.nan,
        per_step_ms=1e3 * sorted(r["dt"] for r in rows[1:])[len(rows[1:]) // 2],
    )
    return {"config": asdict(cfg), "rows": rows, "summary": summary}


def first(fr: list[float], tau: float) -> Optional[int]:
    for i, f in enumerate(fr):
        if f < tau:
            return i
    return None


def summarize(rows: list[dict[str, Any]], tau: float) -> dict[str, Any]:
    f = [r["f"] for r in rows]
    fb = [r["f_bn"] for r in rows]
    s_after = first(f, tau)
    s_bn_after = first(fb, tau)
    # the paper's count: the value logged at step s is the train-mode monitor BEFORE update s
    s_bn_pre = None if s_bn_after is None else s_bn_after + 1
    c2 = [r["cos2"] for r in rows[1:] if not math.isnan(r["cos2"])]
    return {
        "steps": s_after,
        "steps_bn_after": s_bn_after,
        "steps_bn_pre": s_bn_pre,
        "f0": f[0],
        "f0_bn": fb[0],
        "f1": f[1] if len(f) > 1 else None,
        "f2": f[2] if len(f) > 2 else None,
        "f5": f[5] if len(f) > 5 else None,
        "f_end": f[-1],
        "cos2_first": c2[0] if c2 else None,
        "cos2_mean": sum(c2) / len(c2) if c2 else None,
        "ratio_first": rows[1].get("ratio") if len(rows) > 1 else None,
        "flip_first": rows[1].get("flip") if len(rows) > 1 else None,
    }
