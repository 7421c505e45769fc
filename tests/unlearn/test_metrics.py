"""Metrics: steps/time to forget, Fréchet distance, memory, mean ± std."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from uno.unlearn import metrics as M


def test_steps_to_forget_and_not_reached():
    assert M.steps_to_forget([0.2, 0.1, 0.01, 0.0], 0.02) == 2
    assert M.steps_to_forget([0.01], 0.02) == 0
    assert M.steps_to_forget([0.2, 0.1, 0.05], 0.02) is None  # "not reached", not the last step
    assert M.time_to_forget([0.1, 0.2, 0.3], 2) == pytest.approx(0.3)
    assert M.time_to_forget([0.1], None) is None


def test_frechet_distance_closed_form():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20000, 3))
    assert M.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    b = a * 2.0 + np.array([1.0, 0.0, 0.0])
    # N(μ, I) vs N(μ + e1, 4I): |Δμ|² + tr(I + 4I − 2·2I) = 1 + 3
    assert M.frechet_distance(a, b) == pytest.approx(4.0, rel=1e-2)


def test_frechet_distance_singular_covariance():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(500, 4))
    a[:, 3] = 0.0  # a dead feature
    b = rng.normal(size=(500, 4))
    b[:, 3] = 0.0
    d = M.frechet_distance(a, b)
    assert math.isfinite(d) and d >= -1e-6


def test_classifier_fid_same_model_is_small(tiny_models, small):
    vae, judge = tiny_models
    fid = M.ClassifierFID(judge, small[0].x, vae.latent_dim, n=500)
    assert fid(vae) == pytest.approx(fid(vae))
    assert fid.real_feat.shape == (500, 32)


def test_peak_memory_counts_a_big_allocation():
    m = M.PeakMemory(torch.device("cpu"))
    with m:
        x = torch.ones(256 * 1024 * 1024 // 4)  # 256 MiB: above the mmap threshold, fresh pages
        del x
    if math.isnan(m.value):
        pytest.skip("no /proc peak-RSS reset here")
    assert m.value >= 128 * 1024 * 1024


def test_mean_std():
    assert M.mean_std([1.0, 3.0, None]) == (2.0, pytest.approx(math.sqrt(2)), 1)
    assert M.fmt_mean_std([None, None]) == "not reached"
    assert "1/3 not reached" in M.fmt_mean_std([1.0, 2.0, None])
