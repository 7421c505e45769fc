"""The durable-forgetting study: every method's grid on the tuning seeds, then its selected
configuration on the report seeds (grid.py), each run attacked by 100 retain-only Adam steps.

One JSON line per run under ``experiments/results/durable/<digit>/<phase>/<method>.jsonl`` (a rerun
skips the runs already there, so the study can be stopped and resumed); ``retrain.jsonl`` holds the
retrained model's row per seed. ``table.py`` turns them into tables.

Usage (one thread, in the background, logged)::

    OMP_NUM_THREADS=1 UNO_CACHE_DIR=... PYTHONPATH=python nohup python experiments/durable/study.py \
        --phase tune --methods retain-hat kick-hat > tune.log 2>&1 &
    ... --phase report   # the configuration grid.select picks from the tuning runs
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import grid as G
import probe

OUT = Path(__file__).resolve().parents[1] / "results" / "durable"


def stable_step(f: list[float], tau: float = G.TAU, hold: int = 10) -> Optional[int]:
    """First update s ≥ 1 after which f < τ for ``hold`` updates (or to the end of the run)."""
    for s in range(1, len(f)):
        if all(x < tau for x in f[s : s + hold]):
            return s
    return None


def measure(model: torch.nn.Module, s: probe.Setup) -> dict[str, float]:
    return {"elbo": probe.retain_elbo(model, s), "fid": s.fid(model)}


def run_one(s: probe.Setup, method: str, cfg: G.Config, seed: int) -> dict[str, Any]:
    u = probe.unlearn(
        s, method, seed, steps=cfg["steps"], lr=cfg["lr"], hparams=cfg["hparams"], tau=G.TAU
    )
    stable = stable_step(u.f)
    attacked, curve = probe.attack(u.model, s, seed)
    after = measure(attacked, s)
    return {
        "method": method,
        "config": G.key(cfg),
        "seed": seed,
        "f": u.f,
        "stable": stable,
        "f_end": u.f_end,
        "per_step_s": u.per_step_s,
        "run_s": u.per_step_s * cfg["steps"],
        "time_to_forget_s": None if stable is None else u.per_step_s * stable,
        **measure(u.model, s),
        "attack": curve,
        "f_attack": curve[max(curve)],
        "elbo_attack": after["elbo"],
        "fid_attack": after["fid"],
    }


def done(path: Path) -> set[tuple[str, int]]:
    if not path.is_file():
        return set()
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {(r["config"], r["seed"]) for r in rows}


def tuned(method: str, digit: int, elbo_orig: float) -> G.Config:
    path = OUT / str(digit) / "tune" / f"{method}.jsonl"
    runs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    pick = G.select(runs, elbo_orig)
    return next(c for c in G.grid()[method] if G.key(c) == pick)


def retrain_rows(s: probe.Setup, seeds: tuple[int, ...]) -> None:
    path = OUT / str(s.digit) / "retrain.jsonl"
    have = {seed for _, seed in done(path)}
    ret, ret_s = probe.retrained(s)
    base = {"method": "retrain", "config": "50 epochs", "train_s": ret_s, **measure(ret, s)}
    for seed in seeds:
        if seed in have:
            continue
        z = probe.fresh_codes(seed)
        attacked, curve = probe.attack(ret, s, seed)
        row = {**base, "seed": seed, "f0": probe.f_fresh(ret, s.judge, z, s.digit)}
        row.update(attack=curve, f_attack=curve[100], elbo_attack=probe.retain_elbo(attacked, s))
        append(path, row)


def append(path: Path, row: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fh.write(json.dumps(row) + "\n")


def main(argv: Any = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phase", choices=("tune", "report"), required=True)
    ap.add_argument("--methods", nargs="+", default=list(G.grid()))
    ap.add_argument("--digit", type=int, default=1)
    ap.add_argument("--seeds", type=int, nargs="*", help="override the phase's seeds")
    ap.add_argument(
        "--config",
        help="report this grid configuration (grid.key) instead of the selected one, as a "
        "comparison row (written under report_extra/)",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    s = probe.setup(args.digit)
    seeds = (
        tuple(args.seeds)
        if args.seeds
        else (G.TUNE_SEEDS if args.phase == "tune" else G.REPORT_SEEDS)
    )
    if args.phase == "report":
        retrain_rows(s, seeds)
    orig = {
        **measure(s.vae, s),
        "f0": [probe.f_fresh(s.vae, s.judge, probe.fresh_codes(x), s.digit) for x in seeds],
    }
    (OUT / str(args.digit)).mkdir(parents=True, exist_ok=True)
    (OUT / str(args.digit) / f"original_{args.phase}.json").write_text(json.dumps(orig))
    elbo_orig = orig["elbo"]
    for method in args.methods:
        phase = "report_extra" if args.config else args.phase
        path = OUT / str(args.digit) / phase / f"{method}.jsonl"
        # every digit is reported with the configuration picked on digit 1's tuning runs
        elbo_1 = (
            elbo_orig
            if args.digit == 1
            else json.loads((OUT / "1" / "original_report.json").read_text())["elbo"]
        )
        cfgs = G.grid()[method] if args.phase == "tune" else [tuned(method, 1, elbo_1)]
        if args.config:
            cfgs = [c for c in G.grid()[method] if G.key(c) == args.config]
        have = done(path)
        for cfg in cfgs:
            for seed in seeds:
                if (G.key(cfg), seed) in have:
                    continue
                row = run_one(s, method, cfg, seed)
                append(path, row)
                print(
                    f"{method} {row['config']} seed {seed}: stable {row['stable']} "
                    f"f_attack {row['f_attack']:.3f} elbo {row['elbo']:.2f} "
                    f"(attacked {row['elbo_attack']:.2f}) {row['per_step_s'] * 1e3:.0f} ms/step",
                    flush=True,
                )


if __name__ == "__main__":
    main()
