"""Per-update cost of the GAN study's methods, interleaved so that machine load hits them alike.

cost.py's measurement on the GAN: each round takes one update of every method, each from its own copy
of the cached GAN through the drivers' run loop (the timed region: batches, direction, optimizer step;
the loop's monitoring is untimed), so a ratio to ``retain-hat``'s median is comparable under any load.
The methods run at lr 1e-3; the update's cost does not depend on the learning rate or the budget.

Usage::

    OMP_NUM_THREADS=1 UNO_CACHE_DIR=... PYTHONPATH=python python experiments/durable/cost_gan.py --rounds 30
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
from pathlib import Path
from typing import Any

import torch

from uno.unlearn import run
from uno.unlearn.config import RunConfig
from uno.unlearn.data import load_mnist
from uno.unlearn.loading import Loaded, load_models

METHODS = ("retain-hat", "uno-subspace-ps", "surgery")


def main(argv: Any = None) -> None:
    torch.set_num_threads(1)  # the honest table's runs are 1-thread
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--rounds", type=int, default=30, help="updates per method (the first is dropped)"
    )
    ap.add_argument("--json", default="experiments/results/durable_gan/cost.json")
    args = ap.parse_args(argv)
    data = load_mnist(None)
    base: Loaded | None = None
    runs: list[tuple[str, run.Run, list[float]]] = []
    for name in METHODS:
        # one fresh code and a 2-image FID: what the loop measures is not what this times
        cfg = RunConfig(
            method=name, model="gan", forget=["1"], steps=10**6, seed=0, lr=1e-3, quiet=True,
            ckpt_every=10**9, fresh_n=1, fid_n=2,
        )  # fmt: skip
        base = base or load_models(cfg)
        own = Loaded(copy.deepcopy(base.model), base.judge, base.critic, "gan", judge2=None)
        runs.append((name, run.prepare(cfg, None, loaded=own, data=data, write_pngs=False), []))
    for step in range(1, args.rounds + 1):
        for _, r, dts in runs:
            r.start = step - 1  # one update of the run loop per round
            run.loop(r, stop_after=step)
            dts.append(r.rows[-1]["dt"])
    med = {name: statistics.median(dts[1:]) for name, _, dts in runs}  # update 1 allocates state
    print(
        f"| method | median update (ms), {args.rounds - 1} rounds | × retain-hat |\n|---|---|---|"
    )
    for name, m in med.items():
        print(f"| {name} | {1e3 * m:.1f} | {m / med['retain-hat']:.2f} |")
    out = {"update_s": med, "rounds": args.rounds, "load_avg": list(os.getloadavg())}
    (path := Path(args.json)).parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
