"""Per-update cost of the study's methods, interleaved so that machine load hits them alike.

Each round takes one update of every method (from its own copy of the cached VAE, through the drivers'
run loop; its timed region: batches, direction, optimizer step) and one step of retraining (an Adam step on the
ELBO of 128 retain images, the unit of ``train_vae``'s work); the table gives each median over the
rounds, its ratio to ``retain-hat``'s, and the retraining's cost in its steps (50 epochs of the retain
images in batches of 128), so that a run's speed-up over retraining is comparable under any load.

Usage::

    OMP_NUM_THREADS=1 UNO_CACHE_DIR=... PYTHONPATH=python python experiments/durable/cost.py --rounds 30
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import measure as M

from uno.unlearn import run
from uno.unlearn.models import set_batchnorm

#: (label, method, hyper-parameters); kick-hat's kicking and recovery steps are timed apart
CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("retain-hat", "retain-hat", {}),
    ("kick-hat (kick step)", "kick-hat", {"n_kick": 10**6}),
    ("kick-hat (recovery step)", "kick-hat", {"n_kick": 0}),
    ("kick-hat k_retain=8 (kick step)", "kick-hat", {"n_kick": 10**6, "k_retain": 8}),
    ("fill", "fill", {}),
    ("uno-hat", "uno-hat", {}),
    ("salun", "salun", {}),
    ("surgery-ascent", "surgery-ascent", {}),
]


def main(argv: Any = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--json", default="experiments/results/durable/cost.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    s = M.setup(1)
    runs: list[tuple[str, run.Run, list[float]]] = []
    for label, name, hp in CASES:
        # one fresh code: the loop's monitoring is untimed, and f is not what this measures
        r = M.prepare(s, name, 0, steps=10**6, lr=1e-3, hparams=hp, n_curve=1)
        runs.append((label, r, []))
    retrain = copy.deepcopy(s.vae).train().requires_grad_(True)  # from the original: same shapes
    set_batchnorm(retrain, True)
    r_opt = torch.optim.Adam(retrain.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    r_dts: list[float] = []
    for step in range(1, args.rounds + 1):
        for _, r, dts in runs:
            r.start = step - 1  # one update of the run loop per round
            run.loop(r, stop_after=step)
            dts.append(r.rows[-1]["dt"])
        t0 = time.perf_counter()
        x = s.retain_x[torch.randint(len(s.retain_x), (128,), generator=g)]
        r_opt.zero_grad(set_to_none=True)
        retrain.loss(x).backward()  # type: ignore[operator]
        r_opt.step()
        r_dts.append(time.perf_counter() - t0)
    base = statistics.median(runs[0][2][1:])
    n_steps = 50 * -(-len(s.retain_x) // 128)
    r_med = statistics.median(r_dts[1:])
    print(
        f"Retraining = {n_steps} such steps (50 epochs of {len(s.retain_x)} retain images): "
        f"{n_steps * r_med:.1f} s at this load.\n"
    )
    print("| method | median update (ms) | × retain-hat |\n|---|---|---|")
    for label, _, dts in runs:
        med = statistics.median(dts[1:])  # the first update allocates the optimizer state
        print(f"| {label} | {1e3 * med:.1f} | {med / base:.2f} |")
    print(
        f"| retraining step (Adam on the ELBO, batch 128) | {1e3 * r_med:.1f} | {r_med / base:.2f} |"
    )
    med = {label: statistics.median(dts[1:]) for label, _, dts in runs}
    out = {"update_s": med, "retrain_step_s": r_med, "retrain_steps": n_steps}
    (path := Path(args.json)).parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
