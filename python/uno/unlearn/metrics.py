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


#: Consecutive logged steps f must stay below τ for forgetting to count as stable (docs/method.md §4b).
STABLE_WINDOW = 10


def stable_steps_to_forget(
    fractions: Sequence[float], tau: float, window: int = STABLE_WINDOW
) -> Optional[int]:
    """First step ``s`` from which f stays below τ for ``window`` consecutive logged steps
    (``fractions[s : s + window]`` all < τ), or ``None``: not reached, or not confirmed because the log
    ends less than ``window`` steps after the last crossing. NaN counts as not below τ."""
    run = 0
    for s, f in enumerate(fractions):
        run = run + 1 if f < tau else 0
        if run == window:
            return s - window + 1
    return None


def time_to_forget_median(step_times: Sequence[float], steps: Optional[int]) -> Optional[float]:
    """The run's median update time × ``steps`` (``None`` when not reached; 0.0 for ``steps == 0``).

    The same rule for every method, so a few steps slowed by machine load cannot flip a ranking."""
    if steps is None:
        return None
    return float(statistics.median(step_times)) * steps if steps and step_times else 0.0


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


def optional_fid(
    judge: Optional[nn.Module], real: Tensor, latent_dim: int, n: Optional[int] = None
) -> Optional[ClassifierFID]:
    """A :class:`ClassifierFID` on ``judge``'s features, or ``None`` without a judge."""
    return None if judge is None else ClassifierFID(judge, real, latent_dim, n=n)


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


def run_summary(
    cfg: Any, rows: list[dict[str, Any]], s0: dict[str, Any], progress: Any
) -> dict[str, Any]:
    """The summary of a run's log rows (``uno.unlearn.run``; ``cfg`` a ``RunConfig``, ``progress`` the
    loop's ``Progress``, ``s0`` the step-0 measurements). Without fresh codes (``fresh_n`` 0) the stable
    rule reads the monitor batch's f."""
    from uno.unlearn.evaluation import both

    dts = [r["dt"] for r in rows[1:]]
    fr = [r["f"] for r in rows]
    # the headline series: fresh codes, both judges (the larger f); the monitor batch without fresh codes
    fb = [both([r["f_fresh"], r["f_fresh2"]]) for r in rows]
    if all(math.isnan(x) for x in fb):
        fb = fr
    stable = stable_steps_to_forget(fb, cfg.tau)
    return {
        "method": cfg.method,
        "seed": cfg.seed,
        "steps_run": rows[-1]["step"],
        "stopped": progress.stopped,
        "f0": s0["f0"],
        "f_final": fr[-1],
        "f_after_5": fr[5] if len(fr) > 5 else None,
        "steps_to_forget": progress.reached,
        "reached": progress.reached is not None,
        "time_to_forget_s": time_to_forget(dts, progress.reached),
        "per_step_s": (sum(dts) / len(dts)) if dts else float("nan"),
        "per_step_median_s": statistics.median(dts) if dts else float("nan"),
        "fid_before": s0["fid_before"],
        "fid_at_forget": progress.fid_at_forget,
        "elbo_before": s0["elbo_before"],
        "cos2_mean": nanmean([r["cos2"] for r in rows[1:]]),
        "peak_mem_bytes": max(
            (r["peak_mem"] for r in rows[1:] if not math.isnan(r["peak_mem"])), default=float("nan")
        ),
        "zero_norm_steps": sum(r["zero_norm"] for r in rows),
        # issue 14 (docs/method.md §4b): stable forgetting on fresh codes with both judges
        "stable_steps": stable,
        "first_crossing": steps_to_forget(fb, cfg.tau),
        "stable_steps_monitor": stable_steps_to_forget(fr, cfg.tau),
        "time_to_forget_median_s": time_to_forget_median(dts, stable),
        "f_fresh0": measured(rows[0].get("f_fresh")),
        "f_fresh2_0": measured(rows[0].get("f_fresh2")),
        "f_fresh_final": measured(rows[-1].get("f_fresh")),
        "f_fresh2_final": measured(rows[-1].get("f_fresh2")),
        "fid2_before": measured(s0.get("fid2_before")),
    }


def measured(x: Optional[float]) -> Optional[float]:
    """``x``, or ``None`` for a value not measured (NaN: no second judge): the summary's convention."""
    return None if x is None or math.isnan(x) else float(x)
