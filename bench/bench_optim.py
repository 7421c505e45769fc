"""Benchmark the fused projected optimizer steps against what users write today.

One step = "project the gradient onto the orthogonal complement of a k-vector basis, then Adam".
Baselines, measured in the same run on the same machine:
  (a) naive:   torch.cat of the gradient pieces, dots and axpy against the [k, P] basis, copy back
               into every p.grad, then torch.optim.Adam(foreach=True);
  (b) project_+Adam(foreach): uno.project_ with a prebuilt uno.Basis, then torch.optim.Adam(foreach=True);
  (b') project_+Adam(fused):  the same with torch.optim.Adam(fused=True) (where torch supports it);
  (c) copy:    a STREAM-like copy (dst.copy_(src)) of P elements: the memory-bandwidth limit.
uno rows: ProjectedAdam (project="grad", the fused two-pass step), ProjectedAdam(project="update"),
ProjectedSGD(momentum=0.9) and, for reference, ProjectedAdam without a basis vs Adam(foreach).

Gradients are set once: uno's optimizers never write p.grad, and project_ on an already projected
gradient takes its early exit after pass A, so baseline (b) is measured at its cheapest (conservative
speed-ups); the naive baseline always does its full work.

Bytes per parameter (fp32, k basis vectors) that the fused algorithm must move, used for GB/s:
  ProjectedAdam grad mode 32 + 8k, update mode 52 + 8k, ProjectedSGD(momentum) 24 + 8k; the
  baselines are charged the same number (so GB/s is "useful" bandwidth and comparable across rows).

Prints a table (median ms per step, GB/s, % of copy bandwidth, speed-ups vs (a) and (b)) and appends
rows to bench/results/optim.csv with machine, date and version.

    PYTHONPATH=python python bench/bench_optim.py            # P in {1e6, 1e7}, k in {1, 4, 16}
    PYTHONPATH=python python bench/bench_optim.py --quick    # P = 1e7, k = 1 (the target config)
    PYTHONPATH=python python bench/bench_optim.py --big      # adds P = 1e8 (k = 1)
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
from typing import Callable, Dict, List, Optional, Sequence

import torch

import uno
from uno import optim as uoptim

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "optim.csv")


@dataclass(frozen=True)
class Config:
    numel: int  # target P; a transformer-like shape list is scaled to it
    k: int
    dtype: torch.dtype = torch.float32


def transformer_shapes(
    numel: int, d: int = 768, layers: int = 12, vocab: int = 32000
) -> List[tuple]:
    """A GPT-2-small-like parameter list (embeddings, 12 blocks, norms) scaled to ``numel`` elements."""
    base: List[tuple] = [(vocab, d)]
    for _ in range(layers):
        base += [(d,), (d,), (3 * d, d), (3 * d,), (d, d), (d,), (d,), (d,)]
        base += [(4 * d, d), (4 * d,), (d, 4 * d), (d,)]
    base += [(d,), (d,)]
    f = numel / sum(math.prod(s) for s in base)
    return [(max(1, round(s[0] * f)), *s[1:]) for s in base]


def timeit(
    fn: Callable[[], None],
    device: torch.device,
    reps: int,
    min_time: float = 0.3,
    setup: Optional[Callable[[], None]] = None,
) -> float:
    """Median seconds per call (device synchronised around each call), after one warm-up call.

    ``setup`` runs before every call, untimed: the benches pass the copy of fresh (non-orthogonal)
    gradients into ``p.grad``, so that every step projects a real gradient. Without it, every call
    after the first would see a gradient that the previous call already projected, and ``project_``
    would stop after its first pass (the coefficients are at rounding level), which flatters the
    ``project_ + torch optimizer`` baselines.
    """

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    if setup is not None:
        setup()
    fn()
    sync()
    times: List[float] = []
    t_start = time.perf_counter()
    while len(times) < reps or (time.perf_counter() - t_start < min_time and len(times) < 50):
        if setup is not None:
            setup()
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def machine() -> str:
    return (
        f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus, torch {torch.__version__}"
    )


def naive_project(grads: Sequence[torch.Tensor], q: torch.Tensor) -> None:
    """Baseline (a): cat, dots and axpy against the [k, P] basis, copy back into every piece."""
    g = torch.cat([p.reshape(-1) for p in grads])
    c = q @ g
    g -= q.T @ c
    o = 0
    for p in grads:
        n = p.numel()
        p.copy_(g[o : o + n].view_as(p))
        o += n


def _project_fn(device: torch.device) -> Callable[[List[torch.Tensor], object], None]:
    """uno.project_ on the default backend.

    While the Python adapter of the cpu backend (python/uno/_backends/cpu.py) is not there yet, the same
    two CPU kernels uno.project_ runs for a Basis (inner, then project) are called through uno._C
    directly; the bench says so in its header.
    """
    try:
        from uno import _backends

        _backends.module(_backends.resolve(None, device))
    except ImportError:
        if device.type != "cpu":
            raise
        from uno import _C

        print("# note: uno._backends.cpu missing; baseline (b) calls _C.inner_cpu/_C.project_cpu")

        def shim(grads: List[torch.Tensor], basis: object) -> None:
            rows = basis.rows()  # type: ignore[attr-defined]
            k = rows[0].shape[0]
            args = (
                [g.data_ptr() for g in grads],
                [r.data_ptr() for r in rows],
                [r.stride(0) for r in rows],
                [g.numel() for g in grads],
                k,
            )
            out = torch.empty(k + 1, dtype=torch.float64)
            nt = torch.get_num_threads()
            _C.inner_cpu(*args, False, 0, 0, out.data_ptr(), nt)
            y = out[:k].clone()
            _C.project_cpu(*args, y.data_ptr(), 0, 0, out.data_ptr(), nt)

        return shim

    def fn(grads: List[torch.Tensor], basis: object) -> None:
        uno.project_(grads, basis)

    return fn


def bench_config(cfg: Config, device: torch.device, reps: int, threads: int) -> List[dict]:
    gen = torch.Generator().manual_seed(0)
    shapes = transformer_shapes(cfg.numel)
    p_total = sum(math.prod(s) for s in shapes)
    esz = torch.finfo(cfg.dtype).bits // 8

    def mk() -> List[torch.Tensor]:
        return [torch.randn(s, generator=gen).to(device, cfg.dtype) for s in shapes]

    params = [torch.nn.Parameter(x) for x in mk()]
    grads0 = mk()
    basis = uno.orthonormalize([mk() for _ in range(cfg.k)], backend="reference")
    qflat = basis.buffer[: basis.k]

    src = torch.empty(p_total, dtype=cfg.dtype, device=device).normal_()
    dst = torch.empty_like(src)
    t_copy = timeit(lambda: dst.copy_(src), device, reps)
    copy_gbs = 2 * p_total * esz / t_copy / 1e9

    def set_grads() -> None:
        for p, g in zip(params, grads0):
            if p.grad is None:
                p.grad = g.clone()
            else:
                p.grad.copy_(g)

    set_grads()
    project = _project_fn(device)
    lr = 1e-4
    methods: Dict[str, Callable[[], None]] = {}
    adam_f = torch.optim.Adam(params, lr=lr, foreach=True)
    methods["(a) naive+Adam(foreach)"] = lambda: (
        naive_project([p.grad for p in params], qflat),
        adam_f.step(),
    )
    methods["(b) project_+Adam(foreach)"] = lambda: (
        project([p.grad for p in params], basis),
        adam_f.step(),
    )
    try:
        adam_fused = torch.optim.Adam(params, lr=lr, fused=True)
        set_grads()
        adam_fused.step()
        methods["(b') project_+Adam(fused)"] = lambda: (
            project([p.grad for p in params], basis),
            adam_fused.step(),
        )
    except (RuntimeError, ValueError) as e:  # pragma: no cover - torch without CPU fused Adam
        print(f"# Adam(fused=True) unavailable here: {e}")
    pa = uoptim.ProjectedAdam(params, lr=lr, basis=basis)
    methods["uno ProjectedAdam"] = pa.step
    pau = uoptim.ProjectedAdam(params, lr=lr, basis=basis, project="update")
    methods["uno ProjectedAdam(update)"] = pau.step
    sgd_t = torch.optim.SGD(params, lr=lr, momentum=0.9, foreach=True)
    methods["project_+SGD(mom, foreach)"] = lambda: (
        project([p.grad for p in params], basis),
        sgd_t.step(),
    )
    ps = uoptim.ProjectedSGD(params, lr=lr, momentum=0.9, basis=basis)
    methods["uno ProjectedSGD(mom)"] = ps.step
    pa0 = uoptim.ProjectedAdam(params, lr=lr)
    methods["Adam(foreach), no basis"] = adam_f.step
    methods["uno ProjectedAdam, no basis"] = pa0.step

    k = cfg.k
    bytes_pp = {
        "Adam": (32 + 8 * k) * esz / 4,
        "update": (52 + 8 * k) * esz / 4,
        "SGD": (24 + 8 * k) * esz / 4,
        "nobasis": 28 * esz / 4,
    }
    times = {name: timeit(fn, device, reps, setup=set_grads) for name, fn in methods.items()}
    t_a = times["(a) naive+Adam(foreach)"]
    t_b = times["(b) project_+Adam(foreach)"]
    rows: List[dict] = []
    print(f"{p_total:>11,} {k:>3} {'copy':<30} {t_copy * 1e3:>9.2f} {copy_gbs:>7.2f} {100.0:>6.1f}")
    for name, t in times.items():
        kind = (
            "nobasis"
            if "no basis" in name
            else "update"
            if "update" in name
            else "SGD"
            if "SGD" in name
            else "Adam"
        )
        bpp = bytes_pp[kind]
        gbs = bpp * p_total / t / 1e9
        ref_a = t_a if kind == "Adam" else float("nan")
        ref_b = (
            t_b
            if kind == "Adam"
            else times["project_+SGD(mom, foreach)"]
            if kind == "SGD"
            else times["Adam(foreach), no basis"]
            if kind == "nobasis"
            else t_b
        )
        print(
            f"{p_total:>11,} {k:>3} {name:<30} {t * 1e3:>9.2f} {gbs:>7.2f} "
            f"{100 * gbs / copy_gbs:>6.1f} {ref_a / t:>7.2f} {ref_b / t:>7.2f} {bpp:>5.0f}"
        )
        rows.append(
            dict(
                date=dt.datetime.now().isoformat(timespec="seconds"),
                machine=machine(),
                version=uno.__version__,
                device=str(device),
                threads=threads,
                P=p_total,
                k=k,
                dtype=str(cfg.dtype).replace("torch.", ""),
                method=name,
                ms=round(t * 1e3, 3),
                bytes_per_param=bpp,
                GBps=round(gbs, 3),
                copy_GBps=round(copy_gbs, 3),
                frac_copy=round(gbs / copy_gbs, 4),
                speedup_vs_a=round(ref_a / t, 3) if math.isfinite(ref_a) else "",
                speedup_vs_b=round(ref_b / t, 3),
            )
        )
    return rows


def run(configs: Sequence[Config], device: torch.device, reps: int, csv_path: str) -> None:
    threads = torch.get_num_threads()
    print(f"# uno {uno.__version__} on {machine()}, device {device}, {threads} threads")
    print(f"# backends: {uno.backends()}")
    print(
        "# vs(a): against naive cat+dots+axpy+copy back, then Adam(foreach) (Adam rows only); "
        "vs(b): against project_ then the same torch optimizer (foreach); B/p: bytes per parameter"
    )
    hdr = (
        f"{'P':>11} {'k':>3} {'method':<30} {'ms':>9} {'GB/s':>7} {'%copy':>6} {'vs(a)':>7} "
        f"{'vs(b)':>7} {'B/p':>5}"
    )
    print(hdr)
    print("-" * len(hdr))
    rows: List[dict] = []
    for cfg in configs:
        rows += bench_config(cfg, device, reps, threads)
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
    ap.add_argument("--quick", action="store_true", help="only P = 1e7, k = 1 (the target config)")
    ap.add_argument("--big", action="store_true", help="add P = 1e8 (k = 1)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--csv", default=RESULTS)
    args = ap.parse_args()
    device = torch.device(args.device)
    if args.quick:
        configs = [Config(10**7, 1)]
    else:
        configs = [Config(p, k) for p in (10**6, 10**7) for k in (1, 4, 16)]
        if args.big or device.type == "cuda":
            configs += [Config(10**8, 1)]
    run(configs, device, args.reps, args.csv)


if __name__ == "__main__":
    main()
