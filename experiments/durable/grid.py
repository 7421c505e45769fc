"""The tuning grid of the durable-forgetting study (experiments/durable/grid.md says why these axes).

Every method gets at most 12 configurations, chosen on seeds 100–102 (``TUNE_SEEDS``) by :func:`select`
and reported on seeds 0–9 (``REPORT_SEEDS``). A configuration is ``(lr, steps, hparams)``: Adam's
learning rate, the run's budget of updates (the model attacked is the one after the budget) and the
method's own hyper-parameters.
"""

from __future__ import annotations

import math
from itertools import product
from typing import Any

TUNE_SEEDS = (100, 101, 102)
REPORT_SEEDS = tuple(range(10))
TAU = 0.02
#: a configuration qualifies when its mean retain ELBO is within this share of the original's
ELBO_SLACK = 0.05

Config = dict[str, Any]


def _cfg(lr: float, steps: int, **hp: Any) -> Config:
    return {"lr": lr, "steps": steps, "hparams": hp}


def _baseline() -> list[Config]:
    """The same 9 points for every baseline: learning rate × budget."""
    return [_cfg(lr, t) for lr, t in product((1e-3, 3e-3, 1e-2), (10, 30, 100))]


def grid() -> dict[str, list[Config]]:
    g: dict[str, list[Config]] = {m: _baseline() for m in ("retain-hat", "uno-hat", "salun")}
    g["surgery-ascent"] = _baseline()
    # added after the first pass (durability grew with the budget): the 300-update point at lr 1e-3
    for m in ("retain-hat", "salun"):
        g[m].append(_cfg(1e-3, 300))
    g["kick-hat"] = [
        _cfg(1e-3, t, kick=kick, n_kick=n)
        for kick, n, t in product((3.0, 10.0), (3, 10), (30, 100))
    ] + [
        _cfg(1e-3, 30, kick=10.0, n_kick=3, k_retain=8),
        _cfg(1e-3, 100, kick=10.0, n_kick=10, k_retain=8),
        _cfg(1e-3, 300, kick=3.0, n_kick=10),
    ]
    g["fill"] = [
        _cfg(lr, t, n_nbr=n) for n, lr, t in product((256, 1024), (1e-3, 3e-3), (30, 100))
    ] + [_cfg(1e-3, 300, n_nbr=256)]
    for m, cs in g.items():
        assert len(cs) <= 12, m
    return g


def key(c: Config) -> str:
    hp = ",".join(f"{k}={v}" for k, v in sorted(c["hparams"].items()))
    return f"lr={c['lr']:g},steps={c['steps']}" + (f",{hp}" if hp else "")


def mean_elbo(rs: list[dict[str, Any]]) -> float:
    v = [r["elbo"] for r in rs if math.isfinite(r["elbo"])]
    return sum(v) / len(v) if v else -math.inf


def durable(r: dict[str, Any]) -> bool:
    """Stable forgetting reached and f < τ after attack (i)."""
    return r["stable"] is not None and r["f_attack"] < TAU


def score(rs: list[dict[str, Any]], elbo_orig: float) -> tuple[bool, int, float]:
    """A configuration's rank from its tuning runs: inside the ELBO pool, durable seeds, mean ELBO."""
    e = mean_elbo(rs)
    return e >= elbo_orig * (1 + ELBO_SLACK), sum(map(durable, rs)), e


def select(runs: list[dict[str, Any]], elbo_orig: float) -> str:
    """The configuration (its :func:`key`) a method is reported with, from its tuning runs.

    Rule: among configurations whose mean retain ELBO after the run is within ``ELBO_SLACK`` of the
    original's (all of them if none is), the most tuning seeds with durable forgetting (stable
    forgetting reached and f < τ after attack (i)), then the highest mean retain ELBO. (:func:`score`
    orders the same way: a configuration inside the pool ranks above every one outside it.)
    """
    by: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        by.setdefault(r["config"], []).append(r)
    return max(sorted(by), key=lambda k: score(by[k], elbo_orig))
