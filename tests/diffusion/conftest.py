"""Fixtures of the diffusion tests: tiny denoisers (a UNet of ~1k parameters, a small MLP), a small judge,
real digits and an isolated model cache. One CPU thread."""

from __future__ import annotations

import pytest
import torch

from uno.unlearn.data import load_mnist
from uno.unlearn.diffusion.model import DiffusionMLP, DiffusionUNet
from uno.unlearn.models import MLPJudge
from uno.unlearn.train import train_judge

torch.set_num_threads(1)

#: the tiny models' schedule and chain: T = 50, 3 DDIM steps
TINY = {"T": 50, "sample_steps": 3}


def tiny_unet() -> DiffusionUNet:
    torch.manual_seed(0)
    return DiffusionUNet((2, 2, 2), emb=4, **TINY)  # 999 parameters


def tiny_mlp() -> DiffusionMLP:
    torch.manual_seed(0)
    return DiffusionMLP(8, 1, emb=8, **TINY)


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("UNO_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "uno-cache"))


@pytest.fixture(scope="session")
def digits():
    """(train, heldout): 600 / 200 real digits."""
    tr, he = load_mnist()
    return tr.subset(torch.arange(600)), he.subset(torch.arange(200))


@pytest.fixture(scope="session")
def judge(digits):
    torch.manual_seed(0)
    return train_judge(MLPJudge(hidden=16), digits[0], epochs=1, quiet=True)


@pytest.fixture(params=["unet", "mlp"])
def model(request):
    return tiny_unet() if request.param == "unet" else tiny_mlp()


@pytest.fixture
def mlp():
    return tiny_mlp()


@pytest.fixture
def loaded(judge):
    """A factory of fresh ``Loaded`` (the tiny MLP, the judge) for the run loop."""
    from uno.unlearn.loading import Loaded

    return lambda: Loaded(tiny_mlp(), judge, None, "diffusion", judge2=judge)
