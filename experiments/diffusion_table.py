"""The diffusion unlearning table (issue 19) with ``experiments/results/diffusion`` as its folder.

    PYTHONPATH=python OMP_NUM_THREADS=1 python experiments/diffusion_table.py --seeds 10   # the table
    PYTHONPATH=python python experiments/diffusion_table.py --quick --out /tmp/dt          # seconds

The same code path as ``uno bench table --model diffusion`` (:mod:`uno.unlearn.diffusion.table`, whose
docstring and docs/diffusion.md explain the options and columns); only the default ``--out`` differs.
"""

from __future__ import annotations

from pathlib import Path

from uno.unlearn.diffusion.table import main

RESULTS = Path(__file__).resolve().parent / "results" / "diffusion"

if __name__ == "__main__":
    raise SystemExit(main(default_out=RESULTS))
