"""The comparison table of the unlearning methods, measured as docs/method.md §4b says (issues 6 and 14).

Every method runs on the paper's setting (MNIST VAE of docs/method.md §5, forget digit 1, batch 128 per side,
Adam 1e-3, λ = 1e3, τ = 0.02) for several seeds, through the drivers' own run loop
(``uno.unlearn.run.unlearn``), so the measuring rules are the same for every method. Per method and seed:

- f after every update on the monitor batch, and on 10,000 fresh codes (``--fresh-n``) by the MLP judge
  and the second, independent CNN judge; the headline is the **stable** rule on fresh codes with both
  judges (the first step after which the larger of the two fractions stays below τ for 10 logged
  steps), with the first crossing beside it;
- time to forget = the run's median per-step time × stable steps (the same rule for every method);
  speed-up vs retraining = the retrained model's training wall time / time to forget;
- FID on judge 1's and judge 2's features after the fixed budget, its gap to the retrained model's,
  the retain ELBO;
- the relearning attacks of :mod:`uno.unlearn.attacks` on the model after the budget: f after attack (i)
  (100 retain-only Adam steps; every fresh code) and the steps of attack (ii) (64 images of the class)
  until f ≥ ½·f of the original model.

The ``retrain`` row is the same model trained from scratch on the retain digits with the original's
recipe (``get_or_train("vae-retain")``/``"gan-retain"``, cached, its wall time kept in the cache file).
``--retime`` trains that recipe once more on the machine as it is (not cached) and puts its wall time
into a finished table (``runs.csv``, ``meta.json``'s ``retrain_timing``, the text under the table).

Usage (from an install; the source checkout's ``experiments/unlearning_table.py`` runs the same table
with the paper-faithful ``uno-paper`` methods registered and ``experiments/results/table`` as default)::

    uno bench table --seeds 10 --steps 30 --out uno-table
    uno bench table --methods uno retain-hat --seeds 2 --steps 5 --quick
    uno bench table --methods "kick-hat:steps=300,kick=3,n_kick=10" --seeds 10   # a row's own options
    uno bench table --model gan --seeds 3 --steps 30 --fresh-n 2000 --out uno-table-gan
    uno bench table --rebuild --out uno-table     # rewrite table.md and the figures from the CSVs
    uno bench table --merge a b --out ab           # one table from several finished tables' folders
    uno bench table --retime --out uno-table       # re-time the retraining (the cache is kept)

Outputs under ``--out``: ``table.md``, ``runs.csv`` (one row per method and seed), ``curves.csv`` (f per
step: monitor batch, fresh codes by each judge), ``relearn.csv`` (f per attack step), ``curves.png``
(forgetting curves on fresh codes, both judges, ±std bands), ``relearn.png`` (both attacks, retrain
included), ``samples.png`` + ``samples.safetensors`` (before/after sheet: the original once, then the
retrained model and every method after the budget, seed 0, forgotten-class samples framed in red) and
``meta.json`` (machine, date, versions, configuration). A folder made before issue 14 (no stable-rule
columns) is rebuilt in its own format.

This module is part of the package so that ``uno bench table`` runs from an installed wheel; it needs
the ``unlearn`` extra (matplotlib, scipy, safetensors, tqdm).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from dataclasses import fields
from pathlib import Path
from typing import Any, Optional, Sequence, Type, Union

import torch

from uno.bench.table_options import (  # the options; re-exported (__all__)
    ALL_METHODS,
    DEFAULT_OUT,
    _parser,
    _seed_text,
    check_seeds,
    machine,
    seeds_of,
)
from uno.unlearn import evaluation_outputs as outputs
from uno.unlearn.data import load_mnist, resolve_targets
from uno.unlearn.errors import UnoUserError
from uno.unlearn.evaluation import N_FRESH, both
from uno.unlearn.evaluation_table import (
    COLUMNS,
    LEGACY_COLUMNS,
    RETRAIN,
    Reference,
    as_nan,
    attack_record,
    legacy_rows,
    markdown,
    measure_model,
    quality,
    row_config,
    rows,
)
from uno.unlearn.run import Loaded, RunConfig, unlearn

__all__ = ["COLUMNS", "LEGACY_COLUMNS", "main", "markdown", "parse_cell", "rebuild", "run_table"]
__all__ += ["ALL_METHODS", "machine", "seeds_of", "summarize"]

#: The rows of a table made before issue 14 (``experiments/study/combine.py`` and old folders).
summarize = legacy_rows
parse_cell = outputs.parse_cell


def rebuild(out: Path) -> list[dict[str, str]]:
    """Rewrite ``table.md`` and the figures of a finished table from its files (current columns and
    figure style; a table made before issue 14 keeps its own columns)."""
    meta = json.loads((out / "meta.json").read_text())
    args = argparse.Namespace(**meta["args"])
    runs = outputs.read_csv(out / "runs.csv")
    methods = list(dict.fromkeys(r["method"] for r in runs))
    if "stable_steps" not in runs[0]:
        table_rows = legacy_rows(runs, methods, args.steps)
        outputs.write_legacy(out, args, table_rows, _title(args))
        return table_rows
    table_rows = rows(runs, methods, args.steps)
    text = _table_text(args, table_rows, runs) + outputs.timing_note(meta.get("retrain_timing"))
    outputs.write_table(out, text, args.tau, _title(args))
    return table_rows


def _retrain_recipe(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """The retrained model's kind and budget (the original's recipe: ``get_or_train`` overrides)."""
    if args.model == "gan":
        return "gan-retain", {"steps": args.gan_steps}
    ve = args.vae_epochs if args.vae_epochs is not None else (3 if args.quick else None)
    return "vae-retain", {"epochs": ve}


def retime(out: Path, threads: Optional[int] = None) -> float:
    """Train a finished table's retrain recipe again, only to time it, and put the time into the table
    (``runs.csv``'s retrain rows, ``meta.json``'s ``retrain_timing``); the cached model is left alone.

    The cached model's time was measured when it was trained, maybe under load (an upper bound on the
    speed-ups); this lets the table be re-timed on an idle machine. ``threads``: torch threads for the
    training (default: the table's own ``--threads``).

    Returns:
        The new wall time in seconds.
    """
    from uno.unlearn.train import time_training

    if not ((out / "meta.json").is_file() and (out / "runs.csv").is_file()):
        raise UnoUserError(f"--retime: {out} is not a finished table (no meta.json and runs.csv)")
    if not any(r["method"] == RETRAIN for r in outputs.read_csv(out / "runs.csv")):
        raise UnoUserError(
            f"--retime: {out}/runs.csv has no retrain row (re-time the merged table)"
        )
    meta = json.loads((out / "meta.json").read_text())
    args = argparse.Namespace(**meta["args"])
    n = threads or getattr(args, "threads", None)
    if n:
        torch.set_num_threads(n)
    kind, b = _retrain_recipe(args)
    print(
        f"re-timing {kind} ({args.model}'s recipe, forget {','.join(args.forget)}) ...", flush=True
    )
    sec, path = time_training(kind, data_root=args.data, quiet=True, forget=args.forget, **b)
    outputs.set_retrain_time(out, sec, {"kind": kind, "model": str(path), "machine": machine()})
    print(f"{kind}: {sec:.1f} s", flush=True)
    return sec


def _models(args: argparse.Namespace) -> dict[str, Any]:
    """The original, both judges and the retrained model (cache or training), with the cache paths."""
    from uno.unlearn.train import get_or_train, trained_meta

    je = args.judge_epochs if args.judge_epochs is not None else (2 if args.quick else None)
    t0 = time.time()
    got: dict[str, Any] = {"critic": None, "retrain_critic": None}
    kind, b = _retrain_recipe(args)
    if args.model == "gan":
        (got["model"], got["critic"]), p = get_or_train("gan", data_root=args.data, quiet=True, **b)
        (got["retrain"], got["retrain_critic"]), rp = get_or_train(
            kind, data_root=args.data, quiet=True, forget=args.forget, **b
        )
    else:
        got["model"], p = get_or_train("vae", data_root=args.data, quiet=True, **b)
        got["retrain"], rp = get_or_train(
            kind, data_root=args.data, quiet=True, forget=args.forget, **b
        )
    got["judge"], jp = get_or_train("judge", data_root=args.data, quiet=True, epochs=je)
    got["judge2"], j2p = get_or_train("judge2", data_root=args.data, quiet=True, epochs=je)
    got["retrain_time_s"] = float(trained_meta(rp).get("train_time_s", float("nan")))
    got["accuracy"] = [trained_meta(x).get("heldout_accuracy") for x in (jp, j2p)]
    got["paths"] = {args.model: str(p), RETRAIN: str(rp), "judge": str(jp), "judge2": str(j2p)}
    print(f"models ready ({time.time() - t0:.0f} s): {got['paths']}", flush=True)
    return got


def check_methods(args: argparse.Namespace, config_cls: Type[RunConfig] = RunConfig) -> None:
    """Every ``--methods`` entry with the table's options, as :func:`run_table` will configure it.

    Raises:
        UnoUserError: an unknown method, a method that cannot unlearn ``--model``, or a bad option.
    """
    known = {f.name for f in fields(config_cls)}
    kw = {k: v for k, v in vars(args).items() if k in known}
    for m in args.methods:  # a name:key=value spec is parsed as the run builds it (row_config)
        row_config(config_cls, m, kw, seed=0, quiet=True).validate()


def run_table(args: argparse.Namespace, config_cls: Type[RunConfig] = RunConfig) -> dict[str, Any]:
    """Run the retrained model's seeds and every (method, seed), and write the outputs.

    ``config_cls`` builds each run's configuration (a ``RunConfig`` subclass can pass more keyword
    arguments to methods registered outside the package, e.g. the experiments' ``uno-paper``).

    Returns:
        ``{"runs", "rows"}``: the per-seed records and the table's cells.
    """
    from uno.unlearn.train import judge_accuracy

    if args.threads:
        torch.set_num_threads(args.threads)
    fid_n = args.fid_n if args.fid_n is not None else (500 if args.quick else None)
    train, heldout = load_mnist(args.data)
    if args.n_train is not None:
        train = train.random_subset(args.n_train)
    targets = resolve_targets(train, args.forget)
    got = _models(args)
    model, judge, judge2 = got["model"], got["judge"], got["judge2"]
    args.judge_accuracy = [
        a if a is not None else judge_accuracy(j, heldout)
        for a, j in zip(got["accuracy"], (judge, judge2))
    ]
    ref = Reference.build(
        args.model, model, [judge, judge2], (train, heldout), targets, got["retrain"],
        got["retrain_time_s"], critic=got["critic"], retrain_critic=got["retrain_critic"],
        attack_n=args.attack_n, fid_n=fid_n,
        n_fresh=args.fresh_n if args.quick else max(args.fresh_n, N_FRESH),
    )  # fmt: skip
    if args.attack_steps is not None:
        ref.attack_steps = args.attack_steps
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    known = {f.name for f in fields(config_cls)}
    seeds = seeds_of(args)
    runs: list[dict[str, Any]] = []
    sheet = outputs.Sheet.start(model, ref)
    t_start = time.time()
    if not args.skip_retrain:
        q_rt = quality(got["retrain"], ref)
        for s in seeds:
            runs.append(measure_model(got["retrain"], ref, s, q_rt))
        sheet.add(RETRAIN, got["retrain"], ref)
        print(f"[{time.time() - t_start:7.1f}s] retrain: {len(seeds)} seeds of attacks", flush=True)
    table_rows: list[dict[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="uno-table-") as tmp:
        for m in args.methods:
            for s in seeds:
                kw = {k: v for k, v in vars(args).items() if k in known}
                cfg = row_config(config_cls, m, kw, seed=s, quiet=True, ckpt_every=10**9)
                cfg.fid_n = fid_n
                loaded = Loaded(
                    copy.deepcopy(model), judge, got["critic"], args.model, judge2=judge2
                )
                run_dir = Path(tmp) / f"{m}-{s}"
                summ = unlearn(
                    cfg, str(run_dir), loaded=loaded, data=(train, heldout), write_pngs=False
                )
                summ["log"] = json.loads((run_dir / "log.json").read_text())["rows"]
                summ["method"] = m  # the row's label: the method spec
                if cfg.fresh_count() < ref.fresh.n:  # the final f on every fresh code
                    summ["f_fresh_final"], summ["f_fresh2_final"] = ref.fresh.pair(loaded.model)
                summ.update(attack_record(loaded.model, ref, s))
                runs.append(summ)
                if s == seeds[0]:
                    sheet.add(m, loaded.model, ref)
                f_end = both([summ["f_fresh_final"], as_nan(summ["f_fresh2_final"])])
                print(
                    f"[{time.time() - t_start:7.1f}s] {m:20s} seed {s}: stable {summ['stable_steps']}, "
                    f"f end {f_end:.4f}, FID {summ['fid_after']:.2f}, "
                    f"f after attack (i) {summ['f_attack_i']:.4f}, attack (ii) {summ['attack_ii_steps']}",
                    flush=True,
                )
            # written after every method, so an interrupted table keeps what it finished
            table_rows = rows(runs, args.methods, args.steps)
            meta = {
                "machine": machine(),
                "args": vars(args),
                "models": got["paths"],
                "command": sys.argv,
            }
            outputs.write_all(out, runs, sheet, meta)
            outputs.write_table(out, _table_text(args, table_rows, runs), args.tau, _title(args))
    return {"runs": runs, "rows": table_rows}


def _title(args: argparse.Namespace) -> str:
    forget = ",".join(getattr(args, "forget", None) or ["1"])
    return args.title or (
        f"MNIST {getattr(args, 'model', 'vae').upper()}, forget {forget}: {len(seeds_of(args))} seeds, "
        f"{args.steps} steps, "
        f"λ={args.lam:g}, lr={args.lr:g}, BN {'train' if args.bn_train else 'frozen'}"
    )


def _table_text(
    args: argparse.Namespace, table_rows: list[dict[str, str]], runs: list[dict[str, Any]]
) -> str:
    run_seeds = {int(float(r["seed"])) for r in runs if r["method"] != RETRAIN}
    n = len(run_seeds)
    acc = getattr(args, "judge_accuracy", None) or [None, None]
    accs = ", ".join("-" if a is None else f"{100 * a:.2f} %" for a in acc)
    n_final = args.fresh_n if args.quick else max(args.fresh_n, N_FRESH)
    return (
        f"{_title(args)}\n\n{markdown(table_rows)}\n\n"
        f"Mean ± std over {n} seeds ({_seed_text(run_seeds)}); steps in brackets [mean ± std], before them the median. "
        f"τ = {args.tau}. Stable steps: the first step after which f on {args.fresh_n:,} fresh codes, the "
        "larger of the two judges' fractions, stays below τ for 10 logged steps (not stable: the runs "
        "without one); first crossing: the first step below τ on the same series (k/n: the seeds that "
        "crossed, when not all). Time to forget: the "
        "run's median per-step time × stable steps, for every method; speed-up vs retrain: the "
        "retrained model's training wall time / time to forget. Per-step time: the median of each run. "
        f"FID, ELBO, f at end (on {n_final:,} fresh codes, both judges) and the attacks: after the fixed "
        "budget; FID (judge 1): the MLP judge's "
        "200-d features, FID (judge 2): the CNN judge's 64-d features (held-out accuracy of the judges: "
        f"{accs}). f after attack (i): on {n_final:,} fresh codes after 100 retain-only Adam steps (f "
        f"during the attacks: on {getattr(args, 'attack_n', 1000):,} codes per step); attack (ii): "
        "the first of 10 steps on 64 images of the forgotten class with f ≥ ½·f of the original "
        "(> 10: not within them). The retrain row: one model, its attacks seeded per seed.\n"
    )


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
    if args.merge:
        outputs.merge([Path(p) for p in args.merge], Path(args.out))
        args.rebuild = True
    if args.retime:
        retime(Path(args.out), args.threads)
        args.rebuild = True
    if args.rebuild:
        print(markdown(rebuild(Path(args.out))))
        return 0
    try:
        check_seeds(args)
        check_methods(args, config_cls)
    except UnoUserError as e:  # before anything is loaded or written
        print(f"uno: error: {e}", file=sys.stderr)
        return 2
    res = run_table(args, config_cls)
    print(markdown(res["rows"]))
    print(f"\nwritten to {args.out}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
