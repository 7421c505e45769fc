"""Gram of per-sample gradients: ``uno.per_sample.gram`` vs ``vmap(grad)`` + matmul vs Opacus + matmul.

Models: the drivers' MNIST VAE (``uno.unlearn.models.MnistVAE``, the paper's 632,788 parameters) and
their MNIST conv VAE (``ConvVAE``), both in eval mode, with the per-sample negative ELBO (BCE + KL,
reparametrised with a given ε so that every method sees the same function). Opacus runs where it is
installed and accepts the model.

Time: the best of ``--reps`` interleaved rounds (a round runs every method once, so a slow patch of a
shared machine hits all methods alike). Memory: the peak bytes of the tensors each method holds, from
torch.profiler's memory events (process RSS deltas are too noisy). Each model runs in a fresh
interpreter: a previous model's large allocations slow the next one down.

    uno bench per-sample [--quick] [--threads 2] [--reps 5]
"""

from __future__ import annotations

import argparse
import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import uno.per_sample as ps
from uno.bench import harness as h

MODELS = ("mnist_vae", "conv_vae")


@dataclass(frozen=True)
class Config:
    model: str  # "mnist_vae" or "conv_vae"
    batch: int = 128


def elbo_per_sample(model: Any, x: Tensor, eps: Tensor) -> Tensor:
    """(B,) negative ELBO of each sample (BCE + KL), with the reparametrisation noise ``eps`` given."""
    mu, logvar = model.encode(x)
    rec = model.decode(mu + eps * (0.5 * logvar).exp())
    bce = F.binary_cross_entropy(rec, x, reduction="none").flatten(1).sum(1)
    return bce - 0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(1)


def _setup(name: str, b: int) -> Tuple[nn.Module, Tuple[Tensor, Tensor]]:
    from uno.unlearn.models import ConvVAE, MnistVAE

    torch.manual_seed(0)
    model: Union[MnistVAE, ConvVAE] = MnistVAE() if name == "mnist_vae" else ConvVAE()
    model.eval()  # BatchNorm with running statistics: the per-sample losses do not mix samples
    return model, (torch.rand(b, 1, 28, 28), torch.randn(b, model.latent_dim))


def vmap_grads(model: nn.Module, *batch: Tensor) -> List[Tensor]:
    """Per-sample gradients of :func:`elbo_per_sample` with ``torch.func``: ``vmap(grad)``."""
    from torch.func import functional_call, grad, vmap

    loss = _ElboOf(model)
    params = {n: p.detach() for n, p in loss.named_parameters()}

    def one_sample(pp: Dict[str, Tensor], *sample: Tensor) -> Tensor:
        return functional_call(loss, pp, tuple(t.unsqueeze(0) for t in sample))[0]

    per_sample = vmap(grad(one_sample), in_dims=(None, *([0] * len(batch))))(params, *batch)
    return list(per_sample.values())


class _ElboOf(nn.Module):
    """The bench's loss as a module around the model: what ``torch.func.functional_call`` calls."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, eps: Tensor) -> Tensor:
        return elbo_per_sample(self.model, x, eps)


def peak_bytes(fn: Callable[[], object]) -> int:
    """Peak bytes of the tensors alive during ``fn`` (torch.profiler memory events)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    cur = peak = 0
    for e in sorted(prof.events(), key=lambda e: e.time_range.start):
        cur += e.cpu_memory_usage
        peak = max(peak, cur)
    return peak


def _methods(model: nn.Module, batch: Tuple[Tensor, ...]) -> Dict[str, Callable[[], object]]:
    def vm() -> Tensor:
        f = torch.cat([g.flatten(1) for g in vmap_grads(model, *batch)], 1)
        return f @ f.T

    out: Dict[str, Callable[[], object]] = {"vmap+matmul": vm}
    try:
        from opacus import GradSampleModule  # type: ignore[import-not-found]
    except ImportError:
        print("# opacus is not importable: no Opacus baseline")
    else:
        try:
            gsm = GradSampleModule(copy.deepcopy(model), loss_reduction="sum")
        except NotImplementedError as e:
            print(f"# Opacus refuses this model: {str(e)[:120]}")
        else:

            def op() -> Tensor:
                for p in gsm.parameters():
                    p.grad_sample = None
                    p.grad = None
                elbo_per_sample(gsm._module, *batch).sum().backward()
                f = torch.cat([p.grad_sample.flatten(1) for p in gsm.parameters()], 1)
                return f @ f.T

            out["opacus+matmul"] = op
    out["uno.per_sample.gram"] = lambda: ps.gram(model, elbo_per_sample, *batch)
    return out


def measure(cfg: Config, ctx: h.Context) -> h.Rows:
    model, batch = _setup(cfg.model, cfg.batch)
    methods = _methods(model, batch)
    best = {n: min(ts) for n, ts in h.interleaved(methods, ctx.device, ctx.reps).items()}
    mem = {n: peak_bytes(fn) for n, fn in methods.items()}
    t_u, m_u = best["uno.per_sample.gram"], max(mem["uno.per_sample.gram"], 1)
    n_params = sum(p.numel() for p in model.parameters())
    return [
        dict(
            model=cfg.model,
            params=n_params,
            batch=cfg.batch,
            method=name,
            time_ms=t * 1e3,
            peak_bytes=mem[name],
            peak_MiB=mem[name] / 2**20,
            time_vs_uno=t / t_u,
            mem_vs_uno=mem[name] / m_u,
        )
        for name, t in best.items()
    ]


def configs(args: argparse.Namespace) -> List[Config]:
    batch = 16 if args.quick else args.batch
    return [Config(m, batch) for m in args.models]


COLUMNS = h.columns(
    "model:model:10; batch:B:4:d; method:method:20; time_ms:time ms:10:.1f; "
    "peak_MiB:peak MiB:9:.1f; time_vs_uno:uno speed-up:12:.1f; mem_vs_uno:uno mem ratio:13:.1f"
)
NOTE = "uno speed-up: method time / uno time; uno mem ratio: method peak / uno peak"
OPTIONS: List[Tuple[str, Dict[str, Any]]] = [
    ("--batch", dict(type=int, default=128, help="samples per batch (--quick: 16)")),
    ("--models", dict(nargs="+", default=list(MODELS), choices=MODELS)),
]

BENCH = h.Bench(
    "per-sample", __doc__ or "", COLUMNS, configs, measure, Config, notes=[NOTE], options=OPTIONS,
    isolate=True, devices=("cpu",),
)  # fmt: skip


def main(argv: Optional[Sequence[str]] = None, default_csv: Union[str, Path, None] = None) -> int:
    """``uno bench per-sample [options]`` (``default_csv``: the CSV when ``--csv`` is not given)."""
    return h.main(BENCH, argv, default_csv)
