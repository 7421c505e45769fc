"""The CPU ``combine`` pass (k = r = 16) and ``uno.orthonormalize`` of 8 VAE-sized vectors, against a
same-process copy and ``torch.cat`` + ``torch.linalg.qr``.

``combine``: one (16, P) float32 block into a separate (16, P) output through
``uno._backends.module("cpu")`` (no ops layer), 128 bytes per column (16 rows read, 16 written);
``orthonormalize``: the roofline's case (8 vectors in the MNIST VAE's 21 shapes, 632K parameters),
with the speed-up over ``torch.stack`` of ``torch.cat`` + ``torch.linalg.qr`` as the median of the
per-round ratios. Interleaved rounds (copy, combine, orthonormalize, qr, then again). For a
before/after comparison of two builds, run it under each checkout's ``PYTHONPATH`` in turns
(docs/kernels.md, "On a Zen 5 core")::

    PYTHONPATH=python python bench/combine_passes.py --threads 2 1
"""

from __future__ import annotations

import argparse
import statistics
from typing import Callable, Dict, Sequence

import torch

import uno
from uno import _backends
from uno.bench.harness import interleaved
from uno.bench.shapes import MNIST_VAE_SHAPES


def measure(p: int, threads: int, rounds: int) -> str:
    """One line: combine's median ms, GB/s and % of the copy; orthonormalize's ms and speed-up."""
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    be = _backends.module("cpu")
    rows, out = torch.randn(16, p, generator=g), torch.empty(16, p)
    m = torch.randn(16, 16, dtype=torch.float64, generator=g)
    vecs = [[torch.randn(s, generator=g) for s in MNIST_VAE_SHAPES] for _ in range(8)]
    src, dst = torch.randn(4 * p, generator=g), torch.empty(4 * p)

    def qr() -> object:
        return torch.linalg.qr(
            torch.stack([torch.cat([x.reshape(-1) for x in v]) for v in vecs], 1)
        )

    fns: Dict[str, Callable[[], object]] = {
        "copy": lambda: dst.copy_(src),
        "combine": lambda: be.combine([out], [rows], m),
        "orth": lambda: uno.orthonormalize(vecs),
        "qr": qr,
    }
    times = interleaved(fns, torch.device("cpu"), rounds)
    med = {name: statistics.median(v) for name, v in times.items()}
    copy = 8 * 4 * p / med["copy"] / 1e9
    gbs = 128 * p / med["combine"] / 1e9
    speedup = statistics.median(a / b for a, b in zip(times["qr"], times["orth"]))
    return (
        f"thr={threads} copy {copy:.1f} GB/s | combine k=16 {med['combine'] * 1e3:.2f} ms "
        f"{gbs:.1f} GB/s {100 * gbs / copy:.0f}% | orthonormalize {med['orth'] * 1e3:.2f} ms, "
        f"torch qr {speedup:.2f}x"
    )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--p", type=int, default=1_000_000, help="combine's columns (default 1e6)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args(argv)
    if args.p < 1 or args.rounds < 1 or any(t < 1 for t in args.threads):
        ap.error("--p, --rounds and --threads must be >= 1")
    for t in args.threads:
        print(measure(args.p, t, args.rounds), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
