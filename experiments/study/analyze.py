"""Per-layer and per-step evidence for the study (reads the sweeps' JSON; no model is run).

    python experiments/study/analyze.py experiments/results/study/hist.json experiments/results/study/lam2.json

Prints, for every ``uno``/``uno-hat`` configuration: the per-layer ratio ‖λ·∇c²‖/‖∇L_r‖ at the first step
(mean over seeds; the diagnostics of ``common.uno_diagnostics``), the share of coordinates whose update sign
differs from ∇L_r's, and, for every configuration, c² (of the step's g_f, g_r) and f at steps 1, 2, 3, 5, 10,
20, 50 (mean over seeds).
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from collections import defaultdict
from typing import Any


def _mean(v: list[float]) -> float:
    w = [x for x in v if x is not None and not math.isnan(x)]
    return statistics.fmean(w) if w else math.nan


def main(paths: list[str]) -> int:
    runs: list[dict[str, Any]] = []
    for p in paths:
        runs += json.load(open(p))
    by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        by[r["label"]].append(r)
    print("## per-layer ‖λ∇c²‖/‖∇L_r‖ at step 1 (mean over seeds)\n")
    layers: list[str] = []
    for rs in by.values():
        d0 = next((x for x in rs[0]["rows"] if "ratio" in x), None)
        if d0:
            layers = [k.removeprefix("ratio.") for k in d0 if k.startswith("ratio.")]
            break
    print("| config | all | " + " | ".join(layers) + " |")
    print("|---|---|" + "---|" * len(layers))
    for lab, rs in by.items():
        firsts = [next((x for x in r["rows"] if "ratio" in x and x["step"] == 1), None) for r in rs]
        firsts = [x for x in firsts if x]
        if not firsts:
            continue
        cells = [f"{_mean([x['ratio'] for x in firsts]):.3g}"]
        cells += [f"{_mean([x['ratio.' + n] for x in firsts]):.3g}" for n in layers]
        print(f"| {lab} | " + " | ".join(cells) + " |")
    print("\n## c² and f by step (mean over seeds)\n")
    marks = (1, 2, 3, 5, 10, 20, 50)
    print(
        "| config | "
        + " | ".join(f"c² @{m}" for m in marks)
        + " | "
        + " | ".join(f"f @{m}" for m in marks)
        + " |"
    )
    print("|---|" + "---|" * (2 * len(marks)))
    for lab, rs in by.items():

        def at(key: str, m: int, rs: list[dict[str, Any]] = rs) -> float:
            return _mean(
                [next((x[key] for x in r["rows"] if x["step"] == m), math.nan) for r in rs]
            )

        c = [f"{at('cos2', m):.3g}" for m in marks]
        f = [f"{at('f', m):.3f}" for m in marks]
        print(f"| {lab} | " + " | ".join(c) + " | " + " | ".join(f) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
