"""Microbenchmarks of the kernels, runnable from an installed wheel (no source checkout needed).

    uno bench project --quick          # or: python -m uno.bench project --quick
    uno bench optim | per-sample | combine [--device cuda] [--threads N] [--csv PATH]
    uno bench dist [--quick] [--world 2]   # uno.project_ on FSDP2-style shards vs all-gathering
    uno bench roofline [--quick]       # every CPU kernel vs copy/triad bandwidth, one table (md + CSV)
    uno bench pages [--quick]          # combine / project_ on 4 KiB pages vs transparent huge pages
    uno bench table ...                # the unlearning comparison table (uno.bench.table)

Each benchmark prints a table (time, GB/s, fraction of a same-run copy's bandwidth, speed-ups against
named baselines) and appends its rows, stamped with date, machine, versions and threads, to a CSV file
(``--csv``; default ``./uno-bench/NAME.csv``, never inside the installed package). The shared harness
is :mod:`uno.bench.harness`; one small module per benchmark describes its configurations, baselines
and columns. The source checkout's ``bench/bench_*.py`` scripts call these modules and append to
``bench/results/*.csv``.
"""

from __future__ import annotations

import importlib
import sys
from typing import Dict, Optional, Sequence

#: ``uno bench NAME`` → the module that runs it (each has ``main(argv, default_csv=None) -> int``).
BENCHES: Dict[str, str] = {
    "combine": "uno.bench.combine",
    "dist": "uno.bench.dist",
    "optim": "uno.bench.optim",
    "pages": "uno.bench.pages",
    "per-sample": "uno.bench.per_sample",
    "project": "uno.bench.project",
    "roofline": "uno.bench.roofline",
    "table": "uno.bench.table",
}


def run(name: str, argv: Sequence[str] = ()) -> int:
    """Run the benchmark ``name`` with its options ``argv``; returns its exit status.

    Raises:
        ValueError: ``name`` is not one of :data:`BENCHES`.
    """
    if name not in BENCHES:
        raise ValueError(f"unknown benchmark {name!r}; choose one of {', '.join(sorted(BENCHES))}")
    return int(importlib.import_module(BENCHES[name]).main(list(argv)) or 0)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m uno.bench NAME [options]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help") or args[0] not in BENCHES:
        print(__doc__.split("\n\n")[1] if __doc__ else "", file=sys.stderr)
        print(
            f"usage: python -m uno.bench {{{','.join(sorted(BENCHES))}}} [options]", file=sys.stderr
        )
        return 0 if args and args[0] in ("-h", "--help") else 2
    return run(args[0], args[1:])
