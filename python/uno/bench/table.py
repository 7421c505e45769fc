"""The comparison table of the unlearning methods (issue 6): the paper's MNIST experiment, measured honestly.

Every method of the drivers runs on the paper's setting (MNIST VAE of docs/method.md §5, forget digit 1, batch 128
per side, Adam 1e-3, λ = 1e3, τ = 0.02) for several seeds, through the drivers' own run loop
(``uno.unlearn.run.unlearn``), so the measuring rules are the same for every method (docs/method.md §4):
forget fraction f after each update (and at step 0), steps to forget = first step with f < τ or
"not reached" (flagged and counted, never the last step), time to forget = the timed update steps only
(monitoring excluded alike, device synchronised), FID on the judge's features after the same fixed budget
for every method (and at each method's own forgetting step), retain ELBO, cos², peak extra memory.

Usage (from an install; the source checkout's ``experiments/unlearning_table.py`` runs the same table
with the paper-faithful ``uno-paper`` methods registered and ``experiments/results/table`` as default)::

    uno bench table --seeds 10 --steps 100 --out uno-table
    uno bench table --methods uno surgery --seeds 2 --steps 5 --quick
    uno bench table --model gan --gan-steps 500 --seeds 3 --steps 50 --out uno-table-gan
    uno bench table --rebuild --out uno-table     # rewrite table.md and curves.png from the CSVs

``--model gan`` runs the same table on the drivers' WGAN-GP generator (docs/unlearning.md, "GAN"): forget
the latents whose original output the judge calls a 1; FID on the judge's features against the real retain
digits; the retain ELBO column is empty (a GAN has none).

Outputs under ``--out``: ``table.md`` (mean ± std per method), ``runs.csv`` (one row per method and seed),
``curves.csv`` (f per step, per method and seed), ``curves.png`` (forgetting curves with ±std bands, all
methods in one figure), ``samples.png`` (a sample grid per method after the budget, seed 0) and
``meta.json`` (machine, date, versions, configuration).

This module is part of the package so that ``uno bench table`` runs from an installed wheel; it needs
the ``unlearn`` extra (matplotlib, scipy, safetensors, tqdm).
"""

from __future__ import annotations

import argparse
import copy
import csv
import datetime
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import fields
from pathlib import Path
from typing import Any, Optional, Sequence, Type, Union

import torch

from uno.unlearn import plots
from uno.unlearn.data import load_mnist
from uno.unlearn.models import sample_images
from uno.unlearn.run import Loaded, RunConfig, unlearn

#: Every method of the drivers (docs/method.md §3); any other registered method can be named in ``--methods``.
ALL_METHODS = (
    "uno",
    "surgery",
    "uno-hat",
    "surgery-hat",
    "retain",
    "retain-hat",
    "uno-s",
    "ascent",
    "ascent-descent",
    "surgery-ascent",
    "uno-subspace",
    "fu",
    "salun",
    "uno-s-hat",
    "surgery-ascent-hat",
    "ascent-hat",
)

#: Columns of table.md, in order (the issue's list).
COLUMNS = (
    "method",
    "steps to forget",
    "not reached",
    "time to forget (s)",
    "per-step time (ms)",
    "FID at forget",
    "FID after budget",
    "retain ELBO after",
    "f after 5",
    "f at end",
    "cos²",
    "peak extra mem (MB)",
)


#: Where the table goes when ``--out`` is not given (the current directory, never the package).
DEFAULT_OUT = "uno-table"


def _ms(values: Sequence[Optional[float]], scale: float = 1.0, digits: int = 3) -> str:
    """``mean ± std`` over the values that exist (``-`` when none)."""
    v = [float(x) * scale for x in values if x is not None and not math.isnan(float(x))]
    if not v:
        return "-"
    s = statistics.stdev(v) if len(v) > 1 else 0.0
    return f"{statistics.fmean(v):.{digits}g} ± {s:.{digits}g}"


def summarize(
    runs: list[dict[str, Any]], methods: Sequence[str], steps: int
) -> list[dict[str, str]]:
    """One table row per method from the per-seed summaries (strings, keyed by ``COLUMNS``).

    "steps to forget" and "time to forget" are mean ± std over the seeds that reached τ; the
    "not reached" column counts the others (``k/n``). A method with no reaching seed shows
    ``not reached``. The median steps over reaching seeds is appended in brackets.
    """
    rows = []
    for m in methods:
        rs = [r for r in runs if r["method"] == m]
        if not rs:
            continue
        reached = [r for r in rs if r["reached"]]
        n_nr = len(rs) - len(reached)
        if reached:
            st = [r["steps_to_forget"] for r in reached]
            steps_txt = f"{_ms(st)} [median {statistics.median(st):g}]"
            time_txt = _ms([r["time_to_forget_s"] for r in reached])
        else:
            steps_txt = time_txt = f"not reached (≤ {steps})"
        rows.append(
            {
                "method": m,
                "steps to forget": steps_txt,
                "not reached": f"{n_nr}/{len(rs)}",
                "time to forget (s)": time_txt,
                "per-step time (ms)": _ms([r["per_step_median_s"] for r in rs], 1e3),
                "FID at forget": _ms([r["fid_at_forget"] for r in reached]),
                "FID after budget": _ms([r["fid_after"] for r in rs]),
                "retain ELBO after": _ms([r["elbo_after"] for r in rs], digits=4),
                "f after 5": _ms([r["f_after_5"] for r in rs], digits=2),
                "f at end": _ms([r.get("f_final") for r in rs], digits=2),
                "cos²": _ms([r["cos2_mean"] for r in rs], digits=2),
                "peak extra mem (MB)": _ms([r["peak_mem_bytes"] for r in rs], 1e-6),
            }
        )
    return rows


def markdown(rows: list[dict[str, str]]) -> str:
    head = "| " + " | ".join(COLUMNS) + " |"
    sep = "|" + "---|" * len(COLUMNS)
    return "\n".join([head, sep] + ["| " + " | ".join(r[c] for c in COLUMNS) + " |" for r in rows])


def machine() -> dict[str, Any]:
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "UNO_BACKEND": os.environ.get("UNO_BACKEND"),
        "load_avg": os.getloadavg(),
    }


def _parser(default_out: Union[str, Path] = DEFAULT_OUT) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="uno bench table", description="comparison table of the unlearning methods (MNIST VAE)"
    )
    ap.add_argument("--methods", nargs="+", default=list(ALL_METHODS))
    ap.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1")
    ap.add_argument("--steps", type=int, default=100, help="fixed budget of updates per run")
    ap.add_argument("--tau", type=float, default=0.02)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--lam", type=float, default=1e3)
    ap.add_argument("--w-u", dest="w_u", type=float, default=1e3)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--bn-train", action="store_true", help="BatchNorm in train mode (the paper)")
    ap.add_argument("--k", type=int, default=8, help="uno-subspace micro-batches")
    ap.add_argument("--data", default=None, help="full MNIST root (default: the embedded digits)")
    ap.add_argument("--vae-epochs", type=int, default=None, help="VAE pretraining epochs (50)")
    ap.add_argument("--judge-epochs", type=int, default=None, help="judge epochs (10)")
    ap.add_argument("--model", default="vae", choices=["vae", "gan"], help="generator kind")
    ap.add_argument(
        "--gan-steps",
        type=int,
        default=None,
        help="WGAN-GP generator steps (drivers' default 1000)",
    )
    ap.add_argument("--fid-n", type=int, default=None, help="images for FID (default: all)")
    ap.add_argument("--n-train", type=int, default=None, help="use only this many training digits")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument(
        "--quick", action="store_true", help="tiny budget (tests): VAE 3 ep, judge 2 ep"
    )
    ap.add_argument(
        "--out", default=str(default_out), help=f"output folder (default: {default_out})"
    )
    ap.add_argument("--title", default=None)
    ap.add_argument(
        "--rebuild",
        action="store_true",
        help="only rewrite --out/table.md from --out/runs.csv and meta.json (no runs)",
    )
    return ap


def parse_cell(v: str) -> Any:
    """A cell of runs.csv back to None, bool, float or str (shared with experiments/study/combine.py)."""
    if v in ("", "None"):
        return None
    if v in ("True", "False"):
        return v == "True"
    try:
        return float(v)
    except ValueError:
        return v


def rebuild(out: Path) -> list[dict[str, str]]:
    """Rewrite ``table.md`` and ``curves.png`` from a finished table's ``runs.csv``, ``curves.csv`` and
    ``meta.json`` (current columns and figure style)."""
    meta = json.loads((out / "meta.json").read_text())
    args = argparse.Namespace(**meta["args"])
    with open(out / "runs.csv") as f:
        runs = [{k: parse_cell(v) for k, v in r.items()} for r in csv.DictReader(f)]
    methods = list(dict.fromkeys(r["method"] for r in runs))
    rows = summarize(runs, methods, args.steps)
    (out / "table.md").write_text(_table_text(args, rows))
    if (out / "curves.csv").is_file():
        curves: dict[str, dict[int, list[float]]] = {}
        with open(out / "curves.csv") as f:
            for r in csv.DictReader(f):
                curves.setdefault(r["method"], {}).setdefault(int(r["seed"]), []).append(
                    float(r["f"])
                )
        plots.save_curves(
            out / "curves.png",
            {m: list(c.values()) for m, c in curves.items()},
            args.tau,
            title=_title(args),
        )
    return rows


def run_table(args: argparse.Namespace, config_cls: Type[RunConfig] = RunConfig) -> dict[str, Any]:
    """Run every (method, seed) and write the outputs; returns ``{"runs", "rows", "curves"}``.

    ``config_cls`` builds each run's configuration (a ``RunConfig`` subclass can pass more keyword
    arguments to methods registered outside the package, e.g. the experiments' ``uno-paper``).
    """
    from uno.unlearn.train import get_or_train

    if args.threads:
        torch.set_num_threads(args.threads)
    ve = args.vae_epochs if args.vae_epochs is not None else (3 if args.quick else None)
    je = args.judge_epochs if args.judge_epochs is not None else (2 if args.quick else None)
    fid_n = args.fid_n if args.fid_n is not None else (500 if args.quick else None)
    train, heldout = load_mnist(args.data)
    if args.n_train is not None:
        train = train.random_subset(args.n_train)
    critic = None
    if args.model == "gan":
        t0 = time.time()
        (vae, critic), vpath = get_or_train(
            "gan", data_root=args.data, quiet=True, steps=args.gan_steps
        )
        print(f"GAN ready ({time.time() - t0:.0f} s): {vpath}", flush=True)
    else:
        vae, vpath = get_or_train("vae", data_root=args.data, quiet=True, epochs=ve)
    judge, jpath = get_or_train("judge", data_root=args.data, quiet=True, epochs=je)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    known = {f.name for f in fields(config_cls)}
    runs: list[dict[str, Any]] = []
    curves: dict[str, list[list[float]]] = {}
    samples: dict[str, torch.Tensor] = {}
    t_start = time.time()
    models = {args.model: str(vpath), "judge": str(jpath)}
    rows: list[dict[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="uno-table-") as tmp:
        for m in args.methods:
            curves[m] = []
            for s in range(args.seeds):
                kw = {k: v for k, v in vars(args).items() if k in known}
                cfg = config_cls(
                    **kw,
                    method=m,
                    forget=["1"],
                    seed=s,
                    quiet=True,
                    ckpt_every=10**9,
                )
                cfg.fid_n = fid_n
                cfg.vae_epochs, cfg.judge_epochs = ve, je
                loaded = Loaded(copy.deepcopy(vae), judge, critic=critic, kind=args.model)
                run_dir = Path(tmp) / f"{m}-{s}"
                summ = unlearn(
                    cfg, str(run_dir), loaded=loaded, data=(train, heldout), write_pngs=False
                )
                log_rows = json.loads((run_dir / "log.json").read_text())["rows"]
                curves[m].append([r["f"] for r in log_rows])
                if s == 0:
                    samples[m] = sample_images(
                        loaded.model,
                        torch.randn(16, vae.latent_dim, generator=torch.Generator().manual_seed(7)),
                    )
                runs.append(summ)
                print(
                    f"[{time.time() - t_start:7.1f}s] {m:20s} seed {s}: "
                    f"steps {summ['steps_to_forget']}, f5 {summ['f_after_5']}, "
                    f"FID {summ['fid_after']:.2f}",
                    flush=True,
                )
            # written after every method, so an interrupted table keeps what it finished
            rows = summarize(runs, args.methods, args.steps)
            write_outputs(out, args, runs, rows, curves, samples, models)
    return {"runs": runs, "rows": rows, "curves": curves}


def _title(args: argparse.Namespace) -> str:
    return args.title or (
        f"MNIST {getattr(args, 'model', 'vae').upper()}, forget 1: {args.seeds} seeds, {args.steps} steps, "
        f"λ={args.lam:g}, lr={args.lr:g}, BN {'train' if args.bn_train else 'frozen'}"
    )


def _table_text(args: argparse.Namespace, rows: list[dict[str, str]]) -> str:
    return (
        f"{_title(args)}\n\n{markdown(rows)}\n\nτ = {args.tau}; FID/ELBO/cos²/memory: mean ± std over "
        "all seeds; steps/time to forget and FID at forget: over the seeds that reached τ.\n"
    )


def write_outputs(
    out: Path,
    args: argparse.Namespace,
    runs: list[dict[str, Any]],
    rows: list[dict[str, str]],
    curves: dict[str, list[list[float]]],
    samples: dict[str, torch.Tensor],
    models: dict[str, str],
) -> None:
    title = _title(args)
    (out / "table.md").write_text(_table_text(args, rows))
    keys = sorted({k for r in runs for k in r})
    with open(out / "runs.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(runs)
    with open(out / "curves.csv", "w", newline="") as f:
        w2 = csv.writer(f)
        w2.writerow(["method", "seed", "step", "f"])
        for m, cs in curves.items():
            for s, c in enumerate(cs):
                w2.writerows([m, s, i, x] for i, x in enumerate(c))
    plots.save_curves(out / "curves.png", dict(curves.items()), args.tau, title=title)
    if samples:
        grid = torch.cat([samples[m] for m in samples])
        plots.save_grid(out / "samples.png", grid, nrow=16)
        (out / "samples.txt").write_text(
            "rows of samples.png, top to bottom:\n" + "\n".join(samples) + "\n"
        )
    meta = {"machine": machine(), "args": vars(args), "models": models, "command": sys.argv}
    (out / "meta.json").write_text(json.dumps(meta, indent=2, default=str))


def main(
    argv: Optional[Sequence[str]] = None,
    default_out: Union[str, Path] = DEFAULT_OUT,
    config_cls: Type[RunConfig] = RunConfig,
) -> int:
    """Entry point (``uno bench table [options]``).

    Args:
        argv: the options (default: ``sys.argv[1:]``).
        default_out: the output folder when ``--out`` is not given.
        config_cls: see :func:`run_table`.
    """
    args = _parser(default_out).parse_args(argv)
    if args.rebuild:
        print(markdown(rebuild(Path(args.out))))
        return 0
    res = run_table(args, config_cls)
    print(markdown(res["rows"]))
    print(f"\nwritten to {args.out}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
