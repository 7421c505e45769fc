"""The unlearning comparison table of the source checkout: ``uno bench table`` with the experiments' methods.

Runs :mod:`uno.bench.table` (the package's table, also ``uno bench table``) with the paper-faithful
``uno-paper`` / ``uno-paper-nograph`` methods of ``experiments/paper_uno_step.py`` registered (they
inherit ``uno``'s λ, which ``--lam`` sets like any declared hyper-parameter), writing to
``experiments/results/table`` unless ``--out`` says otherwise::

    PYTHONPATH=python python experiments/unlearning_table.py --seeds 10 --steps 30
    PYTHONPATH=python python experiments/unlearning_table.py --methods uno uno-paper --seeds 2 --quick
    PYTHONPATH=python python experiments/unlearning_table.py --model gan --methods uno surgery \
        --seeds 10 --steps 20 --fresh-n 1000 --attack-n 250 --out experiments/results/honest_gan_a

The table has the retrain row, stable steps on fresh codes by both judges, speed-up vs retraining and both
relearning attacks (``uno.bench.table``'s docstring; docs/method.md §4b). A table split over two processes
(``--skip-retrain`` on all but one) is joined with ``--merge A B --out AB``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))  # experiments/ (paper_uno_step)

import paper_uno_step  # noqa: F401  (registers uno-paper and uno-paper-nograph)

from uno.bench import table

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: Optional[Sequence[str]] = None) -> int:
    return table.main(argv, default_out=RESULTS / "table")


if __name__ == "__main__":
    raise SystemExit(main())
