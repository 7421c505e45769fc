"""Merge the per-seed results of several table runs into one markdown table (``experiments/results/unlearning_table.md``).

    PYTHONPATH=python python experiments/study/combine.py experiments/results/table experiments/results/table_all3

Each method is taken from the first folder that has it; the seed count per method is shown.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from uno.bench import table as ut

RES = Path(__file__).resolve().parents[1] / "results"


def load(folder: Path) -> list[dict[str, Any]]:
    with open(folder / "runs.csv") as f:
        return [{k: ut.parse_cell(v) for k, v in r.items()} for r in csv.DictReader(f)]


def main(argv: Optional[Sequence[str]] = None) -> int:
    folders = [Path(p) for p in (argv if argv is not None else sys.argv[1:])]
    runs: list[dict[str, Any]] = []
    seen: set[str] = set()
    order: list[str] = []
    steps = 0
    for fo in folders:
        if not (fo / "runs.csv").is_file():
            continue
        rs = load(fo)
        for m in dict.fromkeys(r["method"] for r in rs):
            if m in seen:
                continue
            seen.add(m)
            order.append(m)
            runs += [r for r in rs if r["method"] == m]
        steps = max(steps, int(max(r["steps_run"] for r in rs)))
    rows = ut.summarize(runs, order, steps)
    for r in rows:
        r["method"] += f" ({sum(x['method'] == r['method'] for x in runs)} seeds)"
    text = (
        f"MNIST VAE (docs/method.md §5), forget digit 1, embedded MNIST (8,000 training digits), budget {steps} "
        "updates, λ = 1e3, Adam 1e-3, batch 128 per side, BatchNorm statistics frozen (drivers' default), "
        "τ = 0.02; FID on the judge's 200-d features, all real retain digits vs as many samples.\n\n"
        + ut.markdown(rows)
        + "\n\nsteps/time to forget and FID at forget: mean ± std over the seeds that reached τ "
        "[median]; every other column: over all seeds. Source: "
        + ", ".join(str(f) for f in folders)
        + "\n"
    )
    (RES / "unlearning_table.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
