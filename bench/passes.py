"""The CPU backend's ``inner`` and ``project`` passes alone, against a same-process copy.

One (k, P) float32 block of rows and one x, the kernels called through ``uno._backends.module("cpu")``
(no ops layer, no Basis, no reset of x: ``y`` is zero, so ``project`` rewrites x unchanged and
measures it), in interleaved rounds with ``dst.copy_(src)`` of P floats. Bytes per column:
``inner`` 4 (k + 1), ``project`` 4 (k + 2) (k rows and x read, x written). For a before/after
comparison of two builds, run it under each checkout's ``PYTHONPATH`` in turns (docs/kernels.md,
"On a Zen 4 core")::

    PYTHONPATH=python python bench/passes.py --threads 1 2 --ks 8 16
"""

from __future__ import annotations

import argparse
import statistics
from functools import partial
from typing import Callable, Dict, List, Sequence

import torch

from uno import _backends
from uno.bench.harness import interleaved


def measure(p: int, ks: Sequence[int], threads: int, rounds: int) -> List[str]:
    """One line per k: the copy's GB/s, each pass's median ms, GB/s and % of the copy."""
    be = _backends.module("cpu")
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    x, src, dst = torch.randn(p, generator=g), torch.randn(p, generator=g), torch.empty(p)
    lines = []
    for k in ks:
        rows = torch.randn(k, p, generator=g) / p**0.5
        y = torch.zeros(k, dtype=torch.float64)
        fns: Dict[str, Callable[[], object]] = {
            "copy": lambda: dst.copy_(src),
            "inner": partial(be.inner, [x], [rows], False),
            "project": partial(be.project, [x], [rows], y),
        }
        times = interleaved(fns, torch.device("cpu"), rounds)
        med = {name: statistics.median(v) for name, v in times.items()}
        copy = 8 * p / med["copy"] / 1e9
        parts = [f"k={k} thr={threads} copy {copy:.1f} GB/s"]
        for name, bpc in (("inner", 4 * (k + 1)), ("project", 4 * (k + 2))):
            gbs = bpc * p / med[name] / 1e9
            parts.append(f"{name} {med[name] * 1e3:.2f} ms {gbs:.1f} GB/s {100 * gbs / copy:.0f}%")
        lines.append(" | ".join(parts))
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--p", type=int, default=10**7, help="columns (default 1e7)")
    ap.add_argument("--ks", type=int, nargs="+", default=[8, 16])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=7)
    a = ap.parse_args(argv)
    if a.p < 1 or a.rounds < 1 or min(a.ks) < 1 or min(a.threads) < 1:
        ap.error("--p, --ks, --threads and --rounds must be >= 1")
    for t in a.threads:
        for line in measure(a.p, a.ks, t, a.rounds):
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
