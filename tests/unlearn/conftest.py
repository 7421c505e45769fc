"""Shared fixtures: small real data, tiny models, an isolated model cache, one CPU thread."""

from __future__ import annotations

import copy

import pytest
import torch

from uno.unlearn.data import load_mnist
from uno.unlearn.models import MLPJudge, MnistVAE
from uno.unlearn.train import train_judge, train_vae

torch.set_num_threads(1)  # steadier timings and no oversubscription on small shared machines


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("UNO_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "uno-cache"))


@pytest.fixture(scope="session")
def mnist():
    return load_mnist()


@pytest.fixture(scope="session")
def small(mnist):
    """(train, heldout): 1,000 / 300 real digits."""
    tr, he = mnist
    return tr.subset(torch.arange(1000)), he.subset(torch.arange(300))


@pytest.fixture(scope="session")
def tiny_models(small):
    """A small paper-shaped VAE (hidden 32) and judge (hidden 32), briefly trained."""
    torch.manual_seed(0)
    tr, _ = small
    vae = train_vae(MnistVAE(hidden=32), tr, epochs=2, quiet=True)
    judge = train_judge(MLPJudge(hidden=32), tr, epochs=2, quiet=True)
    return vae, judge


@pytest.fixture
def vae_judge(tiny_models):
    vae, judge = tiny_models
    return copy.deepcopy(vae), judge
