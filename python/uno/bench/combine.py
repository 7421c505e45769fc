"""The ``combine`` primitive and ``uno.orthonormalize`` against what torch users write.

``combine`` (docs/kernels.md) writes ``out = M @ rows`` for an (r, k) float64 matrix M and k rows of P
elements, in float64 arithmetic rounded once; ``uno.orthonormalize`` calls it twice (CholeskyQR2).

Baselines, measured in the same run:
  * combine vs ``(M @ rows.double()).to(dtype)``: the same float64 arithmetic with torch (a float64 copy
    of the rows, a float64 GEMM, a rounding copy), and vs a plain ``copy_`` of the r output rows (the
    memory-bandwidth floor);
  * orthonormalize (k separate vectors of the MNIST VAE's 14 parameter shapes) vs ``torch.linalg.qr`` of
    the ``torch.cat``-flattened ``[P, k]`` matrix (what unlearning code does today).
The rel. err column is combine's largest error against torch's float64 product, relative to its
largest entry (0 where both round the same float64 value).

    uno bench combine [--threads 1] [--quick] [--device cuda]
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Union

import torch

import uno
from uno import _backends
from uno.bench import harness as h
from uno.bench.shapes import MNIST_VAE_SHAPES, numel


@dataclass(frozen=True)
class Config:
    op: str  # "combine" or "orthonormalize"
    k: int
    r: int
    numel: int
    dtype: torch.dtype = torch.float32


def _backend(device: torch.device) -> str:
    return "cpu" if device.type == "cpu" else "cuda"


def _combine(cfg: Config, ctx: h.Context) -> h.Rows:
    dev = ctx.device
    be = _backends.module(_backend(dev))
    g = torch.Generator().manual_seed(cfg.k * 100 + cfg.r)
    rows = torch.randn(cfg.k, cfg.numel, generator=g).to(dev, cfg.dtype)
    m = torch.randn(cfg.r, cfg.k, generator=g, dtype=torch.float64).to(dev)
    out = torch.empty(cfg.r, cfg.numel, dtype=cfg.dtype, device=dev)
    t_uno = h.timeit(lambda: be.combine([out], [rows], m), dev, ctx.reps, min_time=0)
    t_torch = h.timeit(lambda: out.copy_(m @ rows.double()), dev, ctx.reps, min_time=0)
    t_copy = h.timeit(lambda: out.copy_(rows[: cfg.r]), dev, ctx.reps, min_time=0)
    want = (m @ rows.double()).to(cfg.dtype).double()
    be.combine([out], [rows], m)
    err = float((out.double() - want).abs().max() / want.abs().max())
    return [dict(uno_ms=t_uno * 1e3, torch_ms=t_torch * 1e3, copy_ms=t_copy * 1e3, rel_err=err)]


def _orthonormalize(cfg: Config, ctx: h.Context) -> h.Rows:
    dev = ctx.device
    g = torch.Generator().manual_seed(cfg.k)
    vecs = [
        [torch.randn(s, generator=g).to(dev, cfg.dtype) for s in MNIST_VAE_SHAPES]
        for _ in range(cfg.k)
    ]
    backend = _backend(dev)
    t_uno = h.timeit(lambda: uno.orthonormalize(vecs, backend=backend), dev, ctx.reps, min_time=0)

    def qr() -> torch.Tensor:
        a = torch.stack([torch.cat([p.reshape(-1) for p in v]) for v in vecs], 1)
        return torch.linalg.qr(a).Q

    t_qr = h.timeit(qr, dev, ctx.reps, min_time=0)
    return [dict(uno_ms=t_uno * 1e3, torch_ms=t_qr * 1e3)]


def measure(cfg: Config, ctx: h.Context) -> h.Rows:
    fn = _combine if cfg.op == "combine" else _orthonormalize
    base = dict(P=cfg.numel, op=cfg.op, k=cfg.k, r=cfg.r, dtype=h.dtype_name(cfg.dtype))
    rows = [dict(base, **row) for row in fn(cfg, ctx)]
    for row in rows:
        row["speedup_torch"] = h.ratio(row["torch_ms"], row["uno_ms"])
    return rows


def configs(args: argparse.Namespace) -> List[Config]:
    p = 20_000 if args.quick else numel(MNIST_VAE_SHAPES)
    krs = [(2, 2), (8, 8)] if args.quick else [(1, 1), (2, 2), (4, 4), (8, 8), (16, 16), (64, 64)]
    out = [
        Config("combine", k, r, p, dtype)
        for dtype in (torch.float32, torch.float64)
        for k, r in krs
    ]
    ks = [2, 8] if args.quick else [1, 2, 8, 32]
    return out + [Config("orthonormalize", k, k, numel(MNIST_VAE_SHAPES)) for k in ks]


COLUMNS = h.columns(
    "op:op:14; P:P:8:d; k:k:3:d; r:r:3:d; dtype:dtype:8; uno_ms:uno ms:9:.3f; "
    "torch_ms:torch ms:9:.3f; copy_ms:copy ms:9:.3f; speedup_torch:vs torch:8:.2f; "
    "rel_err:rel. err:8:.1e"
)
NOTE = "torch: (M @ rows.double()) for combine, torch.cat + torch.linalg.qr for orthonormalize"

BENCH = h.Bench(
    "combine", __doc__ or "", COLUMNS, configs, measure, Config, notes=[NOTE], reps=15, threads=1
)


def main(argv: Optional[Sequence[str]] = None, default_csv: Union[str, Path, None] = None) -> int:
    """``uno bench combine [options]`` (``default_csv``: the CSV when ``--csv`` is not given)."""
    return h.main(BENCH, argv, default_csv)
