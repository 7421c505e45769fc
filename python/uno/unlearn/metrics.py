"""Metrics of docs/method.md §4: forget fraction, steps/time to forget, classifier FID, memory, repeats."""

from __future__ import annotations

import math
import os
import statistics
import warnings
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from uno.unlearn.models import sample_images


def steps_to_forget(fractions: Sequence[float], tau: float) -> Optional[int]:
    """First step ``s ≥ 0`` with ``f_s < τ`` (``fractions[s]`` is measured after update s; s = 0 is the
    original model), or ``None`` — "not reached", never the last step."""
    for s, f in enumerate(fractions):
        if f < tau:
            return s
    return None


def time_to_forget(step_times: Sequence[float], steps: Optional[int]) -> Optional[float]:
    """Sum of the update times of steps 1..``steps`` (``None`` when not reached)."""
    if steps is None:
        return None
    return float(sum(step_times[:steps]))


@torch.no_grad()
def features(judge: nn.Module, x: Tensor, chunk: int = 2048) -> np.ndarray:
    """Judge hidden features ``(N, d)`` as float64 numpy (``judge.features``; 200-d for the MLP judge)."""
    judge.eval()
    out = [judge.features(x[i : i + chunk]).double().cpu() for i in range(0, len(x), chunk)]  # type: ignore[operator]
    return torch.cat(out).numpy()


def frechet_distance(f1: np.ndarray, f2: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets ``(N1, d)``, ``(N2, d)``.

    Uses ``scipy.linalg.sqrtm`` (a proper matrix square root of Σ₁Σ₂, not an eigen-decomposition of a
    symmetrised product); a tiny diagonal offset is added when the product is singular.
    """
    from scipy import linalg

    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    with warnings.catch_warnings():
        # dead ReLU units make Σ singular; sqrtm still returns the root of the product (checked below)
        warnings.simplefilter("ignore")
        covmean = linalg.sqrtm(s1 @ s2)
        if not np.isfinite(covmean).all():
            off = np.eye(s1.shape[0]) * 1e-6
            covmean = linalg.sqrtm((s1 + off) @ (s2 + off))
    covmean = np.real(covmean)
    d = mu1 - mu2
    return float(d @ d + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


class ClassifierFID:
    """FID on the judge's hidden features between real retain images and generated ones.

    The real features are computed once; generated images come from a fixed latent batch of the same
    size (seeded), so every method is scored on the same latents.
    """

    def __init__(
        self,
        judge: nn.Module,
        real: Tensor,
        latent_dim: int,
        seed: int = 1234,
        n: Optional[int] = None,
    ):
        self.judge = judge
        n = len(real) if n is None else min(n, len(real))
        self.real_feat = features(judge, real[:n])
        g = torch.Generator().manual_seed(seed)
        self.z = torch.randn(n, latent_dim, generator=g)

    def __call__(self, model: nn.Module) -> float:
        return frechet_distance(self.real_feat, features(self.judge, sample_images(model, self.z)))


class PeakMemory:
    """Peak extra memory of a region, in bytes.

    CUDA: ``torch.cuda.max_memory_allocated`` after a reset, minus the allocation at entry (exact tensor
    memory). CPU: the process's peak resident set (``VmHWM``) after resetting it through
    ``/proc/self/clear_refs`` (Linux), minus the resident set at entry. On CPU this counts every page the
    step touches for the first time — tensors, autograd buffers, allocator growth — but not memory that the
    allocator reuses from earlier steps, so it is a lower bound on the step's tensor working set after the
    first step; it is measured the same way for every method. ``nan`` where neither is available.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.value = float("nan")
        self._start = 0

    @staticmethod
    def _status(key: str) -> Optional[int]:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
        else:
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
                self._start = self._status("VmRSS") or 0
            except OSError:
                self._start = -1
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.value = float(torch.cuda.max_memory_allocated(self.device) - self._start)
        elif self._start >= 0:
            hwm = self._status("VmHWM")
            self.value = float("nan") if hwm is None else float(max(0, hwm - self._start))


def sync(device: torch.device) -> None:
    """Wait for the device (before reading a clock)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def mean_std(values: Sequence[Optional[float]]) -> tuple[float, float, int]:
    """Mean and (sample) std of the values that are not ``None``/NaN, and how many were missing."""
    v = [float(x) for x in values if x is not None and not math.isnan(float(x))]
    if not v:
        return float("nan"), float("nan"), len(values)
    return statistics.fmean(v), (statistics.stdev(v) if len(v) > 1 else 0.0), len(values) - len(v)


def fmt_mean_std(values: Sequence[Optional[float]], digits: int = 3) -> str:
    m, s, missing = mean_std(values)
    if math.isnan(m):
        return "not reached"
    txt = f"{m:.{digits}g} ± {s:.{digits}g}"
    if missing:
        txt += f" ({missing}/{len(values)} not reached)"
    return txt


def cpu_threads() -> int:
    return torch.get_num_threads() if os.cpu_count() else 1


def nanmean(v: Sequence[float]) -> float:
    """Mean of the non-NaN entries of ``v`` (NaN when there are none)."""
    w = [x for x in v if not math.isnan(x)]
    return sum(w) / len(w) if w else float("nan")
