"""Step cost of ``surgery``, the fast ``uno`` step and the paper-faithful ``uno`` step, in the same run.

What is measured (per method, on the paper's MNIST VAE, or with ``--model gan`` on the drivers' WGAN-GP
generator with the GAN task of docs/unlearning.md; batch 128 per side):

* **Per-step time**: one update = ``task.begin_step`` (draw the batches) + ``method.direction`` + the method's
  optimizer step (``uno.optim.ProjectedAdam`` with the step's basis for a projection method),
  the same region the drivers' run loop times. The methods are timed round-robin in ONE process
  (``--rounds`` rounds of ``--steps`` steps each, after warm-up), so machine noise hits all of them alike;
  the median step time is reported, and the ratios are taken between medians.
* **Peak extra memory**:
  - CUDA: ``torch.cuda.max_memory_allocated`` during the step minus ``memory_allocated`` at its start
    (exact tensor bytes).
  - CPU: each method runs in a FRESH subprocess with glibc's ``MALLOC_MMAP_THRESHOLD_=65536`` (fixed, so the
    dynamic threshold never grows): every tensor buffer above 64 KiB is its own ``mmap`` and is returned to
    the OS when freed, so the process's resident set follows the live tensor memory. Before each step the
    peak resident set is reset (``/proc/self/clear_refs`` ← 5) and the resident set read (``VmRSS``); after
    the step the peak (``VmHWM``) is read. Extra = VmHWM − VmRSS at entry: the step's peak working set beyond
    what was live before it (model, Adam state, data). Buffers under 64 KiB (scalars, biases) come from
    the heap and may be reused without showing up; on this model they are a few hundred KiB at most.
    ``tracemalloc`` is not used: it does not see torch's allocations.
* The fast and the paper-faithful directions are also compared numerically (relative difference).

Targets (issue 6): ``uno`` per-step ≤ 2.5× ``surgery``; fast ``uno`` ≥ 1.5× faster and ≥ 1.5× less peak extra
memory than the paper-faithful step.

Usage::

    PYTHONPATH=python python experiments/step_cost.py [--device cpu|cuda] [--steps 20 --rounds 5]
    # per-step time of any methods in one round-robin run (e.g. to turn step counts into times):
    PYTHONPATH=python python experiments/step_cost.py --methods surgery uno-hat retain-hat surgery-hat
    # the same on the GAN generator (the cached default generator; trained first if absent, ~15 min on CPU):
    PYTHONPATH=python python experiments/step_cost.py --model gan

Appends rows to ``experiments/results/step_cost.csv`` (``step_cost_gan.csv`` with ``--model gan``; machine, date,
torch version) and prints a table.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import paper_uno_step

from uno.bench.harness import append_csv
from uno.unlearn import methods
from uno.unlearn.data import load_mnist
from uno.unlearn.models import MLPJudge, MnistVAE
from uno.unlearn.tasks import GANTask, Task, VAETask

METHODS = ("surgery", "uno", "uno-paper")
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Config:
    device: str = "cpu"
    batch: int = 128
    lam: float = 1e3
    hat: bool = False
    dtype: str = "float32"
    model: str = "vae"  # or "gan"


def _models(cfg: Config) -> tuple[torch.nn.Module, torch.nn.Module, Optional[torch.nn.Module]]:
    """``(generator, judge, critic)``.

    VAE: the cached pretrained VAE and judge if present (``UNO_CACHE_DIR``), else fresh ones (the cost is
    the same; critic None). GAN: the drivers' default generator and critic and the judge, from the cache
    or trained (a fresh generator would give an arbitrary forget side).
    """
    from uno.unlearn.train import cache_dir, get_or_train

    if cfg.model == "gan":
        (gen, critic), _ = get_or_train("gan", quiet=True)
        return gen, get_or_train("judge", quiet=True)[0], critic
    try:
        if any(cache_dir().glob("vae-*.safetensors")):
            return get_or_train("vae", quiet=True)[0], get_or_train("judge", quiet=True)[0], None
    except Exception:
        pass
    torch.manual_seed(0)
    return MnistVAE(), MLPJudge(), None


def make(cfg: Config, name: str) -> tuple[Task, Any, torch.optim.Optimizer]:
    gen, judge, critic = _models(cfg)
    dev, dt = torch.device(cfg.device), getattr(torch, cfg.dtype)
    model = copy.deepcopy(gen).to(dev, dt).requires_grad_(True)
    judge = copy.deepcopy(judge).to(dev, dt)
    hat = cfg.hat or name.endswith("-hat")
    common: dict[str, Any] = dict(batch=cfg.batch, w_u=1e3 if hat else 0.0, seed=0)
    task: Task
    if cfg.model == "gan":
        original = copy.deepcopy(gen).to(dev, dt).eval().requires_grad_(False)
        crit = copy.deepcopy(critic).to(dev, dt) if critic is not None else None
        task = GANTask(model, judge, [1], original=original, critic=crit, **common)
    else:
        train, _ = load_mnist()
        train.x = train.x.to(dev, dt)
        train.y = train.y.to(dev)
        task = VAETask(model, judge, train, [1], **common)
    kw = paper_uno_step.method_kwargs(name, cfg.lam)
    method = methods.create(name + ("-hat" if cfg.hat else ""), **kw)
    task.begin_step(0)
    method.setup(task)
    task.end_step()
    return task, method, method.optimizer(task.params, 1e-3)


def step(task: Task, method: Any, opt: torch.optim.Optimizer, i: int) -> None:
    """The run loop's step: batches, direction, the method's optimizer (ProjectedAdam with the
    step's basis for a projection method; a wrapper without ``project`` steps ``opt`` directly)."""
    task.begin_step(i)
    d, _ = method.direction(task, i)
    for p, g in zip(task.params, d):
        p.grad = g
    if getattr(method, "project", None) is None:
        opt.step()
    else:
        method.step(opt)
    task.end_step()
    for p in task.params:
        p.grad = None


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def time_round_robin(
    cfg: Config, names: Sequence[str], steps: int, rounds: int, warmup: int = 3
) -> dict[str, list[float]]:
    """Per-step times (s) of each method, interleaved by rounds in this process."""
    setups = {n: make(cfg, n) for n in names}
    dev = torch.device(cfg.device)
    times: dict[str, list[float]] = {n: [] for n in names}
    for t, m, o in setups.values():
        for i in range(warmup):
            step(t, m, o, 1 + i)
    for r in range(rounds):
        for n, (t, m, o) in setups.items():
            for i in range(steps):
                _sync(dev)
                t0 = time.perf_counter()
                step(t, m, o, 100 + r * steps + i)
                _sync(dev)
                times[n].append(time.perf_counter() - t0)
    return times


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def peak_extra(cfg: Config, name: str, steps: int = 5, warmup: int = 3) -> list[float]:
    """Peak extra bytes of each of ``steps`` steps (after warm-up), measured as the module docstring says."""
    task, method, opt = make(cfg, name)
    dev = torch.device(cfg.device)
    for i in range(warmup):
        step(task, method, opt, 1 + i)
    out = []
    for i in range(steps):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
            torch.cuda.reset_peak_memory_stats(dev)
            start = torch.cuda.memory_allocated(dev)
            step(task, method, opt, 100 + i)
            torch.cuda.synchronize(dev)
            out.append(float(torch.cuda.max_memory_allocated(dev) - start))
        else:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            start = _status("VmRSS")
            step(task, method, opt, 100 + i)
            out.append(float(_status("VmHWM") - start))
    return out


def peak_extra_subprocess(cfg: Config, name: str) -> list[float]:
    """Run :func:`peak_extra` in a fresh interpreter (CPU: with the fixed mmap threshold)."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    here = str(Path(__file__).resolve().parent)
    code = (
        f"import json,sys,torch; torch.set_num_threads({torch.get_num_threads()}); "
        f"sys.path.insert(0, {here!r}); import step_cost as b; "
        f"print(json.dumps(b.peak_extra(b.Config(**{cfg.__dict__!r}), {name!r})))"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(r.stdout.strip().splitlines()[-1])


def direction_difference(cfg: Config) -> float:
    """‖d_fast − d_paper‖ / ‖d_paper‖ on one batch (same task state)."""
    from uno.unlearn.methods.uno import uno_direction

    task, _, _ = make(cfg, "uno")
    task.begin_step(1)
    a, _ = uno_direction(task, cfg.lam)
    task.begin_step(1)
    b, _ = paper_uno_step.paper_uno_direction(task, cfg.lam)
    num = sum(float(((x - y) ** 2).sum()) for x, y in zip(a, b)) ** 0.5
    return num / sum(float((y**2).sum()) for y in b) ** 0.5


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="step cost: surgery vs fast uno vs paper-faithful uno")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per method per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--hat", action="store_true", help="the -hat variants (histogram loss)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--model", default="vae", choices=["vae", "gan"], help="generator kind")
    ap.add_argument(
        "--csv",
        default=None,
        help="default: experiments/results/step_cost.csv (step_cost_gan.csv for gan)",
    )
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument(
        "--methods",
        nargs="+",
        default=list(METHODS),
        help="methods to time (any registered name; a '-hat' name runs with the histogram loss); the "
        "target ratios are printed when surgery, uno and uno-paper are all in the list",
    )
    a = ap.parse_args(argv)
    names = tuple(a.methods)
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = Config(device=a.device, hat=a.hat, model=a.model)
    times = time_round_robin(cfg, names, a.steps, a.rounds)
    med = {n: statistics.median(v) for n, v in times.items()}
    mem: dict[str, float] = {}
    if not a.no_memory:
        for n in names:
            v = peak_extra_subprocess(cfg, n) if cfg.device == "cpu" else peak_extra(cfg, n)
            mem[n] = statistics.median(v)
    nan = float("nan")
    targets = all(n in med for n in METHODS)
    diff = direction_difference(cfg) if targets else nan
    ratio_us = med["uno"] / med["surgery"] if targets else nan
    speed = med["uno-paper"] / med["uno"] if targets else nan
    mem_ratio = mem["uno-paper"] / mem["uno"] if targets and mem and mem["uno"] > 0 else nan
    print(f"model {a.model}, device {a.device}, threads {torch.get_num_threads()}, hat={a.hat}")
    print("| method | per-step time (ms, median) | peak extra memory (MB, median) |")
    print("|---|---|---|")
    for n in names:
        print(f"| {n} | {med[n] * 1e3:.2f} | {mem.get(n, nan) / 1e6:.2f} |")
    if targets:
        print(f"\nuno / surgery time:          {ratio_us:.2f}x  (target <= 2.5x)")
        print(f"paper / fast uno time:       {speed:.2f}x  (target >= 1.5x)")
        print(f"paper / fast uno peak mem:   {mem_ratio:.2f}x  (target >= 1.5x)")
        print(f"fast vs paper direction rel. difference: {diff:.2e}")
    path = Path(a.csv or RESULTS / ("step_cost_gan.csv" if a.model == "gan" else "step_cost.csv"))
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    common = dict(date=now, host=platform.node(), device=a.device, threads=torch.get_num_threads())
    common.update(torch=torch.__version__, hat=a.hat)
    ratios = dict(
        uno_over_surgery=f"{ratio_us:.3f}",
        paper_over_fast_time=f"{speed:.3f}",
        paper_over_fast_mem=f"{mem_ratio:.3f}",
        dir_rel_diff=f"{diff:.2e}",
    )
    append_csv(
        path,
        [
            dict(
                common,
                method=n,
                ms_median=f"{med[n] * 1e3:.3f}",
                peak_extra_mb=f"{mem.get(n, nan) / 1e6:.3f}",
                **ratios,
            )
            for n in names
        ],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
