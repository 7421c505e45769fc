"""The GAN study's tables (grid_gan.py's folders) as markdown: the tuning grid with the picks, and why.

Usage::

    PYTHONPATH=python python experiments/durable/table_gan.py           # tuning table
    PYTHONPATH=python python experiments/durable/table_gan.py why       # length of the run vs durability
    PYTHONPATH=python python experiments/durable/table_gan.py report    # seeds 0–9: picks, honest rows
    PYTHONPATH=python python experiments/durable/table_gan.py attack    # seeds 0–9: attack (i) step by step
    PYTHONPATH=python python experiments/durable/table_gan.py distance  # why_gan.py's parameter distances

The tuning table is one line per (method, configuration) on seeds 100–102; "why" reads the same runs
(what the table logged: no parameter distances, so the move away from the original is read from its
two visible effects, the FID gap to the original and the budget × learning rate of the run).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import grid_gan as G


def _mean(v: list[Optional[float]]) -> float:
    x = [a for a in v if a is not None and math.isfinite(a)]
    return statistics.fmean(x) if x else math.nan


def _stable(rs: list[G.Run]) -> str:
    st = [int(s) for s in (G.cell(r["stable_steps"]) for r in rs) if s is not None]
    if not st:
        return "—"
    return f"{statistics.median(st):g} [{min(st)}–{max(st)}], {len(st)}/{len(rs)}"


def _ii(rs: list[G.Run]) -> str:
    st = [G.cell(r["attack_ii_steps"]) for r in rs]
    got = [s for s in st if s is not None]
    more = len(st) - len(got)
    return (f"{statistics.median(got):g}" if got else "> 10") + (
        f" ({more} > 10)" if got and more else ""
    )


def _f_end(r: G.Run) -> Optional[float]:
    """f after the run on every fresh code, the larger of the two judges' fractions."""
    v = [x for x in (G.cell(r["f_fresh_final"]), G.cell(r["f_fresh2_final"])) if x is not None]
    return max(v) if v else None


def tune_table() -> str:
    """Every tuning configuration's means over its seeds; the pick of each complete method marked."""
    head = [
        "| method | configuration | durable (of 3) | stable steps (median [range], reached) | "
        "f after attack (i): both (MLP / CNN) | f at end | FID (judge 1) | FID (judge 2) | "
        "attack (ii) steps | ms/step | in FID pool | selected |",
        "|" + "---|" * 12,
    ]
    out = list(head)
    fid_orig: Optional[float] = None
    for m in G.METHODS:
        runs = G.tuning_runs(m)
        if not runs:
            continue
        fid_orig = G.original_fid(runs)
        chosen = G.pick(m)
        for row in G.grid()[m]:
            rs = [r for r in runs if r["method"] == row]
            if not rs:
                continue
            fid = G.mean_fid(rs)
            cfg = row.partition(":")[2]
            out.append(
                f"| {m} | {cfg} | {sum(map(G.durable, rs))}/{len(rs)} | {_stable(rs)} | "
                f"{_mean([G.cell(r['f_attack_i']) for r in rs]):.4f} "
                f"({_mean([G.cell(r['f_attack_i_j1']) for r in rs]):.4f} / "
                f"{_mean([G.cell(r['f_attack_i_j2']) for r in rs]):.4f}) | "
                f"{_mean([_f_end(r) for r in rs]):.4f} | {fid:.2f} | "
                f"{_mean([G.cell(r['fid2_after']) for r in rs]):.1f} | {_ii(rs)} | "
                f"{1e3 * statistics.median(G.cell(r['per_step_median_s']) or 0 for r in rs):.0f} | "
                f"{'yes' if fid <= fid_orig * (1 + G.FID_SLACK) else 'no'} | "
                f"{'**yes**' if row == chosen else ''} |"
            )
    if fid_orig is not None:
        out.append(
            f"\nOriginal FID (judge 1) {fid_orig:.2f}; FID pool: mean FID ≤ {1 + G.FID_SLACK:g} × that "
            f"= {fid_orig * (1 + G.FID_SLACK):.2f}. Durable: stable reached and f < {G.TAU} after attack "
            "(i), both judges. Means over the tuning seeds 100–102."
        )
    return "\n".join(out)


def _rank(v: list[float]) -> list[float]:
    order = sorted(range(len(v)), key=lambda i: v[i])
    r = [0.0] * len(v)
    i = 0
    while i < len(order):  # ties share their mean rank
        j = i
        while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2
        i = j + 1
    return r


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rank correlation of two equally long lists (ties: mean ranks)."""
    rx, ry = _rank(x), _rank(y)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    num = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    den = math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
    return num / den if den else math.nan


def why_table() -> str:
    """Per method: f after attack (i) by budget and learning rate, and the rank correlation of the
    move (budget × lr; the FID gap to the original) with f after attack (i) over every tuning run."""
    out = [
        "| method | f after attack (i), mean of 3 seeds: " + " / ".join(G.spec("", t, lr)[1:] for t, lr in G.CONFIGS)
        + " | ρ(T·η, f after (i)) | ρ(FID − FID₀, f after (i)) | runs |",
        "|---|---|---|---|---|",
    ]  # fmt: skip
    for m in G.METHODS:
        runs = G.tuning_runs(m)
        if not runs:
            continue
        fid0 = G.original_fid(runs)
        cells = []
        for t, lr in G.CONFIGS:
            rs = [r for r in runs if r["method"] == G.spec(m, t, lr)]
            cells.append(f"{_mean([G.cell(r['f_attack_i']) for r in rs]):.4f}" if rs else "-")
        fa = [G.cell(r["f_attack_i"]) or 0.0 for r in runs]
        move = [math.prod(G.config_of(r["method"])) for r in runs]
        gap = [(G.cell(r["fid_after"]) or math.nan) - fid0 for r in runs]
        out.append(
            f"| {m} | {' / '.join(cells)} | {spearman(move, fa):+.2f} | {spearman(gap, fa):+.2f} | {len(runs)} |"
        )
    return "\n".join(out)


def _pm(v: list[Optional[float]], fmt: str = ".4f") -> str:
    x = [a for a in v if a is not None and math.isfinite(a)]
    if not x:
        return "-"
    return f"{statistics.fmean(x):{fmt}} ± {statistics.stdev(x) if len(x) > 1 else 0.0:{fmt}}"


def report_runs() -> list[G.Run]:
    """Seeds 0–9: the honest GAN table's records (retrain and its 20-update rows) and the picks'."""
    runs = G.read_runs(G.HONEST)
    for part in sorted((G.REPORT / "parts").glob("*")):
        runs += G.read_runs(part)
    return runs


def report_table() -> str:
    """On seeds 0–9, per row: durable seeds, f after attack (i), stable steps, FID (and its gap to the
    retrained generator's), attack (ii); the retrain row, each method's 20-update honest row and its pick."""
    runs = report_runs()
    ret = [r for r in runs if r["method"] == "retrain"]
    fid_rt = G.mean_fid(ret)
    out = [
        "| row | seeds | durable (stable and f < 0.02 after attack (i)) | f after attack (i) < 0.02 | "
        "f after attack (i): both | MLP / CNN | stable steps (median [range], reached) | "
        "f at end | FID (judge 1), gap to retrain | attack (ii) steps |",
        "|" + "---|" * 10,
    ]
    picks = {r["method"] for r in runs if ":" in r["method"]}
    for row in ["retrain", *[m for m in G.METHODS], *sorted(picks)]:
        rs = [r for r in runs if r["method"] == row]
        if not rs:
            continue
        fa = [G.cell(r["f_attack_i"]) for r in rs]
        below = sum(f is not None and f < G.TAU for f in fa)
        dur = "—" if row == "retrain" else f"{sum(map(G.durable, rs))}/{len(rs)}"
        fid = G.mean_fid(rs)
        out.append(
            f"| {row} | {len(rs)} | {dur} | {below}/{len(rs)} | {_pm(fa)} | "
            f"{_mean([G.cell(r['f_attack_i_j1']) for r in rs]):.4f} / "
            f"{_mean([G.cell(r['f_attack_i_j2']) for r in rs]):.4f} | "
            f"{'—' if row == 'retrain' else _stable(rs)} | {_pm([_f_end(r) for r in rs])} | "
            f"{_pm([G.cell(r['fid_after']) for r in rs], '.2f')}, "
            f"{100 * (fid / fid_rt - 1):+.0f} % | {_ii(rs)} |"
        )
    return "\n".join(out)


def _curves(folder: Path) -> dict[tuple[str, int], list[float]]:
    """Attack (i)'s f per step (both judges, on the table's codes per attack step) per (row, seed)."""
    out: dict[tuple[str, int], list[float]] = {}
    f = folder / "relearn.csv"
    if not f.is_file():
        return out
    with f.open() as fh:
        for r in csv.DictReader(fh):
            if r["attack"] == "curve_i":
                out.setdefault((r["method"], int(float(r["seed"]))), []).append(float(r["f"]))
    return out


def attack_table() -> str:
    """Attack (i) as a process, not one snapshot: per row on seeds 0–9, the mean over seeds of f
    before it, its mean and maximum over the 100 steps, the last 50 steps' mean, and the final f on
    10,000 codes (the table's "f after attack (i)")."""
    curves: dict[tuple[str, int], list[float]] = {}
    for folder in [G.HONEST, *sorted((G.REPORT / "parts").glob("*"))]:
        for k, v in _curves(folder).items():
            curves.setdefault(k, v)
    runs = {(r["method"], int(float(r["seed"]))): r for r in report_runs()}
    out = [
        "| row | seeds | f at step 0 | mean f, steps 1–100 | mean f, steps 51–100 | max f | "
        "final f (10,000 codes) | seeds with mean f (51–100) < 0.02 |",
        "|" + "---|" * 8,
    ]
    picks = sorted({m for m, _ in curves if ":" in m})
    for row in ["retrain", *G.METHODS, *picks]:
        cs = {s: c for (m, s), c in curves.items() if m == row and len(c) > 1}
        if not cs:
            continue
        late = {s: statistics.fmean(c[len(c) // 2 + 1 :]) for s, c in cs.items()}
        final = [G.cell(runs[(row, s)]["f_attack_i"]) for s in cs if (row, s) in runs]
        means = (
            [c[0] for c in cs.values()],  # before the attack
            [statistics.fmean(c[1:]) for c in cs.values()],
            list(late.values()),
            [max(c[1:]) for c in cs.values()],
            final,
        )
        cells = [row, str(len(cs)), *(f"{_mean(list(v)):.4f}" for v in means)]
        cells.append(f"{sum(v < G.TAU for v in late.values())}/{len(cs)}")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


#: ‖θ_retrained − θ_original‖ of the cached generators (their 10 parameter tensors; ‖θ_original‖ = 65.39)
RETRAIN_DIST = 3.654


def distance_table() -> str:
    """why_gan.py's distances from the original after 20 and 100 updates (lr 1e-3, tuning seeds), with
    the table's f after attack (i) for the same runs, and their rank correlation over all of them."""
    recs = []
    for f in sorted(G.TUNE.glob("why*.jsonl")):
        recs += [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
    out = [
        "| method | ‖θ − θ_o‖ after 20 updates | f after attack (i) | ‖θ − θ_o‖ after 100 | "
        "f after attack (i) | runs (monitor f = the table's) |",
        "|" + "---|" * 6,
    ]
    xs, ys = [], []
    for m in G.METHODS:
        rs = [r for r in recs if r["method"] == m]
        if not rs:
            continue
        cells = [m]
        for t in (20, 100):
            d = [r[f"dist_{t}"] for r in rs]
            fa = [r[f"f_attack_{t}"] for r in rs]
            xs += d
            ys += fa
            cells += [f"{min(d):.2f}–{max(d):.2f}", f"{min(fa):.4f}–{max(fa):.4f}"]
        same = all(r["same_as_table_20"] and r["same_as_table_100"] for r in rs)
        cells.append(f"{len(rs)} ({'yes' if same else 'NO'})")
        out.append("| " + " | ".join(cells) + " |")
    if xs:
        out.append(
            f"\nρ(‖θ − θ_o‖, f after attack (i)) over the {len(xs)} (run, budget) points: "
            f"{spearman(xs, ys):+.2f}; ‖θ_retrained − θ_o‖ = {RETRAIN_DIST}."
        )
    return "\n".join(out)


def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "what", nargs="?", choices=("tune", "why", "report", "attack", "distance"), default="tune"
    )
    a = ap.parse_args(argv)
    tables = {"tune": tune_table, "why": why_table, "report": report_table, "attack": attack_table}
    tables["distance"] = distance_table
    print(tables[a.what]())


if __name__ == "__main__":
    main()
