"""The study's best configurations measured with issue 14's API (both judges, attacks (i) and (ii)).

``uno.unlearn.evaluation.FreshForget`` (MLP and CNN judges, 10,000 fresh codes), the retrained VAE of
``get_or_train("vae-retain")``, ``uno.unlearn.attacks.retain_finetune`` (i) and ``forget_finetune`` (ii);
the unlearning run is probe.py's (the drivers' task and methods). One JSON line per (method, seed).

Usage::

    OMP_NUM_THREADS=1 UNO_CACHE_DIR=... PYTHONPATH=python python experiments/durable/honest_check.py \
        --seeds 0 1 2 --out experiments/results/durable/1/honest.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import probe

from uno.unlearn import attacks
from uno.unlearn.evaluation import FreshForget, both
from uno.unlearn.train import get_or_train, trained_meta

#: (method, run options, hyper-parameters): the picks of docs/durable.md and the comparison row
CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("kick-hat", {"steps": 300, "lr": 1e-3}, {"kick": 3.0, "n_kick": 10}),
    ("retain-hat", {"steps": 300, "lr": 1e-3}, {}),
    ("retain-hat", {"steps": 10, "lr": 1e-3}, {}),
]


def record(
    name: str, model: torch.nn.Module, s: probe.Setup, fresh: FreshForget, seed: int
) -> dict:
    a1 = attacks.retain_finetune(model, fresh, s.retain_x, seed=seed)
    a2 = attacks.forget_finetune(model, fresh, s.forget_x, seed=seed)
    f1, f2 = fresh.pair(model)
    return {
        "case": name,
        "seed": seed,
        "f_mlp": f1,
        "f_cnn": f2,
        "attack_i_mlp": a1.final[0],
        "attack_i_cnn": a1.final[1],
        "attack_i": a1.f_final,
        "attack_ii_curve": a2.f,
    }


def main(argv: Any = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--digit", type=int, default=1)
    ap.add_argument("--out", default="experiments/results/durable/1/honest.jsonl")
    ap.add_argument("--only-retrain", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    s = probe.setup(args.digit)
    judge2, _ = get_or_train("judge2", quiet=True)
    ret, path = get_or_train("vae-retain", forget=[str(args.digit)], quiet=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        fresh = FreshForget([s.judge, judge2], [args.digit], 2, seed=900_000 + seed)
        rows = [record("retrain", ret.eval(), s, fresh, seed)]
        rows[0]["train_time_s"] = trained_meta(path).get("train_time_s")
        if not args.only_retrain:
            for method, run, hp in CASES:
                u = probe.unlearn(s, method, seed, hparams=hp, **run)
                rows.append(record(f"{method} {run}", u.model, s, fresh, seed))
        for r in rows:
            with out.open("a") as fh:
                fh.write(json.dumps(r) + "\n")
            print(r["case"], seed, f"f {both([r['f_mlp'], r['f_cnn']]):.3f}",
                  f"attack (i) mlp {r['attack_i_mlp']:.3f} cnn {r['attack_i_cnn']:.3f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
