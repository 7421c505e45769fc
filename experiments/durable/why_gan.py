"""How far the GAN study's runs move the generator, against what the table logged for the same runs.

Reruns each method's (T = 100, lr 1e-3) configuration on the tuning seeds through the drivers' run loop
(no attacks, no FID) and records the generator's distance from the original after 20 and 100 updates
(the 20-update configuration's model is the 100-update run's after its 20th update: the same seed, the
same updates). The monitor f of every update is checked against the table's ``curves.csv`` for the same
(row, seed), so the rerun is the run that was scored; f after attack (i) is read from the table.

Usage::

    OMP_NUM_THREADS=1 UNO_CACHE_DIR=... PYTHONPATH=python python experiments/durable/why_gan.py \\
        --methods uno-subspace-ps surgery retain-hat --seeds 100 101 102
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import grid_gan as G

from uno.unlearn import run
from uno.unlearn.config import RunConfig
from uno.unlearn.data import load_mnist
from uno.unlearn.loading import Loaded, load_models


def _flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _monitor_f(folder: Path, row: str, seed: int) -> list[float]:
    with (folder / "curves.csv").open() as fh:
        rs = [r for r in csv.DictReader(fh) if r["method"] == row and int(float(r["seed"])) == seed]
    return [float(r["f"]) for r in sorted(rs, key=lambda r: int(r["step"]))]


def one(method: str, seed: int, base: Loaded, data: Any, theta0: torch.Tensor) -> dict[str, Any]:
    """Distances after 20 and 100 updates of (method, T=100, lr 1e-3) on ``seed``, and the check."""
    cfg = RunConfig(
        method=method, model="gan", forget=["1"], steps=100, seed=seed, lr=1e-3, quiet=True,
        ckpt_every=10**9, fresh_n=1, fid_n=2,
    )  # fmt: skip
    own = Loaded(copy.deepcopy(base.model), base.judge, base.critic, "gan", judge2=None)
    r = run.prepare(cfg, None, loaded=own, data=data, write_pngs=False)
    dist = {}
    for t in (20, 100):
        run.loop(r, stop_after=t)
        r.start = t
        dist[t] = float((_flat(r.model) - theta0).norm())
    f_run = [row["f"] for row in r.rows]
    out: dict[str, Any] = {
        "method": method,
        "seed": seed,
        "dist_20": dist[20],
        "dist_100": dist[100],
    }
    for t in (20, 100):
        row = G.spec(method, t, 1e-3)
        logged = _monitor_f(G.TUNE / G.folder_name(row), row, seed)
        out[f"same_as_table_{t}"] = logged == f_run[: len(logged)]
        rec = [x for x in G.read_runs(G.TUNE / G.folder_name(row)) if int(float(x["seed"])) == seed]
        out[f"f_attack_{t}"] = G.cell(rec[0]["f_attack_i"]) if rec else math.nan
    return out


def main(argv: Any = None) -> None:
    torch.set_num_threads(1)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", nargs="+", default=list(G.METHODS))
    ap.add_argument("--seeds", nargs="+", type=int, default=list(G.TUNE_SEEDS))
    ap.add_argument("--json", default="experiments/results/durable_gan/why.jsonl")
    a = ap.parse_args(argv)
    data = load_mnist(None)
    base = load_models(RunConfig(method="surgery", model="gan", forget=["1"]))
    theta0 = _flat(base.model)
    with open(a.json, "a") as fh:
        for m in a.methods:
            for s in a.seeds:
                rec = one(m, s, base, data, theta0)
                print(json.dumps(rec), flush=True)
                fh.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
