"""Gram of per-sample gradients: uno.per_sample.gram vs vmap(grad)+matmul vs Opacus+matmul.

Run: PYTHONPATH=python:tests python bench/bench_per_sample.py  (BENCH_REPS=n: best of n interleaved
rounds, default 5; BENCH_THREADS=n: torch.set_num_threads(n), default torch's)
Prints time and peak extra memory (tracemalloc-free: torch CPU allocator via resource RSS deltas is
noisy, so memory is measured as the bytes of tensors each method holds at its peak, from
torch.profiler memory events) and appends rows to bench/results/per_sample.csv.
"""

# ruff: noqa: B023  (the closures run inside the loop iteration that defines them)
from __future__ import annotations

import copy
import csv
import datetime
import os
import platform
import sys
import time
from dataclasses import dataclass
from typing import Callable, Dict, Tuple

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
import uno
import uno.per_sample as ps
from test_per_sample import ConvVAE, MnistVAE, conv_loss, reference_grads, vae_loss


@dataclass(frozen=True)
class Config:
    model: str
    batch: int = 128
    reps: int = int(os.environ.get("BENCH_REPS", "5"))


CONFIGS = (Config("mnist_vae"), Config("conv_vae"))
if os.environ.get("BENCH_ONLY"):
    CONFIGS = tuple(c for c in CONFIGS if c.model == os.environ["BENCH_ONLY"])


def _setup(name: str, b: int):
    torch.manual_seed(0)
    if name == "mnist_vae":
        return MnistVAE().eval(), vae_loss, (torch.rand(b, 784), torch.randn(b, 2))
    return ConvVAE(), conv_loss, (torch.rand(b, 1, 28, 28), torch.randn(b, 32))


def _peak_bytes(fn: Callable[[], object]) -> int:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    cur = peak = 0
    for e in sorted(prof.events(), key=lambda e: e.time_range.start):
        cur += e.cpu_memory_usage
        peak = max(peak, cur)
    return peak


def _time_interleaved(methods: Dict[str, Callable[[], object]], reps: int) -> Dict[str, float]:
    """Best time of each method over ``reps`` rounds; a round runs every method once, so a slow
    patch of a shared machine hits all methods alike instead of one method's whole series."""
    for fn in methods.values():
        fn()
    best = {name: float("inf") for name in methods}
    for _ in range(reps):
        for name, fn in methods.items():
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)
    return best


def main() -> None:
    if os.environ.get("BENCH_THREADS"):
        torch.set_num_threads(int(os.environ["BENCH_THREADS"]))
    try:
        from opacus import GradSampleModule  # type: ignore
    except ImportError:
        GradSampleModule = None
        print("note: opacus is not importable; skipping the Opacus baseline")
    rows = []
    for cfg in CONFIGS:
        model, loss, batch = _setup(cfg.model, cfg.batch)
        methods: Dict[str, Callable[[], object]] = {}

        def vm():
            f = torch.cat([g.flatten(1) for g in reference_grads(model, loss, *batch)], 1)
            return f @ f.T

        methods["vmap+matmul"] = vm
        gsm = None
        if GradSampleModule is not None:
            try:
                gsm = GradSampleModule(copy.deepcopy(model), loss_reduction="sum")
            except NotImplementedError as e:
                print(f"note: Opacus refuses {cfg.model}: {str(e)[:120]}")
        if gsm is not None:

            def op():
                for p in gsm.parameters():
                    p.grad_sample = None
                    p.grad = None
                loss(gsm._module, *batch).sum().backward()
                f = torch.cat([p.grad_sample.flatten(1) for p in gsm.parameters()], 1)
                return f @ f.T

            methods["opacus+matmul"] = op
        methods["uno.per_sample.gram"] = lambda: ps.gram(model, loss, *batch)
        times = _time_interleaved(methods, cfg.reps)
        res: Dict[str, Tuple[float, int]] = {
            n: (times[n], _peak_bytes(fn)) for n, fn in methods.items()
        }
        if gsm is not None:
            gsm._close()
        t_u, m_u = res["uno.per_sample.gram"]
        print(f"\n{cfg.model}  B={cfg.batch}  threads={torch.get_num_threads()}")
        print(
            f"{'method':<22}{'time ms':>10}{'peak MiB':>10}{'uno speed-up':>14}{'uno mem ratio':>15}"
        )
        for name, (t, m) in res.items():
            print(
                f"{name:<22}{t * 1e3:>10.1f}{m / 2**20:>10.1f}{t / t_u:>13.1f}x{m / max(m_u, 1):>14.1f}x"
            )
            rows.append(
                [
                    platform.node(),
                    platform.processor() or platform.machine(),
                    datetime.datetime.now().isoformat(timespec="seconds"),
                    uno.__version__,
                    torch.__version__,
                    cfg.model,
                    cfg.batch,
                    name,
                    f"{t * 1e3:.3f}",
                    m,
                    f"{t / t_u:.2f}",
                    f"{m / max(m_u, 1):.2f}",
                    torch.get_num_threads(),
                ]
            )
    path = os.path.join(os.path.dirname(__file__), "results", "per_sample.csv")
    new = not os.path.exists(path)
    with open(path, "a", newline="") as fh:
        w = csv.writer(fh)
        if new:
            w.writerow(
                [
                    "machine",
                    "cpu",
                    "date",
                    "uno_version",
                    "torch",
                    "model",
                    "batch",
                    "method",
                    "time_ms",
                    "peak_bytes",
                    "time_vs_uno",
                    "mem_vs_uno",
                    "threads",
                ]
            )
        w.writerows(rows)


if __name__ == "__main__":
    if os.environ.get("BENCH_ONLY"):
        main()
    else:  # one process per model: a previous config's large allocations slow the next one down
        import subprocess

        for c in CONFIGS:
            subprocess.run(
                [sys.executable, __file__], env={**os.environ, "BENCH_ONLY": c.model}, check=True
            )
