"""Model shapes and the paper's parameter count."""

from __future__ import annotations

import pytest
import torch

from uno.unlearn import models as M


def test_paper_vae_param_count():
    assert M.n_params(M.MnistVAE()) == 632_788


def test_paper_vae_shapes():
    v = M.MnistVAE()
    x = torch.rand(5, 1, 28, 28)
    xr, mu, lv = v(x)
    assert xr.shape == x.shape and mu.shape == (5, 2) and lv.shape == (5, 2)
    assert v.decode(torch.randn(3, 2)).shape == (3, 1, 28, 28)
    assert v.loss(x).ndim == 0


@pytest.mark.parametrize(
    "cin, size, ch", [(1, 28, (16, 32)), (1, 28, (8, 16, 32)), (3, 64, (8, 16, 16, 32, 32))]
)
def test_conv_vae(cin, size, ch):
    v = M.ConvVAE(cin, size, ch, latent=8)
    x = torch.rand(2, cin, size, size)
    assert v(x)[0].shape == x.shape
    assert torch.isfinite(v.loss(x))
    assert M.build(v.config).config == v.config


def test_conv_vae_celeba_shape():
    v = M.ConvVAE(3, 64, (32, 64, 128, 256, 512), latent=512)
    assert v.decode(torch.randn(1, 512)).shape == (1, 3, 64, 64)


@pytest.mark.parametrize("size, c", [(28, 1), (64, 3)])
def test_dcgan(size, c):
    g = M.DCGANGenerator(latent=16, width=8, out_channels=c, size=size)
    d = M.DCGANCritic(width=8, in_channels=c, size=size)
    x = g(torch.randn(4, 16))
    assert x.shape == (4, c, size, size) and 0 <= float(x.min()) and float(x.max()) <= 1
    assert d(x).shape == (4,)


def test_judges():
    j = M.MLPJudge()
    x = torch.rand(3, 1, 28, 28)
    assert j(x).shape == (3, 10) and j.features(x).shape == (3, 200)
    assert M.CNNJudge()(x).shape == (3, 10)
    a = M.attribute_judge(3, 64)
    assert a(torch.rand(2, 3, 64, 64)).shape == (2, 1)


def test_set_batchnorm_and_sample_restore_modes():
    v = M.MnistVAE(hidden=8)
    v.train()
    M.set_batchnorm(v, False)
    assert not v.enc[1].training and v.enc[0].training
    M.sample_images(v, torch.randn(4, 2))
    assert not v.enc[1].training and v.enc[0].training


def test_build_unknown():
    with pytest.raises(ValueError, match="unknown model kind"):
        M.build({"kind": "nope"})
