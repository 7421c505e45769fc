"""``fill``: the forget images' latent points go to nearby retain images (decoder and encoder terms)."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch

from uno.unlearn import methods
from uno.unlearn.errors import UnoUserError
from uno.unlearn.methods.base import grads
from uno.unlearn.tasks import VAETask


def _task(vae_judge, small, w_u=0.0):
    vae, judge = vae_judge
    return VAETask(
        copy.deepcopy(vae), judge, small[0], [1], batch=16, n_monitor=32, w_u=w_u, seed=2,
        original=copy.deepcopy(vae).eval(),
    )  # fmt: skip


def _ready(name, task, **hp):
    m = methods.create(name, **hp)
    task.begin_step(0)
    m.setup(task)
    task.end_step()
    task.begin_step(1)
    return m


def test_neighbours_are_among_the_nearest_retain_images(vae_judge, small):
    task = _task(vae_judge, small)
    for n_nbr in (1, 5):
        m = _ready("fill", task, n_nbr=n_nbr)
        mu0, sd0, x_n = m.neighbours(task)
        with torch.no_grad():
            want_mu, _ = task.frozen_original().encode(task.x_f)
            retain_mu, _ = task.frozen_original().encode(task.retain_x)
        torch.testing.assert_close(mu0, want_mu)
        assert bool((sd0 > 0).all())
        near = torch.cdist(mu0, retain_mu).topk(n_nbr, largest=False).indices
        for i in range(len(x_n)):  # each x_n is one of the n_nbr nearest retain images
            assert any(torch.equal(x_n[i], task.retain_x[j]) for j in near[i])


def test_pull_moves_the_encoder_and_fill_weight_scales_the_term(vae_judge, small):
    task = _task(vae_judge, small)
    enc = [i for i, (n, _) in enumerate(task.model.named_parameters()) if n.startswith("enc.")]
    m = _ready("fill", task, pull=0.0)
    g0 = grads(m.fill_loss(task), task.params)
    assert all(float(g0[i].abs().max()) == 0.0 for i in enc)  # decoder term only
    task.begin_step(1)
    m = _ready("fill", task, pull=100.0)
    g1 = grads(m.fill_loss(task), task.params)
    assert any(float(g1[i].abs().max()) > 0.0 for i in enc)
    task.begin_step(1)
    d, info = m.direction(task, 1)
    task.begin_step(1)  # same batches, neighbours and noise
    want = grads(task.retain_loss() + m.fill * m.fill_loss(task), task.params)
    for a, b in zip(d, want):
        torch.testing.assert_close(a, b)
    assert info.loss_f > 0


def test_fill_needs_a_vae_task():
    m = methods.create("fill")
    with pytest.raises(UnoUserError, match="VAE"):
        m.setup(SimpleNamespace(z_forget=torch.zeros(1, 2)))


def test_state_round_trip(vae_judge, small):
    task = _task(vae_judge, small)
    m = _ready("fill", task)
    m2 = methods.create("fill")
    m2.load_state_dict(m.state_dict())
    assert m2.retain_mu is not None and torch.equal(m2.retain_mu, m.retain_mu)
