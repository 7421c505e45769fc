"""Is the roofline's `project_` row above 100 % of the copy because of a large last-level cache?

The roofline writes a fresh gradient into `grads` (untimed) right before each `uno.project_` call, as a
backward pass would; on a VM that reports a large shared L3 (480 MiB on the Intel Xeon 2-core VM) the
gradient of P = 1e7 (40 MB) may still be in it when the call starts, while the same-run copy's source
may not. This script measures the roofline's k = 1 row (147 pieces, interleaved rounds with the copy,
`uno.bench.roofline.measure`) at P = 1e7 and at P = 1e8 (g and the basis row 800 MB: beyond any cache),
each also with a "cold" reset that writes 1.2 GB after the gradient (evicting it) — the "uno cold"
speed-up is the warm call over the cold one (1.00x: the cache does not help).

    PYTHONPATH=python python bench/cache_check.py            # 1 thread, 5 rounds (about a minute)
    PYTHONPATH=python python bench/cache_check.py --threads 2
    PYTHONPATH=python python bench/cache_check.py --p 5000 --flush-mb 1 --rounds 2   # smoke test

Needs about 4 GB of memory at P = 1e8. Results: docs/kernels.md, the 2026-12-03 table of record.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from typing import Dict, Optional, Sequence

import torch

import uno
from uno.bench import roofline
from uno.bench.shapes import numel, random_pieces, scaled_shapes


def row(p: int, n_rounds: int, threads: int, flush_mb: int) -> Dict[str, object]:
    gen = torch.Generator().manual_seed(0)
    cpu = torch.device("cpu")
    shapes = scaled_shapes("transformer", p)
    grads = random_pieces(shapes, torch.float32, cpu, gen)
    g0 = [x.clone() for x in grads]
    basis = uno.orthonormalize([random_pieces(shapes, torch.float32, cpu, gen)])
    flush = torch.empty(flush_mb * 2**20 // 4)

    def reset() -> None:
        for a, b in zip(grads, g0):
            a.copy_(b)

    def reset_cold() -> None:
        reset()
        flush.fill_(1.0)

    call = partial(uno.project_, grads, basis)
    case = roofline.Case(
        f"project_ Basis ({len(shapes)} pieces)", 1, numel(shapes), 4 * 5,
        {"uno": (reset, call), "uno cold": (reset_cold, call)},
    )  # fmt: skip
    return roofline.measure(case, n_rounds, threads)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--p", type=int, nargs="+", default=[10**7, 10**8], help="sizes (1e7 1e8)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--flush-mb", type=int, default=1200, help="MiB written to evict (1200)")
    args = ap.parse_args(argv)
    if min(args.p) < 1 or args.threads < 1 or args.rounds < 1 or args.flush_mb < 1:
        ap.error("--p, --threads, --rounds and --flush-mb must be >= 1")
    before = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        print(f"# {roofline.h.machine()}, {args.threads} thread(s), {args.rounds} rounds")
        print(f"{'P':>12} {'ms':>8} {'GB/s':>6} {'copy GB/s':>9} {'%copy':>6}  speed-up")
        for p in args.p:
            r = row(p, args.rounds, args.threads, args.flush_mb)
            pct = 100 * float(str(r["frac_copy"]))
            print(
                f"{r['P']:>12,} {r['ms']:>8.2f} {r['GBps']:>6.1f} {r['copy_GBps']:>9.1f} "
                f"{pct:>6.0f}  {r['speedups']}"
            )
    finally:
        torch.set_num_threads(before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
