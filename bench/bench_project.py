"""Benchmark uno.project_ against the code users write today, on realistic parameter lists.

Baselines, measured in the same run on the same machine:
  (a) naive:  torch.cat of the gradient pieces (and of the basis vectors), separate dot products,
              axpy, copy back into every piece: what unlearning code does today;
  (b) qr:     torch.linalg.qr of the concatenated [P, k] basis, then two matmuls (Q (Qᵀ g)), plus the
              same cat / copy back;
  (c) copy:   a STREAM-like copy (dst.copy_(src)) of a P-element buffer: the memory-bandwidth limit.
uno rows: `uno.project_` with a prebuilt uno.Basis (the steady state: a basis reused over many steps)
and with raw vectors (k = 1, what `surgery` does every step).

Prints a table (median time, GB/s, fraction of copy bandwidth, speed-ups vs (a) and (b)) and appends
rows to bench/results/project.csv with machine, date and version.

    python bench/bench_project.py              # P from 1e5 to 1e7 (1e8 with --big), k in {1, 4, 16, 64}
    python bench/bench_project.py --quick      # a small sweep (smoke test)
    python bench/bench_project.py --device cuda
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import math
import os
import platform
import statistics
import time
from dataclasses import dataclass
from typing import Callable, List, Sequence

import torch

import uno

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "project.csv")


@dataclass(frozen=True)
class Config:
    model: str  # "convvae" (CelebA-shaped conv VAE) or "transformer" (a stack of blocks)
    numel: int  # target P; the shape list is scaled to it
    k: int
    dtype: torch.dtype = torch.float32


def conv_vae_shapes() -> List[tuple]:
    """Parameter shapes of a conv VAE in the paper's CelebA layout (5 conv blocks 32..512, latent 512)."""
    shapes: List[tuple] = []
    ch = [3, 32, 64, 128, 256, 512]
    for a, b in zip(ch, ch[1:]):
        shapes += [(b, a, 3, 3), (b,), (b,), (b,)]  # conv weight, bias, BN weight, BN bias
    shapes += [(512, 2048), (512,), (512, 2048), (512,), (2048, 512), (2048,)]
    rev = ch[::-1]
    for a, b in zip(rev, rev[1:]):
        shapes += [(a, b, 3, 3), (b,), (b,), (b,)]
    shapes += [(3, 3, 3, 3), (3,)]
    return shapes


def transformer_shapes(d: int = 768, layers: int = 12, vocab: int = 32000) -> List[tuple]:
    shapes: List[tuple] = [(vocab, d)]
    for _ in range(layers):
        shapes += [(d,), (d,), (3 * d, d), (3 * d,), (d, d), (d,), (d,), (d,)]
        shapes += [(4 * d, d), (4 * d,), (d, 4 * d), (d,)]
    shapes += [(d,), (d,)]
    return shapes


def scaled_shapes(model: str, numel: int) -> List[tuple]:
    """The model's shape list with every dimension scaled so that the total is about ``numel``."""
    base = conv_vae_shapes() if model == "convvae" else transformer_shapes()
    total = sum(math.prod(s) for s in base)
    f = numel / total
    out = []
    for s in base:
        if len(s) == 1:
            out.append((max(1, round(s[0] * f)),))
        else:
            out.append((max(1, round(s[0] * f)), *s[1:]))
    return out


def timeit(fn: Callable[[], None], device: torch.device, reps: int, min_time: float = 0.2) -> float:
    """Median seconds per call (device synchronised around each call)."""

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    fn()
    sync()
    times = []
    t_start = time.perf_counter()
    while len(times) < reps or (time.perf_counter() - t_start < min_time and len(times) < 100):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def naive_project(grads: Sequence[torch.Tensor], vectors: Sequence[Sequence[torch.Tensor]]) -> None:
    """Baseline (a): what users write today (cat, Gram-Schmidt of the basis, dots, axpy, copy back)."""
    g = torch.cat([p.reshape(-1) for p in grads])
    qs: List[torch.Tensor] = []
    for v in vectors:
        q = torch.cat([p.reshape(-1) for p in v])
        for u in qs:
            q = q - (q @ u) * u
        qs.append(q / q.norm())
    for q in qs:
        g = g - (g @ q) * q
    o = 0
    for p in grads:
        n = p.numel()
        p.copy_(g[o : o + n].view_as(p))
        o += n


def qr_project(grads: Sequence[torch.Tensor], vectors: Sequence[Sequence[torch.Tensor]]) -> None:
    """Baseline (b): torch.linalg.qr of the concatenated [P, k] basis, then two matmuls."""
    g = torch.cat([p.reshape(-1) for p in grads])
    v = torch.stack([torch.cat([p.reshape(-1) for p in vec]) for vec in vectors], dim=1)
    q, _ = torch.linalg.qr(v)
    g = g - q @ (q.T @ g)
    o = 0
    for p in grads:
        n = p.numel()
        p.copy_(g[o : o + n].view_as(p))
        o += n


def machine() -> str:
    return (
        f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus, torch {torch.__version__}"
    )


def bench_config(
    cfg: Config, device: torch.device, reps: int, gen: torch.Generator, threads: int
) -> List[dict]:
    """Time every method on one configuration; print its rows and return them for the CSV."""
    rows: List[dict] = []
    shapes = scaled_shapes(cfg.model, cfg.numel)
    p = sum(math.prod(s) for s in shapes)
    esz = torch.finfo(cfg.dtype).bits // 8
    mk = lambda: [torch.randn(s, generator=gen).to(device, cfg.dtype) for s in shapes]  # noqa: E731
    grads = mk()
    vectors = [mk() for _ in range(cfg.k)]
    basis = uno.orthonormalize(vectors)
    src = torch.empty(p, dtype=cfg.dtype, device=device).normal_()
    dst = torch.empty_like(src)
    t_copy = timeit(lambda: dst.copy_(src), device, reps)
    copy_gbs = 2 * p * esz / t_copy / 1e9
    g0 = [x.clone() for x in grads]

    def reset():
        for a, b in zip(grads, g0):
            a.copy_(b)

    # Every timed call starts from the same (non-orthogonal) grad; the reset copy is timed alone
    # and subtracted, so each row measures the projection itself.
    t_reset = timeit(reset, device, reps)
    results = {}
    results["naive"] = timeit(lambda: (reset(), naive_project(grads, vectors)), device, reps)
    if p * cfg.k * esz <= 2e9 and cfg.k <= 64:
        results["torch qr"] = timeit(lambda: (reset(), qr_project(grads, vectors)), device, reps)
    results["uno Basis"] = timeit(lambda: (reset(), uno.project_(grads, basis)), device, reps)
    if cfg.k == 1:
        results["uno raw"] = timeit(
            lambda: (reset(), uno.project_(grads, vectors[0])), device, reps
        )
    # Bytes the fused algorithm must move: pass A reads g and the k rows, pass B reads both and
    # writes g (raw k = 1: the same, the Gram rides along in pass A).
    moved = p * esz * (3 + 2 * cfg.k)
    print(
        f"{cfg.model:<11} {p:>10,} {cfg.k:>3} {'copy':<12} {t_copy * 1e3:>9.3f} "
        f"{copy_gbs:>7.2f} {100.0:>6.1f}"
    )
    for name, t in results.items():
        t = max(t - t_reset, 1e-9)
        gbs = moved / t / 1e9
        t_naive = max(results["naive"] - t_reset, 1e-9)
        t_qr = max(results["torch qr"] - t_reset, 1e-9) if "torch qr" in results else float("nan")
        print(
            f"{cfg.model:<11} {p:>10,} {cfg.k:>3} {name:<12} {t * 1e3:>9.3f} {gbs:>7.2f} "
            f"{100 * gbs / copy_gbs:>6.1f} {t_naive / t:>8.2f} {t_qr / t:>7.2f}"
        )
        rows.append(
            dict(
                date=dt.datetime.now().isoformat(timespec="seconds"),
                machine=machine(),
                version=uno.__version__,
                device=str(device),
                threads=threads,
                model=cfg.model,
                P=p,
                k=cfg.k,
                dtype=str(cfg.dtype).replace("torch.", ""),
                method=name,
                ms=round(t * 1e3, 4),
                GBps=round(gbs, 3),
                copy_GBps=round(copy_gbs, 3),
                frac_copy=round(gbs / copy_gbs, 4),
                speedup_naive=round(t_naive / t, 3),
                speedup_qr=round(t_qr / t, 3) if math.isfinite(t_qr) else "",
            )
        )
    return rows


def run(configs: Sequence[Config], device: torch.device, reps: int, csv_path: str) -> None:
    gen = torch.Generator().manual_seed(0)
    threads = torch.get_num_threads()
    print(f"# uno {uno.__version__} on {machine()}, device {device}, {threads} threads")
    print(f"# backends: {uno.backends()}")
    hdr = (
        f"{'model':<11} {'P':>10} {'k':>3} {'method':<12} {'ms':>9} {'GB/s':>7} {'%copy':>6} "
        f"{'vs naive':>8} {'vs qr':>7}"
    )
    print(hdr)
    print("-" * len(hdr))
    rows: List[dict] = []
    for cfg in configs:
        rows += bench_config(cfg, device, reps, gen, threads)
    os.makedirs(os.path.dirname(csv_path), exist_ok=True)
    new = not os.path.exists(csv_path)
    with open(csv_path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        if new:
            w.writeheader()
        w.writerows(rows)
    print(f"# appended {len(rows)} rows to {csv_path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true", help="a small sweep")
    ap.add_argument("--big", action="store_true", help="add P = 1e8 (k <= 4)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--csv", default=RESULTS)
    args = ap.parse_args()
    device = torch.device(args.device)
    if args.quick:
        configs = [Config("convvae", 10**6, k) for k in (1, 4)]
    else:
        configs = []
        for p in (10**5, 10**6, 10**7):
            for k in (1, 4, 16, 64):
                if p * k <= 2 * 10**8:
                    configs.append(Config("convvae" if p < 10**7 else "transformer", p, k))
        if args.big or device.type == "cuda":
            configs += [Config("transformer", 10**8, k) for k in (1, 4)]
    run(configs, device, args.reps, args.csv)


if __name__ == "__main__":
    main()
