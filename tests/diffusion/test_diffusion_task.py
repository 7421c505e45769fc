"""The diffusion task: its batches, losses, histogram loss and monitoring."""

from __future__ import annotations

import math

import pytest
import torch

from uno.unlearn.diffusion.schedule import alpha_bar, to_model
from uno.unlearn.diffusion.task import DiffusionTask
from uno.unlearn.diffusion.train import per_sample_loss
from uno.unlearn.errors import DataError


def make_task(model, judge, digits, **kw):
    kw.setdefault("batch", 8)
    kw.setdefault("n_monitor", 6)
    kw.setdefault("fid_n", 6)
    return DiffusionTask(model, judge, digits[0], [1], original=None, **kw)


def test_sides_hold_the_right_classes(model, judge, digits):
    task = make_task(model, judge, digits)
    task.begin_step(1)
    assert bool((task.y_f == 1).all()) and bool((task.y_r != 1).all())
    assert bool((task.y_m == 1).all())  # the remapping labels
    assert float(task.x_f.min()) >= -1 and float(task.x_f.max()) <= 1


def test_losses_are_the_denoising_losses_of_the_step(model, judge, digits):
    task = make_task(model, judge, digits)
    task.begin_step(3)
    ab = alpha_bar(model.T, model.schedule)
    lf = per_sample_loss(model, task.x_f, task.y_f, task.t_f, task.eps_f, ab).mean()
    lr = per_sample_loss(model, task.x_r, task.y_r, task.t_r, task.eps_r, ab).mean()
    lm = per_sample_loss(model, task.x_r, task.y_m, task.t_m, task.eps_m, ab).mean()
    torch.testing.assert_close(task.ell_forget(), lf)
    torch.testing.assert_close(task.ell_retain(), lr + lm)
    assert torch.equal(task.forget_loss(), task.ell_forget())  # w_u = 0: no histogram term


def test_a_step_draws_the_same_batch_every_time(model, judge, digits):
    task = make_task(model, judge, digits)
    task.begin_step(5)
    a = (task.x_f.clone(), task.t_r.clone(), task.eps_m.clone(), float(task.ell_retain().detach()))
    task.begin_step(6)
    assert not torch.equal(task.x_f, a[0])
    task.begin_step(5)
    assert (
        torch.equal(task.x_f, a[0])
        and torch.equal(task.t_r, a[1])
        and torch.equal(task.eps_m, a[2])
    )
    assert float(task.ell_retain().detach()) == a[3]


def test_chunks_and_per_sample_losses_sum_to_the_retain_loss(model, judge, digits):
    task = make_task(model, judge, digits)
    task.begin_step(2)
    lr = task.ell_retain()
    torch.testing.assert_close(sum(task.retain_loss_chunks(3)), lr)
    fn, batch = task.retain_per_sample()
    ps = fn(model, *batch)
    assert ps.shape == (2 * task.batch,)
    torch.testing.assert_close(ps.sum(), lr)


def test_histogram_loss_is_a_kl_with_gradients(mlp, judge, digits):
    task = make_task(mlp, judge, digits, w_u=10.0)
    task.begin_step(1)
    u = task.histogram_loss()
    assert math.isfinite(float(u.detach())) and float(u.detach()) >= -1e-6
    assert task.histogram_loss() is u  # shared by L_f and L_r within the step
    torch.testing.assert_close(task.retain_loss(), task.ell_retain() + 10.0 * u)
    g = torch.autograd.grad(u, task.params, allow_unused=True)
    assert any(x is not None and float(x.abs().sum()) > 0 for x in g)
    task.end_step()
    assert task._u is None


def test_forget_fraction_uses_class_c_chains_from_fixed_codes(model, judge, digits):
    task = make_task(model, judge, digits)
    f = task.forget_fraction()
    assert 0.0 <= f <= 1.0 and f == task.forget_fraction()
    assert bool((task.labels_for(4) == 1).all())
    assert model.decode_labels == [1]  # the run loop's decode(z): class-1 samples
    torch.testing.assert_close(model.decode(task.z_monitor), task.monitor_images())
    assert task.monitor_images().shape == (6, 1, 28, 28)


def test_classifier_fid_is_on_retain_classes(model, judge, digits):
    task = make_task(model, judge, digits)
    assert bool((task.classifier_fid.y != 1).all()) and len(task.classifier_fid.y) == 6
    assert math.isfinite(task.classifier_fid(model))


def test_esd_and_salun_losses(model, judge, digits):
    import copy

    task = make_task(model, judge, digits)
    with pytest.raises(RuntimeError, match="frozen original"):
        task.esd_loss(1.0)
    task.original = copy.deepcopy(model).eval()
    task.begin_step(1)
    assert float(task.esd_loss(1.0).detach()) > 0
    assert torch.equal(task.salun_loss(), task.ell_retain())
    assert math.isfinite(float(task.saliency_loss(16)))


def test_empty_side_is_a_data_error(model, judge, digits):
    only_ones = digits[0].subset(digits[0].y == 1)
    with pytest.raises(DataError, match="retain set 0 samples"):
        DiffusionTask(model, judge, only_ones, [1])


def test_to_model_range():
    assert float(to_model(torch.zeros(1))) == -1.0 and float(to_model(torch.ones(1))) == 1.0


def test_fid_samples_are_shared_by_the_judges_and_follow_the_weights(
    mlp, judge, digits, monkeypatch
):
    from uno.unlearn.diffusion import task as task_mod

    task = make_task(mlp, judge, digits, judge2=judge)
    task_mod._SAMPLES.clear()  # kept across tasks: an earlier test's tiny MLP has the same weights
    calls = []
    real_chain = task_mod.model_chain
    monkeypatch.setattr(task_mod, "model_chain", lambda *a: calls.append(1) or real_chain(*a))
    f1, f2 = task.classifier_fid(mlp), task.classifier_fid2(mlp)
    assert f1 == f2 and len(calls) == 1  # the same judge: the same FID, one chain for both
    import copy

    same = copy.deepcopy(mlp)
    assert task.classifier_fid(same) == f1 and len(calls) == 1  # the same weights: kept
    with torch.no_grad():
        same.inp.weight.add_(0.1)  # (the embedding alone would do nothing: adaLN-zero)
    fresh = task.classifier_fid(same)
    assert len(calls) == 2 and fresh != f1  # other weights: sampled again
    torch.testing.assert_close(
        task.classifier_fid.samples(same),
        real_chain(same, task.classifier_fid.z, task.classifier_fid.y),
    )
