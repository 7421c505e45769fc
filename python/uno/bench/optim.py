"""The fused projected optimizer steps against what users write today.

One step = "project the gradient onto the orthogonal complement of a k-vector basis, then Adam".
Baselines, measured in the same run on the same machine:
  (a) naive:   torch.cat of the gradient pieces, dots and axpy against the [k, P] basis, copy back
               into every p.grad, then torch.optim.Adam(foreach=True);
  (b) project_+Adam(foreach): uno.project_ with a prebuilt uno.Basis, then torch.optim.Adam(foreach=True);
  (b') project_+Adam(fused):  the same with torch.optim.Adam(fused=True) (where torch supports it);
  (c) copy:    a STREAM-like copy (dst.copy_(src)) of P elements: the memory-bandwidth limit.
uno rows: ProjectedAdam (project="grad", the fused two-pass step), ProjectedAdam(project="update"),
ProjectedSGD(momentum=0.9) and, for reference, ProjectedAdam without a basis vs Adam(foreach).

Before every timed step the same fresh (non-orthogonal) gradients are copied into p.grad, untimed:
otherwise project_ would see an already projected gradient after the first call and stop after its
first pass, which flatters the project_ + torch optimizer baselines.

Bytes per parameter (fp32, k basis vectors) that the fused algorithm must move, used for GB/s:
  ProjectedAdam grad mode 32 + 8k, update mode 52 + 8k, ProjectedSGD(momentum) 24 + 8k, no basis 28;
  the baselines are charged the same number (so GB/s is "useful" bandwidth, comparable across rows).

    uno bench optim            # P in {1e6, 1e7}, k in {1, 4, 16} (adds P = 1e8 on CUDA)
    uno bench optim --quick    # P = 1e7, k = 1 (the target config)
    uno bench optim --big      # adds P = 1e8 (k = 1)
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

import torch

import uno
from uno import optim as uoptim
from uno.bench import harness as h
from uno.bench.shapes import numel, random_pieces, scaled_shapes


@dataclass(frozen=True)
class Config:
    numel: int  # target P; a transformer-like shape list is scaled to it
    k: int
    dtype: torch.dtype = torch.float32


def naive_project(grads: Sequence[torch.Tensor], q: torch.Tensor) -> None:
    """Baseline (a): cat, dots and axpy against the [k, P] basis, copy back into every piece."""
    g = torch.cat([p.reshape(-1) for p in grads])
    g -= q.T @ (q @ g)
    o = 0
    for p in grads:
        n = p.numel()
        p.copy_(g[o : o + n].view_as(p))
        o += n


def _kind(name: str) -> str:
    """Which byte count and which baseline (b) a method row is compared with."""
    for kind in ("no basis", "update", "SGD"):
        if kind in name:
            return kind
    return "Adam"


def _methods(params: List[torch.nn.Parameter], basis: uno.Basis) -> Dict[str, Callable[[], object]]:
    lr = 1e-4
    qflat = basis.buffer[: basis.k]

    def grads() -> List[torch.Tensor]:
        return [p.grad for p in params if p.grad is not None]

    def project() -> None:
        uno.project_(grads(), basis)

    adam_f = torch.optim.Adam(params, lr=lr, foreach=True)
    out: Dict[str, Callable[[], object]] = {
        "(a) naive+Adam(foreach)": h.chain(lambda: naive_project(grads(), qflat), adam_f.step),
        "(b) project_+Adam(foreach)": h.chain(project, adam_f.step),
    }
    try:
        adam_fused = torch.optim.Adam(params, lr=lr, fused=True)
        adam_fused.step()  # torch raises here when it has no fused Adam for this device
        out["(b') project_+Adam(fused)"] = h.chain(project, adam_fused.step)
    except (RuntimeError, ValueError) as e:  # pragma: no cover - torch without fused Adam here
        print(f"# Adam(fused=True) unavailable here: {e}")
    out["uno ProjectedAdam"] = uoptim.ProjectedAdam(params, lr=lr, basis=basis).step
    out["uno ProjectedAdam(update)"] = uoptim.ProjectedAdam(
        params, lr=lr, basis=basis, project="update"
    ).step
    sgd_t = torch.optim.SGD(params, lr=lr, momentum=0.9, foreach=True)
    out["project_+SGD(mom, foreach)"] = h.chain(project, sgd_t.step)
    out["uno ProjectedSGD(mom)"] = uoptim.ProjectedSGD(
        params, lr=lr, momentum=0.9, basis=basis
    ).step
    out["Adam(foreach), no basis"] = adam_f.step
    out["uno ProjectedAdam, no basis"] = uoptim.ProjectedAdam(params, lr=lr).step
    return out


def measure(cfg: Config, ctx: h.Context) -> h.Rows:
    """Time every method on one configuration (the copy row first)."""
    dev, reps = ctx.device, ctx.reps
    gen = torch.Generator().manual_seed(0)
    shapes = scaled_shapes("transformer", cfg.numel)
    p_total = numel(shapes)
    esz = h.elem_size(cfg.dtype)
    params = [torch.nn.Parameter(x) for x in random_pieces(shapes, cfg.dtype, dev, gen)]
    grads0 = random_pieces(shapes, cfg.dtype, dev, gen)
    vectors = [random_pieces(shapes, cfg.dtype, dev, gen) for _ in range(cfg.k)]
    basis = uno.orthonormalize(vectors, backend="reference")
    t_copy = h.copy_seconds(p_total, cfg.dtype, dev, reps)
    copy_gbs = h.gbps(2 * p_total * esz, t_copy)

    def set_grads() -> None:
        for p, g in zip(params, grads0):
            if p.grad is None:
                p.grad = g.clone()
            else:
                p.grad.copy_(g)

    set_grads()
    methods = _methods(params, basis)
    times = {
        name: h.timeit(fn, dev, reps, min_time=0.3, max_calls=50, setup=set_grads)
        for name, fn in methods.items()
    }
    k = cfg.k
    bytes_pp = {
        "Adam": (32 + 8 * k) * esz / 4,
        "update": (52 + 8 * k) * esz / 4,
        "SGD": (24 + 8 * k) * esz / 4,
        "no basis": 28 * esz / 4,
    }
    baseline_b = {
        "Adam": "(b) project_+Adam(foreach)",
        "update": "(b) project_+Adam(foreach)",
        "SGD": "project_+SGD(mom, foreach)",
        "no basis": "Adam(foreach), no basis",
    }
    base = dict(P=p_total, k=k, dtype=h.dtype_name(cfg.dtype))
    copy = dict(ms=t_copy * 1e3, GBps=copy_gbs, copy_GBps=copy_gbs, frac_copy=1.0)
    rows: h.Rows = [dict(base, method="copy", **copy)]
    for name, t in times.items():
        kind = _kind(name)
        gbs = h.gbps(bytes_pp[kind] * p_total, t)
        rows.append(
            dict(
                base,
                method=name,
                ms=t * 1e3,
                bytes_per_param=bytes_pp[kind],
                GBps=gbs,
                copy_GBps=copy_gbs,
                frac_copy=gbs / copy_gbs,
                speedup_vs_a=h.ratio(times["(a) naive+Adam(foreach)"], t)
                if kind == "Adam"
                else float("nan"),
                speedup_vs_b=h.ratio(times[baseline_b[kind]], t),
            )
        )
    return rows


def configs(args: argparse.Namespace) -> List[Config]:
    if args.quick:
        return [Config(10**7, 1)]
    out = [Config(p, k) for p in (10**6, 10**7) for k in (1, 4, 16)]
    if args.big or torch.device(args.device).type == "cuda":
        out += [Config(10**8, 1)]
    return out


COLUMNS = h.columns(
    "P:P:11:,d; k:k:3:d; method:method:30; ms:ms:9:.2f; GBps:GB/s:7:.2f; frac_copy:%copy:6:.1f:100; "
    "speedup_vs_a:vs(a):7:.2f; speedup_vs_b:vs(b):7:.2f; bytes_per_param:B/p:5:.0f"
)
NOTE = (
    "vs(a): against naive cat+dots+axpy+copy back, then Adam(foreach) (Adam rows only); "
    "vs(b): against project_ then the same torch optimizer (foreach); B/p: bytes per parameter"
)

BENCH = h.Bench(
    "optim", __doc__ or "", COLUMNS, configs, measure, Config, notes=[NOTE],
    options=[("--big", dict(action="store_true", help="add P = 1e8 (k = 1)"))],
)  # fmt: skip


def main(argv: Optional[Sequence[str]] = None, default_csv: Union[str, Path, None] = None) -> int:
    """``uno bench optim [options]`` (``default_csv``: the CSV when ``--csv`` is not given)."""
    return h.main(BENCH, argv, default_csv)
