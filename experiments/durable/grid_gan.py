"""The GAN half of the durable-forgetting study (issue 15): its grid, its runs and its selection.

Every run is a row of the shared honest table (``uno bench table --model gan``: fresh codes, both
judges, the stable rule, attacks (i) and (ii)), one table folder per configuration: the tuning runs
(seeds 100–102) under ``experiments/results/durable_gan/<config>/``, the picks on seeds 0–9 under
``experiments/results/honest_gan_durable/parts/<config>_<seeds>/``, merged with the 20-update honest GAN
table into ``experiments/results/honest_gan_durable/`` (a copy; ``honest_gan`` itself is untouched).
``experiments/durable/grid_gan.md`` says why the grid is what it is.

Usage (``experiments/durable/gan.sh`` runs it under nohup with a log)::

    OMP_NUM_THREADS=1 UNO_CACHE_DIR=... PYTHONPATH=python python experiments/durable/grid_gan.py run
    PYTHONPATH=python python experiments/durable/grid_gan.py todo    # what is left to run
    PYTHONPATH=python python experiments/durable/grid_gan.py merge   # honest_gan + the picks, a copy
    PYTHONPATH=python python experiments/durable/table_gan.py        # the tuning table and the picks

``run`` keeps at most ``--jobs`` table processes going (1 thread each), skips every folder whose
``runs.csv`` already holds all its seeds, and starts a method's report runs as soon as its own tuning
runs are all in (so the picks do not wait for the other methods' grids).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[2]
TUNE = ROOT / "experiments" / "results" / "durable_gan"
REPORT = ROOT / "experiments" / "results" / "honest_gan_durable"
HONEST = ROOT / "experiments" / "results" / "honest_gan"

TUNE_SEEDS = (100, 101, 102)
#: the report seeds, split in two folders so that two processes share the last method's report
REPORT_PARTS = ((0, 1, 2, 3, 4), (5, 6, 7, 8, 9))
TAU = 0.02
#: a configuration qualifies when its mean FID (judge 1) is at most (1 + this) × the original's
FID_SLACK = 0.05
#: the methods in the order their runs are queued (the GAN default first)
METHODS = ("uno-subspace-ps", "surgery", "retain-hat")
#: every method's configurations: (updates, Adam's learning rate)
CONFIGS = ((20, 1e-3), (20, 3e-3), (100, 1e-3), (100, 3e-3))
#: the honest GAN table's own configuration: a pick there is reported from its 10-seed row (same
#: settings and seeds, so the same runs), not run again
HONEST_CONFIG = (20, 1e-3)
#: the honest table's settings (experiments/results/honest_gan/meta.json)
TABLE_ARGS = ("--model", "gan", "--fresh-n", "1000", "--attack-n", "250", "--threads", "1")

Run = dict[str, Any]


def spec(method: str, steps: int, lr: float) -> str:
    """The table row of one configuration (``uno bench table``'s ``name:key=value`` form)."""
    return f"{method}:steps={steps},lr={lr:g}"


def config_of(row: str) -> tuple[int, float]:
    """(updates, learning rate) of a row spec made by :func:`spec`."""
    opts = dict(kv.split("=") for kv in row.partition(":")[2].split(","))
    return int(opts["steps"]), float(opts["lr"])


def grid() -> dict[str, list[str]]:
    """Each method's configurations as row specs (the same budget × lr points for every method)."""
    g = {m: [spec(m, t, lr) for t, lr in CONFIGS] for m in METHODS}
    assert all(len(v) <= 12 for v in g.values())
    return g


def folder_name(row: str) -> str:
    """A file-system name for a row spec (``surgery:steps=100,lr=0.003`` → ``surgery_steps100_lr0.003``)."""
    return row.replace(":", "_").replace(",", "_").replace("=", "")


def cell(v: Optional[str]) -> Optional[float]:
    """A runs.csv cell as a number (empty: ``None``)."""
    return None if v in (None, "") else float(v)


def read_runs(path: Path) -> list[Run]:
    """The per-seed records of one table folder (none when it has no runs.csv)."""
    f = path / "runs.csv"
    if not f.is_file():
        return []
    with f.open() as fh:
        return list(csv.DictReader(fh))


def finished(path: Path, row: str, seeds: tuple[int, ...]) -> bool:
    """Whether the folder holds the row on every one of the seeds."""
    have = {int(float(r["seed"])) for r in read_runs(path) if r["method"] == row}
    return set(seeds) <= have


def durable(r: Run) -> bool:
    """Stable forgetting reached (fresh codes, both judges) and f < τ after attack (i) (both judges)."""
    f = cell(r["f_attack_i"])
    return cell(r["stable_steps"]) is not None and f is not None and f < TAU


def mean_fid(rs: list[Run]) -> float:
    v = [x for x in (cell(r["fid_after"]) for r in rs) if x is not None and math.isfinite(x)]
    return sum(v) / len(v) if v else math.inf


def score(rs: list[Run], fid_orig: float) -> tuple[bool, int, float]:
    """A configuration's rank from its tuning runs: inside the FID pool, durable seeds, lower FID."""
    fid = mean_fid(rs)
    return fid <= fid_orig * (1 + FID_SLACK), sum(map(durable, rs)), -fid


def select(runs: list[Run], fid_orig: float) -> str:
    """The configuration (its row spec) a method is reported with, from its tuning runs.

    Rule (``grid.py``'s, with the FID in place of the ELBO: a GAN has none): among the configurations
    whose mean FID by judge 1 after the run is at most ``1 + FID_SLACK`` times the original's (all of
    them if none is), the one with the most tuning seeds that forget durably (:func:`durable`), ties
    broken by the lower mean FID.
    """
    by: dict[str, list[Run]] = {}
    for r in runs:
        by.setdefault(r["method"], []).append(r)
    return max(sorted(by), key=lambda k: score(by[k], fid_orig))


def tuning_runs(method: str) -> list[Run]:
    return [
        r
        for row in grid()[method]
        for r in read_runs(TUNE / folder_name(row))
        if r["method"] == row
    ]


def original_fid(runs: list[Run]) -> float:
    """The original generator's FID by judge 1 (every run records it as ``fid_before``)."""
    v = {round(float(r["fid_before"]), 9) for r in runs if cell(r.get("fid_before")) is not None}
    if len(v) != 1:
        raise SystemExit(f"expected one original FID in the tuning runs, found {sorted(v)}")
    return v.pop()


def pick(method: str) -> Optional[str]:
    """The method's selected row, once all its tuning runs are in (else ``None``)."""
    rows = grid()[method]
    if not all(finished(TUNE / folder_name(r), r, TUNE_SEEDS) for r in rows):
        return None
    runs = tuning_runs(method)
    return select(runs, original_fid(runs))


def _command(row: str, seeds: tuple[int, ...], out: Path) -> list[str]:
    return [
        sys.executable, "-m", "uno.cli", "bench", "table", *TABLE_ARGS, "--skip-retrain",
        "--seed-list", *map(str, seeds), "--methods", row, "--out", str(out),
    ]  # fmt: skip


def jobs() -> list[tuple[str, tuple[int, ...], Path]]:
    """What is still to run, in queue order: each method's tuning folders, then its report parts
    (only once its pick is known, and none for a pick at :data:`HONEST_CONFIG`)."""
    todo: list[tuple[str, tuple[int, ...], Path]] = []
    for m in METHODS:
        for row in grid()[m]:
            out = TUNE / folder_name(row)
            if not finished(out, row, TUNE_SEEDS):
                todo.append((row, TUNE_SEEDS, out))
        chosen = pick(m)
        if chosen is None or config_of(chosen) == HONEST_CONFIG:
            continue
        for seeds in REPORT_PARTS:
            out = REPORT / "parts" / f"{folder_name(chosen)}_{seeds[0]}-{seeds[-1]}"
            if not finished(out, chosen, seeds):
                todo.append((chosen, seeds, out))
    return todo


def _alive(pid_file: Path) -> bool:
    """Whether the table process whose PID the file holds still runs (a runner started again while
    an earlier runner's processes finish must not start their folders a second time)."""
    try:
        os.kill(int(pid_file.read_text()), 0)
    except (OSError, ValueError):
        return False
    return True


def run(n_jobs: int, log: Path) -> None:
    """Keep ``n_jobs`` table processes going until nothing is left to run (a failed folder is not
    retried in the same call: it would fail again). Each process's PID is in ``log/<folder>.pid``;
    a folder whose process still runs counts toward ``n_jobs`` and is not started again."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    live: dict[Path, subprocess.Popen[bytes]] = {}
    failed: set[Path] = set()
    log.mkdir(parents=True, exist_ok=True)
    while True:
        for out, p in list(live.items()):
            if p.poll() is not None:
                del live[out]
                print(f"{time.strftime('%H:%M:%S')} done rc={p.returncode} {out}", flush=True)
                if p.returncode != 0:
                    failed.add(out)
        elsewhere = {j[2] for j in jobs() if j[2] not in live and _alive(log / f"{j[2].name}.pid")}
        queue = [j for j in jobs() if j[2] not in live and j[2] not in failed | elsewhere]
        if not queue and not live and not elsewhere:
            return
        while queue and len(live) + len(elsewhere) < n_jobs:
            row, seeds, out = queue.pop(0)
            fh = (log / f"{out.name}.log").open("w")
            live[out] = subprocess.Popen(
                _command(row, seeds, out), stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT
            )
            (log / f"{out.name}.pid").write_text(f"{live[out].pid}\n")
            print(
                f"{time.strftime('%H:%M:%S')} start pid={live[out].pid} {row} {seeds} {out}",
                flush=True,
            )
        time.sleep(5)


#: the merged table's title (the merge keeps the honest table's settings, whose budget and lr are the
#: plain rows'; a pick's row carries its own in its name)
TITLE = (
    "MNIST GAN, forget 1: 10 seeds; plain rows 20 steps at lr=0.001 (the honest table), rows named "
    "method:steps=T,lr=η their own budget and lr; λ=1000, BN frozen"
)


def merge() -> None:
    """The honest GAN table and the picks' report parts, merged into ``REPORT`` (a copy: ``HONEST`` is
    only read), with :data:`TITLE`."""
    parts = sorted(p for p in (REPORT / "parts").iterdir() if (p / "runs.csv").is_file())
    table = [sys.executable, "-m", "uno.cli", "bench", "table"]
    rel = [str(p.relative_to(ROOT)) for p in (HONEST, *parts, REPORT)]  # meta.json's merged_from
    merge_cmd = [*table, "--merge", *rel[:-1], "--out", rel[-1]]
    subprocess.run(merge_cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    meta = json.loads((REPORT / "meta.json").read_text())
    meta["args"]["title"] = TITLE
    (REPORT / "meta.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    subprocess.run([*table, "--rebuild", "--out", rel[-1]], check=True, cwd=ROOT)


def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=("run", "todo", "merge"))
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args(argv)
    if a.what == "run":
        run(a.jobs, TUNE / "_logs")
    elif a.what == "merge":
        merge()
    else:
        for row, seeds, out in jobs():
            print(row, seeds, out.relative_to(ROOT))


if __name__ == "__main__":
    main()
