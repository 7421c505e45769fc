"""The attacks' generic loss (issue 19): the VAE attack is unchanged by it, and a labelled loss works."""

from __future__ import annotations

import pytest
import torch

from uno.unlearn import attacks, evaluation
from uno.unlearn.models import MnistVAE, sample_images
from uno.unlearn.train import train_vae

#: f per step of both attacks on the model of :func:`_setup`, computed by the code before the attacks
#: took a ``loss`` (commit 408d3a9): the refactor must not move a single code across the threshold.
OLD_RETAIN = ([0.485, 0.37, 0.31, 0.21, 0.13, 0.06], 0.0825)
OLD_FORGET = ([0.485, 0.365, 0.31, 0.215], 0.2125)


class _Brightness(torch.nn.Module):
    """Class 1 for samples brighter than the median of the model's own: f moves with any update."""

    def __init__(self, vae):
        super().__init__()
        m = sample_images(vae, evaluation.fresh_codes(2, 400, seed=99)).mean((1, 2, 3))
        self.t = float(m.quantile(0.5))

    def forward(self, x):
        m = x.flatten(1).mean(1)
        return torch.stack([self.t - m, m - self.t], 1)


@pytest.fixture(scope="module")
def setup(mnist):
    tr, _ = mnist
    tr = tr.subset(torch.arange(1000))
    torch.manual_seed(0)
    vae = train_vae(MnistVAE(hidden=16), tr, epochs=1, quiet=True)
    return vae, tr, evaluation.FreshForget([_Brightness(vae), None], [1], 2, n=400)


def test_vae_attacks_give_the_numbers_of_the_code_before_the_loss_option(setup):
    vae, tr, ev = setup
    r = attacks.retain_finetune(vae, ev, tr.x[tr.y != 1], steps=5, batch=32, n_step=200)
    k = attacks.forget_finetune(vae, ev, tr.x[tr.y == 1], steps=3, n_images=8, n_step=200)
    assert (r.f1, r.final[0]) == OLD_RETAIN
    assert (k.f1, k.final[0]) == OLD_FORGET
    assert r.at == [0, 1, 2, 3, 4, 5]
    explicit = attacks.retain_finetune(
        vae, ev, tr.x[tr.y != 1], steps=5, batch=32, n_step=200, loss=lambda m, x: m.loss(x)
    )
    assert (explicit.f1, explicit.final[0]) == OLD_RETAIN


def test_a_labelled_loss_sees_aligned_rows_and_every_thins_the_curve(setup):
    vae, tr, ev = setup
    seen = []

    def loss(m, x, y):  # the labels travel with their images
        seen.append((x.shape[0], y.shape[0]))
        assert bool((y == 1).all()) or bool((y != 1).all())
        return m.loss(x)

    keep = tr.y != 1
    r = attacks.retain_finetune(
        vae, ev, (tr.x[keep], tr.y[keep]), steps=5, batch=32, n_step=200, loss=loss, every=2
    )
    assert seen == [(32, 32)] * 5
    assert r.at == [0, 2, 4, 5] and len(r.f1) == 4
    assert r.f1[0] == OLD_RETAIN[0][0] and r.final[0] == OLD_RETAIN[1]  # same batches, same model
    one = tr.y == 1
    k = attacks.forget_finetune(
        vae, ev, (tr.x[one], tr.y[one]), steps=3, n_images=8, n_step=200, loss=loss
    )
    assert seen[5:] == [(8, 8)] * 3 and k.f1 == OLD_FORGET[0]
    assert k.steps_until(-1.0) == 1


def test_a_gan_attack_takes_no_loss(setup):
    vae, tr, ev = setup
    with pytest.raises(ValueError, match="no loss"):
        attacks.retain_finetune(vae, ev, tr.x, critic=torch.nn.Linear(2, 1), loss=lambda m, x: x)
