"""Benchmark the ``combine`` primitive and ``uno.orthonormalize`` against what torch users write.

``combine`` (docs/kernels.md) writes ``out = M @ rows`` for an (r, k) float64 matrix M and k rows of P
elements, in float64 arithmetic rounded once; ``uno.orthonormalize`` calls it twice (CholeskyQR2).

Baselines, measured in the same run:
  * combine vs ``(M @ rows.double()).to(dtype)``: the same float64 arithmetic with torch (a float64 copy
    of the rows, a float64 GEMM, a rounding copy), and vs a plain ``copy_`` of the r output rows (the
    memory-bandwidth floor);
  * orthonormalize (k separate vectors of the MNIST VAE's 14 parameter shapes) vs ``torch.linalg.qr`` of
    the ``torch.cat``-flattened ``[P, k]`` matrix (what unlearning code does today).

Prints a table (median ms, speed-up vs the baselines) and appends rows to bench/results/combine.csv.

    PYTHONPATH=python python bench/bench_combine.py [--threads 1] [--quick]
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import platform
import statistics
import time
from typing import Callable, List

import torch

import uno
from uno import _backends

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "combine.csv")
VAE_SHAPES = [
    (400, 784), (400,), (400,), (400,), (2, 400), (2,), (2, 400), (2,),
    (400, 2), (400,), (400,), (400,), (784, 400), (784,),
]  # fmt: skip


def _median_ms(fn: Callable[[], object], reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def bench_combine(P: int, k: int, r: int, dtype: torch.dtype, reps: int) -> dict[str, float]:
    be = _backends.module("cpu")
    g = torch.Generator().manual_seed(k * 100 + r)
    rows = torch.randn(k, P, generator=g).to(dtype)
    m = torch.randn(r, k, generator=g, dtype=torch.float64)
    out = torch.empty(r, P, dtype=dtype)
    uno_ms = _median_ms(lambda: be.combine([out], [rows], m), reps)
    torch_ms = _median_ms(lambda: out.copy_(m @ rows.double()), reps)
    copy_ms = _median_ms(lambda: out.copy_(rows[:r]), reps)
    want = (m @ rows.double()).to(dtype)
    be.combine([out], [rows], m)
    err = float((out.double() - want.double()).abs().max() / want.double().abs().max())
    return {"uno_ms": uno_ms, "torch_ms": torch_ms, "copy_ms": copy_ms, "rel_err": err}


def bench_orthonormalize(k: int, reps: int) -> dict[str, float]:
    g = torch.Generator().manual_seed(k)
    vecs = [[torch.randn(s, generator=g) for s in VAE_SHAPES] for _ in range(k)]
    uno_ms = _median_ms(lambda: uno.orthonormalize(vecs, backend="cpu"), reps)

    def qr() -> torch.Tensor:
        a = torch.stack([torch.cat([p.reshape(-1) for p in v]) for v in vecs], 1)
        return torch.linalg.qr(a).Q

    qr_ms = _median_ms(qr, reps)
    return {"uno_ms": uno_ms, "torch_ms": qr_ms}


def main(argv: List[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--quick", action="store_true", help="a small sweep (smoke test)")
    ap.add_argument("--csv", default=RESULTS)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    P = 20_000 if a.quick else sum(int(torch.Size(s).numel()) for s in VAE_SHAPES)
    krs = [(2, 2), (8, 8)] if a.quick else [(1, 1), (2, 2), (4, 4), (8, 8), (16, 16), (64, 64)]
    reps = 3 if a.quick else a.reps
    rows: list[dict[str, object]] = []
    machine = (
        f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus, torch {torch.__version__}"
    )
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    print(f"{machine}, {a.threads} thread(s), P = {P}")
    print("| op | k | r | dtype | uno (ms) | torch (ms) | copy (ms) | uno vs torch | rel. err |")
    print("|---|---|---|---|---|---|---|---|---|")
    for dtype in (torch.float32, torch.float64):
        for k, r in krs:
            res = bench_combine(P, k, r, dtype, reps)
            name = str(dtype).removeprefix("torch.")
            print(
                f"| combine | {k} | {r} | {name} | {res['uno_ms']:.3f} | {res['torch_ms']:.3f} | "
                f"{res['copy_ms']:.3f} | {res['torch_ms'] / res['uno_ms']:.2f}x | {res['rel_err']:.1e} |"
            )
            rows.append(dict(op="combine", k=k, r=r, dtype=name, **res))
    for k in [2, 8] if a.quick else [1, 2, 8, 32]:
        res = bench_orthonormalize(k, reps)
        print(
            f"| orthonormalize (vs cat + qr) | {k} | {k} | float32 | {res['uno_ms']:.3f} | "
            f"{res['torch_ms']:.3f} | | {res['torch_ms'] / res['uno_ms']:.2f}x | |"
        )
        rows.append(dict(op="orthonormalize", k=k, r=k, dtype="float32", **res))
    os.makedirs(os.path.dirname(a.csv), exist_ok=True)
    new = not os.path.exists(a.csv)
    fields = ["date", "machine", "threads", "P", "op", "k", "r", "dtype", "uno_ms", "torch_ms"]
    fields += ["copy_ms", "rel_err"]
    with open(a.csv, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        if new:
            w.writeheader()
        for row in rows:
            w.writerow(dict(date=now, machine=machine, threads=a.threads, P=P, **row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
