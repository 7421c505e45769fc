"""Per-update cost of the study's methods, interleaved so that machine load hits them alike.

Each round takes one update of every method (from its own copy of the cached VAE, the run loop's
timed region: batches, direction, optimizer step); the table gives each method's median over the
rounds and its ratio to ``retain-hat``'s.

Usage::

    OMP_NUM_THREADS=1 UNO_CACHE_DIR=... PYTHONPATH=python python experiments/durable/cost.py --rounds 30
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import probe

from uno.unlearn import methods
from uno.unlearn.tasks import VAETask

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
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    s = probe.setup(1)
    runs = []
    for label, name, hp in CASES:
        model = copy.deepcopy(s.vae).requires_grad_(True)
        w_u = 1e3 if name.endswith("-hat") else 0.0
        task = VAETask(model, s.judge, s.train, [1], w_u=w_u, original=copy.deepcopy(s.vae))
        m = methods.create(name, **hp)
        opt = m.optimizer(task.params, 1e-3)
        task.begin_step(0)
        m.setup(task)
        task.end_step()
        runs.append((label, task, m, opt, []))
    for step in range(1, args.rounds + 1):
        for _, task, m, opt, dts in runs:
            dts.append(probe.update(task, m, opt, step))
    base = statistics.median(runs[0][4][1:])
    print("| method | median update (ms) | × retain-hat |\n|---|---|---|")
    for label, _, _, _, dts in runs:
        med = statistics.median(dts[1:])  # the first update allocates the optimizer state
        print(f"| {label} | {1e3 * med:.1f} | {med / base:.2f} |")


if __name__ == "__main__":
    main()
