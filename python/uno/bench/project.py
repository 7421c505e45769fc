"""``uno.project_`` against the code users write today, on realistic parameter lists.

Baselines, measured in the same run on the same machine:
  (a) naive:  torch.cat of the gradient pieces (and of the basis vectors), Gram-Schmidt of the basis,
              separate dot products, axpy, copy back into every piece: what unlearning code does today;
  (b) qr:     torch.linalg.qr of the concatenated [P, k] basis, then two matmuls (Q (Qᵀ g)), plus the
              same cat / copy back;
  (c) copy:   a STREAM-like copy (dst.copy_(src)) of a P-element buffer: the memory-bandwidth limit.
uno rows: ``uno.project_`` with a prebuilt ``uno.Basis`` (the steady state: a basis reused over many
steps) and with raw vectors (k = 1, what ``surgery`` does every step).

Every timed call starts from the same (non-orthogonal) gradient, copied in before the call and not
timed: the way a training loop calls the op, right after the backward pass wrote a fresh gradient
(docs/kernels.md, "Measuring the way callers call"; this bench used to time reset + call and subtract
the reset's median). GB/s counts the bytes the fused algorithm must
move: pass A reads g and the k rows, pass B reads both and writes g, (3 + 2k) elements per parameter.

    uno bench project              # P from 1e5 to 1e7 (1e8 with --big or on CUDA), k in {1, 4, 16, 64}
    uno bench project --quick      # a small sweep (smoke test)
    uno bench project --device cuda
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Union

import torch

import uno
from uno.bench import harness as h
from uno.bench.shapes import numel, random_pieces, scaled_shapes


@dataclass(frozen=True)
class Config:
    model: str  # "convvae" (CelebA-shaped conv VAE) or "transformer" (a stack of blocks)
    numel: int  # target P; the shape list is scaled to it
    k: int
    dtype: torch.dtype = torch.float32


def naive_project(grads: Sequence[torch.Tensor], vectors: Sequence[Sequence[torch.Tensor]]) -> None:
    """Baseline (a): cat, Gram-Schmidt of the basis, dots, axpy, copy back."""
    g = torch.cat([p.reshape(-1) for p in grads])
    qs: List[torch.Tensor] = []
    for v in vectors:
        q = torch.cat([p.reshape(-1) for p in v])
        for u in qs:
            q = q - (q @ u) * u
        qs.append(q / q.norm())
    for q in qs:
        g = g - (g @ q) * q
    _copy_back(g, grads)


def qr_project(grads: Sequence[torch.Tensor], vectors: Sequence[Sequence[torch.Tensor]]) -> None:
    """Baseline (b): torch.linalg.qr of the concatenated [P, k] basis, then two matmuls."""
    g = torch.cat([p.reshape(-1) for p in grads])
    v = torch.stack([torch.cat([p.reshape(-1) for p in vec]) for vec in vectors], dim=1)
    q, _ = torch.linalg.qr(v)
    _copy_back(g - q @ (q.T @ g), grads)


def _copy_back(flat: torch.Tensor, pieces: Sequence[torch.Tensor]) -> None:
    o = 0
    for p in pieces:
        n = p.numel()
        p.copy_(flat[o : o + n].view_as(p))
        o += n


def measure(cfg: Config, ctx: h.Context) -> h.Rows:
    """Time every method on one configuration (the copy row first)."""
    dev, reps = ctx.device, ctx.reps
    gen = torch.Generator().manual_seed(cfg.k * 1000 + cfg.numel % 997)
    shapes = scaled_shapes(cfg.model, cfg.numel)
    p = numel(shapes)
    esz = h.elem_size(cfg.dtype)
    grads = random_pieces(shapes, cfg.dtype, dev, gen)
    vectors = [random_pieces(shapes, cfg.dtype, dev, gen) for _ in range(cfg.k)]
    basis = uno.orthonormalize(vectors)
    t_copy = h.copy_seconds(p, cfg.dtype, dev, reps)
    copy_gbs = h.gbps(2 * p * esz, t_copy)
    g0 = [x.clone() for x in grads]

    def reset() -> None:
        for a, b in zip(grads, g0):
            a.copy_(b)

    times = {"naive": h.timeit(lambda: naive_project(grads, vectors), dev, reps, setup=reset)}
    if p * cfg.k * esz <= 2e9 and cfg.k <= 64:
        times["torch qr"] = h.timeit(lambda: qr_project(grads, vectors), dev, reps, setup=reset)
    times["uno Basis"] = h.timeit(lambda: uno.project_(grads, basis), dev, reps, setup=reset)
    if cfg.k == 1:
        times["uno raw"] = h.timeit(lambda: uno.project_(grads, vectors[0]), dev, reps, setup=reset)
    base = dict(model=cfg.model, P=p, k=cfg.k, dtype=h.dtype_name(cfg.dtype))
    copy = dict(ms=t_copy * 1e3, GBps=copy_gbs, copy_GBps=copy_gbs, frac_copy=1.0)
    rows: h.Rows = [dict(base, method="copy", **copy)]
    moved = p * esz * (3 + 2 * cfg.k)
    for name, t in times.items():
        gbs = h.gbps(moved, t)
        rows.append(
            dict(
                base,
                method=name,
                ms=t * 1e3,
                GBps=gbs,
                copy_GBps=copy_gbs,
                frac_copy=gbs / copy_gbs,
                speedup_naive=h.ratio(times["naive"], t),
                speedup_qr=h.ratio(times.get("torch qr"), t),
            )
        )
    return rows


def configs(args: argparse.Namespace) -> List[Config]:
    if args.quick:
        return [Config("convvae", 10**6, k) for k in (1, 4)]
    out = [
        Config("convvae" if p < 10**7 else "transformer", p, k)
        for p in (10**5, 10**6, 10**7)
        for k in (1, 4, 16, 64)
        if p * k <= 2 * 10**8
    ]
    if args.big or torch.device(args.device).type == "cuda":
        out += [Config("transformer", 10**8, k) for k in (1, 4)]
    return out


COLUMNS = h.columns(
    "model:model:11; P:P:10:,d; k:k:3:d; method:method:12; ms:ms:9:.3f; GBps:GB/s:7:.2f; "
    "frac_copy:%copy:6:.1f:100; speedup_naive:vs naive:8:.2f; speedup_qr:vs qr:7:.2f"
)

BENCH = h.Bench(
    "project", __doc__ or "", COLUMNS, configs, measure, Config,
    options=[("--big", dict(action="store_true", help="add P = 1e8 (k <= 4)"))],
)  # fmt: skip


def main(argv: Optional[Sequence[str]] = None, default_csv: Union[str, Path, None] = None) -> int:
    """``uno bench project [options]`` (``default_csv``: the CSV when ``--csv`` is not given)."""
    return h.main(BENCH, argv, default_csv)
