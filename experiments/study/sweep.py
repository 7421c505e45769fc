"""Sweeps of the "when does UNO forget in a few steps" study (issue 6). Each group writes
``experiments/results/study/<group>.json`` (every run's per-step rows and summary) and ``<group>.md``.

Every method in a group gets the same grid (same search budget); seeds 0..N-1.

Usage::

    PYTHONPATH=python python experiments/study/sweep.py hist lam lr pretrain [--seeds 3 --steps 100]
    PYTHONPATH=python python experiments/study/sweep.py --list
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import paper_uno_step  # noqa: F401  (registers uno-paper)
from common import StudyConfig, run

from uno.unlearn.data import load_mnist
from uno.unlearn.metrics import ClassifierFID
from uno.unlearn.train import get_or_train

OUT = Path(__file__).resolve().parents[1] / "results" / "study"


def grid(group: str) -> list[tuple[dict[str, Any], StudyConfig]]:
    """(model settings, run config) pairs of a group; seeds are added by the caller."""
    g: list[tuple[dict[str, Any], StudyConfig]] = []
    if group == "hist":  # histogram loss on/off x BatchNorm train/frozen
        for bn in (False, True):
            for m in ("uno", "uno-hat", "retain-hat", "surgery-hat", "retain", "surgery"):
                g.append(({}, StudyConfig(method=m, bn_train=bn)))
    elif group == "lam":
        for bn in (False, True):
            for lam in (1e2, 1e3, 1e4, 1e5, 1e6):
                g.append(({}, StudyConfig(method="uno", lam=lam, bn_train=bn)))
    elif group == "lam2":  # reduced λ sweep (BatchNorm in train mode, the paper's setting)
        for lam in (1e2, 1e4, 1e6):
            g.append(({}, StudyConfig(method="uno", lam=lam, bn_train=True)))
    elif group == "lr2":  # reduced learning-rate sweep, same grid for every method
        for lr in (1e-2,):
            for m in ("uno", "surgery", "retain"):
                g.append(({}, StudyConfig(method=m, lr=lr, bn_train=True)))
    elif group == "fidcurve":  # FID vs steps, BatchNorm frozen (the drivers' default)
        fs = (1, 2, 3, 5, 10, 20, 30, 50)
        for m in (
            "uno",
            "surgery",
            "uno-hat",
            "surgery-hat",
            "retain-hat",
            "ascent",
            "uno-subspace",
        ):
            g.append(({}, StudyConfig(method=m, fid_steps=fs, diag_every=0)))
    elif group == "lamhat":
        for lam in (0.0, 1e3, 1e5):
            g.append(({}, StudyConfig(method="uno-hat", lam=lam, bn_train=True)))
    elif group == "lr":
        for lr in (1e-4, 1e-3, 1e-2):
            for m in ("uno", "surgery", "retain"):
                g.append(({}, StudyConfig(method=m, lr=lr, bn_train=True)))
    elif group == "pretrain":
        for ep in (5, 50, 200):
            for m in ("uno", "surgery", "retain", "uno-hat"):
                g.append(({"epochs": ep}, StudyConfig(method=m, bn_train=True)))
    elif group == "data":  # data size: the VAE pretrained on, and unlearned from, n digits
        for n in (2000, 4000, None):  # None: all 8,000 embedded digits (the cached default VAE)
            for m in ("uno", "surgery", "uno-hat", "retain"):
                g.append(({"n_train": n}, StudyConfig(method=m, bn_train=True)))
    elif group == "wu":  # histogram weight: how much of the forgetting is U
        for wu in (1e1, 1e2, 1e3):
            for m in ("uno-hat", "retain-hat", "surgery-hat"):
                g.append(({}, StudyConfig(method=m, w_u=wu, bn_train=False)))
    else:
        raise SystemExit(f"unknown group {group!r}")
    return g


GROUPS = ("hist", "lam", "lam2", "lamhat", "lr", "lr2", "pretrain", "data", "wu", "fidcurve")


def label(ms: dict[str, Any], c: StudyConfig) -> str:
    parts = [c.method, f"BN {'train' if c.bn_train else 'frozen'}"]
    if c.method.removesuffix("-hat") in ("uno", "uno-s", "uno-paper"):
        parts.append(f"λ={c.lam:g}")
    if c.lr != 1e-3:
        parts.append(f"lr={c.lr:g}")
    if c.method.endswith("-hat") and c.w_u != 1e3:
        parts.append(f"w_u={c.w_u:g}")
    if "epochs" in ms:
        parts.append(f"VAE {ms['epochs']} ep")
    if "n_train" in ms:
        parts.append(f"{ms['n_train'] or 'all 8000'} digits")
    return ", ".join(parts)


def _stat(v: Sequence[Optional[float]], d: int = 3) -> str:
    w = [float(x) for x in v if x is not None and not math.isnan(float(x))]
    if not w:
        return "-"
    return f"{statistics.fmean(w):.{d}g} ± {statistics.stdev(w) if len(w) > 1 else 0.0:.{d}g}"


def _steps(v: Sequence[Optional[int]], budget: int) -> str:
    r = [x for x in v if x is not None]
    nr = len(v) - len(r)
    if not r:
        return f"not reached ({nr}/{len(v)})"
    return f"{statistics.median(r):g} [{min(r)}–{max(r)}], n.r. {nr}/{len(v)}"


def table(results: list[dict[str, Any]], budget: int) -> str:
    by: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by.setdefault(r["label"], []).append(r["summary"])
    head = (
        "| config | steps to f<τ (after, eval BN): median [range], not reached | paper's count (train-BN monitor, "
        "pre-update) | f after 1 / 2 / 5 | FID before → after | c² first | ‖λ∇c²‖/‖∇L_r‖ first | sign flips first | ms/step |"
    )
    lines = [head, "|" + "---|" * 9]
    for lab, ss in by.items():
        lines.append(
            f"| {lab} | {_steps([s['steps'] for s in ss], budget)} | {_steps([s['steps_bn_pre'] for s in ss], budget)} "
            f"| {_stat([s['f1'] for s in ss], 2)} / {_stat([s['f2'] for s in ss], 2)} / {_stat([s['f5'] for s in ss], 2)} "
            f"| {_stat([s['fid_before'] for s in ss])} → {_stat([s['fid_after'] for s in ss])} "
            f"| {_stat([s['cos2_first'] for s in ss], 2)} | {_stat([s['ratio_first'] for s in ss], 2)} "
            f"| {_stat([s['flip_first'] for s in ss], 2)} | {_stat([s['per_step_ms'] for s in ss])} |"
        )
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("groups", nargs="*")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--seed0", type=int, default=0)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--fid-n", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--list", action="store_true")
    a = ap.parse_args(argv)
    if a.list:
        for gname in GROUPS:
            print(gname, [label(ms, c) for ms, c in grid(gname)])
        return 0
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    train, _ = load_mnist()
    judge, _ = get_or_train("judge", quiet=True)
    retain_real = train.x[~train.forget_mask([1])]
    t0 = time.time()
    for gname in a.groups:
        results = []
        for ms, c in grid(gname):
            vae, _ = get_or_train("vae", quiet=True, **ms)
            fid = ClassifierFID(judge, retain_real, vae.latent_dim, n=a.fid_n)
            for s in range(a.seed0, a.seed0 + a.seeds):
                cfg = StudyConfig(**{**c.__dict__, "seed": s, "steps": a.steps})
                n = ms.get("n_train")
                r = run(cfg, vae, judge, train.random_subset(n) if n else train, fid)
                r["label"] = label(ms, c)
                r["model"] = ms
                results.append(r)
                sm = r["summary"]
                print(
                    f"[{time.time() - t0:7.1f}s] {gname}: {r['label']}, seed {s}: steps {sm['steps']}, "
                    f"paper-count {sm['steps_bn_pre']}, f1 {sm['f1']:.3f}, FID {sm['fid_after']:.2f}",
                    flush=True,
                )
            (out / f"{gname}.json").write_text(json.dumps(results, default=float))
            (out / f"{gname}.md").write_text(
                f"{gname}: {a.seeds} seeds, {a.steps} steps, τ = 0.02\n\n{table(results, a.steps)}\n"
            )
        print(table(results, a.steps))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
