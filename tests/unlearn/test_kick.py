"""``kick``: retain-hat's direction, a kick× learning rate for the first n_kick steps, and the optional
projection of the kick off the per-sample retain subspace (``uno.per_sample`` + ``ProjectedAdam``)."""

from __future__ import annotations

import copy

import pytest
import torch

import uno
from uno.optim import ProjectedAdam
from uno.unlearn import methods
from uno.unlearn.errors import UnoUserError
from uno.unlearn.methods.base import grads
from uno.unlearn.run import Loaded, RunConfig, unlearn
from uno.unlearn.tasks import VAETask


def _task(vae_judge, small, w_u=1e3, bn_train=False):
    vae, judge = vae_judge
    train = copy.copy(small[0])
    train.x = train.x.double()  # Adam's first steps are sign-like: rounding must not flip one
    vae = copy.deepcopy(vae).double()
    return VAETask(
        vae, copy.deepcopy(judge).double(), train, [1], batch=32, n_monitor=64, w_u=w_u, seed=5,
        original=copy.deepcopy(vae), bn_train=bn_train,
    )  # fmt: skip


def _step(m, task, opt, s):
    task.begin_step(s)
    d, info = m.direction(task, s)
    for p, g in zip(task.params, d):
        p.grad = g
    m.step(opt)
    task.end_step()
    return d, info


def test_kick_hat_is_retain_hat_with_a_larger_learning_rate_while_kicking(vae_judge, small):
    """Steps 1..n_kick equal torch.optim.Adam at kick×lr on retain-hat's direction; later steps
    at lr; the optimizer's lr is the run's between steps."""
    ref_task, task = _task(vae_judge, small), _task(vae_judge, small)
    ref_m, m = methods.create("retain-hat"), methods.create("kick-hat", kick=10.0, n_kick=2)
    ref_opt = torch.optim.Adam(ref_task.params, lr=1e-3)
    opt = m.optimizer(task.params, 1e-3)
    assert type(opt) is torch.optim.Adam  # no projection without k_retain
    for s in range(1, 5):
        ref_opt.param_groups[0]["lr"] = 1e-2 if s <= 2 else 1e-3
        d_ref, _ = _step(ref_m, ref_task, ref_opt, s)
        d, info = _step(m, task, opt, s)
        for a, b in zip(d_ref, d):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        for a, b in zip(ref_task.params, task.params):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
        assert info.extra["lr_scale"] == (10.0 if s <= 2 else 1.0)
        assert opt.param_groups[0]["lr"] == 1e-3


def test_plain_kick_ascends_the_forget_elbo(vae_judge, small):
    task = _task(vae_judge, small, w_u=0.0)
    m = methods.create("kick", ascent=0.5)
    task.begin_step(1)
    d, _ = m.direction(task, 1)
    task.begin_step(1)  # same batches and noise, drawn in the same order (forget first)
    lf = task.ell_forget()
    want = grads(task.ell_retain() - 0.5 * lf, task.params)
    for a, b in zip(d, want):
        torch.testing.assert_close(a, b)


def test_principal_weights_give_orthonormal_principal_directions():
    torch.manual_seed(0)
    g = torch.randn(50, 12, dtype=torch.float64)  # 12 per-sample gradients of 50 coordinates
    w, _ = uno.per_sample.principal_weights(g.T @ g, 5)
    q = g @ w
    torch.testing.assert_close(q.T @ q, torch.eye(5, dtype=torch.float64))
    top = torch.linalg.svd(g, full_matrices=False).U[:, :5]  # the top-5 left singular vectors
    torch.testing.assert_close((q.T @ top).abs().sum(0), torch.ones(5, dtype=torch.float64))


def test_projected_kick_moves_orthogonally_to_the_per_sample_retain_directions(
    vae_judge, small, monkeypatch
):
    """With k_retain the kick steps ProjectedAdam(project="update") with k per-sample directions
    (uno.per_sample.principal_directions: one capture for all k), and the parameter change has no component along them; recovery steps are
    unprojected."""
    calls = {"principal_directions": 0}
    real = uno.per_sample.principal_directions

    def spy(*a, **kw):
        calls["principal_directions"] += 1
        return real(*a, **kw)

    monkeypatch.setattr(uno.per_sample, "principal_directions", spy)
    task = _task(vae_judge, small)
    m = methods.create("kick-hat", kick=10.0, n_kick=1, k_retain=4)
    opt = m.optimizer(task.params, 1e-3)
    assert isinstance(opt, ProjectedAdam) and opt.project == "update"
    before = [p.detach().clone() for p in task.params]
    _step(m, task, opt, 1)
    assert calls == {"principal_directions": 1} and len(m.step_basis) == 4  # one capture
    delta = [p.detach() - b for p, b in zip(task.params, before)]
    size = float(uno.dot(delta, delta)) ** 0.5
    assert size > 0
    for q in m.step_basis:
        along = float(uno.dot(delta, q)) / float(uno.dot(q, q)) ** 0.5
        assert abs(along) < 1e-9 * size
    _step(m, task, opt, 2)
    assert m.step_basis is None and calls["principal_directions"] == 1


def test_bad_options_and_bn_train_are_errors(vae_judge, small):
    for bad in ({"kick": 0.0}, {"n_kick": -1}, {"k_retain": -2}):
        with pytest.raises(UnoUserError, match="kick"):
            methods.create("kick-hat", **bad)
    m = methods.create("kick-hat", k_retain=2)
    with pytest.raises(UnoUserError, match="--bn-train"):
        m.setup(_task(vae_judge, small, bn_train=True))


def test_kick_hat_runs_through_the_run_loop(vae_judge, small):
    vae, judge = vae_judge
    cfg = RunConfig(method="kick-hat", steps=3, batch=32, n_monitor=64, fid_n=300, quiet=True)
    summary = unlearn(cfg, None, loaded=Loaded(copy.deepcopy(vae), judge), data=small)
    assert summary["steps_run"] == 3 and summary["f_final"] <= summary["f0"]
