"""The unlearning comparison table of the source checkout: ``uno bench table`` with the experiments' methods.

Runs :mod:`uno.bench.table` (the package's table, also ``uno bench table``) with the paper-faithful
``uno-paper`` / ``uno-paper-nograph`` methods of ``experiments/paper_uno_step.py`` registered and
λ passed to them, writing to ``experiments/results/table`` unless ``--out`` says otherwise::

    PYTHONPATH=python python experiments/unlearning_table.py --seeds 10 --steps 100
    PYTHONPATH=python python experiments/unlearning_table.py --methods uno uno-paper --seeds 2 --quick
    PYTHONPATH=python python experiments/unlearning_table.py --model gan --gan-steps 500 --seeds 3 \
        --steps 50 --out experiments/results/table_gan
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))  # experiments/ (paper_uno_step)

import paper_uno_step

from uno.bench import table
from uno.unlearn.run import RunConfig

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class PaperRunConfig(RunConfig):
    """``RunConfig`` that also passes λ to the ``uno-paper`` methods."""

    def method_kwargs(self) -> dict[str, Any]:
        kw = super().method_kwargs()
        kw.update(paper_uno_step.method_kwargs(self.method, self.lam))
        return kw


def main(argv: Optional[Sequence[str]] = None) -> int:
    return table.main(argv, default_out=RESULTS / "table", config_cls=PaperRunConfig)


if __name__ == "__main__":
    raise SystemExit(main())
