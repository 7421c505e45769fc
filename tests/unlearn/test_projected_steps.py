"""The projection methods step through ``uno.optim.ProjectedAdam``: the same trajectory as today's
``torch.optim.Adam`` on a Python-projected direction, and no driver projects and then steps Adam."""

from __future__ import annotations

import copy

import pytest
import torch

import uno
from uno.optim import ProjectedAdam
from uno.unlearn import methods
from uno.unlearn.methods.base import forget_retain_grads, grads
from uno.unlearn.methods.registry import _REGISTRY
from uno.unlearn.run import Loaded, RunConfig, unlearn
from uno.unlearn.tasks import VAETask

#: every method but those that need the diffusion task (esd: tests/diffusion)
VAE_METHODS = sorted(n for n in methods.names() if "vae" in methods.create(n).models)

PROJECTION = sorted(n for n, (cls, _) in _REGISTRY.items() if cls.project is not None)


def _old_surgery(task):
    g_f, g_r, info = forget_retain_grads(task)
    d = [t.detach().clone() for t in g_r]
    if info.extra["F"] > 0.0:
        uno.project_(d, [t.detach() for t in g_f])
    return d


def _old_ascent(task):
    g_f, _, _ = forget_retain_grads(task, hat_sign=-1.0)
    return [-t.detach() for t in g_f]


def _old_surgery_ascent(task):
    g_f, g_r, info = forget_retain_grads(task, hat_sign=-1.0)
    d = [t.detach().clone() for t in g_f]
    if info.extra["R"] > 0.0:
        uno.project_(d, [t.detach() for t in g_r])
    return [-t for t in d]


def _old_uno_subspace(task, k=8, rho=1.0):
    g_f = grads(task.forget_loss(u_sign=-1.0), task.params)
    g_js = [grads(c, task.params) for c in task.retain_loss_chunks(k)]
    g_r = [sum(ts) for ts in zip(*g_js)]
    basis = uno.orthonormalize(g_js)
    d = [t.detach().clone() for t in g_f]
    if basis.k > 0:
        uno.project_(d, basis)
    return [rho * gr - df for gr, df in zip(g_r, d)]


def _old_direction(name, task, step, m):
    """Today's direction (before ProjectedAdam): the Python projection, for ``torch.optim.Adam``."""
    base = name.removesuffix("-hat")
    if base == "surgery":
        return _old_surgery(task)
    if base == "surgery-ascent":
        return _old_surgery_ascent(task)
    if base == "uno-subspace":
        return _old_uno_subspace(task, m.k, m.retain_weight)
    if base == "ascent-descent":
        return _old_ascent(task) if step % 2 == 1 else _old_surgery(task)
    if base == "uno-s":
        return m.direction(task, step)[0] if step % 2 == 1 else _old_surgery(task)
    raise AssertionError(f"no old form for {name}")


def _task(vae_judge, small, name):
    vae, judge = vae_judge
    train = copy.copy(small[0])
    # float64: Adam's first steps are sign-like, rounding must not flip one
    train.x = train.x.double()
    vae = copy.deepcopy(vae).double()
    w_u = 1e3 if name.endswith("-hat") else 0.0
    return VAETask(
        vae, copy.deepcopy(judge).double(), train, [1], batch=32, n_monitor=64, original=copy.deepcopy(vae),
        w_u=w_u, seed=3,
    )  # fmt: skip


@pytest.mark.parametrize("name", [n for n in PROJECTION if "-ps" not in n])
def test_projected_adam_equals_adam_on_the_projected_direction(vae_judge, small, name):
    """Four steps of the method through its ProjectedAdam = torch.optim.Adam on today's direction."""
    old_task, new_task = _task(vae_judge, small, name), _task(vae_judge, small, name)
    old_m = methods.create(name, k=4) if "subspace" in name else methods.create(name)
    new_m = copy.deepcopy(old_m)
    old_opt = torch.optim.Adam(old_task.params, lr=1e-3)
    new_opt = new_m.optimizer(new_task.params, 1e-3)
    assert isinstance(new_opt, ProjectedAdam) and new_opt.project == "grad"
    for s in range(1, 5):
        old_task.begin_step(s)
        for p, g in zip(old_task.params, _old_direction(name, old_task, s, old_m)):
            p.grad = g
        old_opt.step()
        old_task.end_step()
        new_task.begin_step(s)
        d, _ = new_m.direction(new_task, s)
        for p, g in zip(new_task.params, d):
            p.grad = g
        new_m.step(new_opt)
        new_task.end_step()
        for a, b in zip(old_task.params, new_task.params):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    # the state layout is torch.optim.Adam's: it loads into either
    sd = new_opt.state_dict()
    assert set(sd["state"][0]) == set(old_opt.state_dict()["state"][0])
    torch.optim.Adam(old_task.params, lr=1e-3).load_state_dict(sd)


def test_projection_is_applied(vae_judge, small):
    """The ProjectedAdam path is not plain Adam on g_r: dropping the basis changes the step."""
    tasks = [_task(vae_judge, small, "surgery") for _ in range(2)]
    m = methods.create("surgery")
    for i, t in enumerate(tasks):
        opt = m.optimizer(t.params, 1e-3)
        t.begin_step(1)
        d, _ = m.direction(t, 1)
        assert m.step_basis is not None
        if i == 1:
            m.step_basis = None
        for p, g in zip(t.params, d):
            p.grad = g
        m.step(opt)
    assert any(not torch.equal(a, b) for a, b in zip(*(t.params for t in tasks)))


@pytest.mark.parametrize("name", VAE_METHODS)
def test_no_driver_projects_then_steps_adam(vae_judge, small, monkeypatch, name):
    """Through the run loop (``uno unlearn``'s path): a method that projects steps ProjectedAdam with
    a basis; no method projects in Python (``uno.project_``) and then steps ``torch.optim.Adam``."""
    calls = {"project_": 0, "adam": 0, "projected": 0, "basis": 0}
    real_project, real_adam, real_padam = uno.project_, torch.optim.Adam.step, ProjectedAdam.step

    def project_spy(*a, **kw):
        calls["project_"] += 1
        return real_project(*a, **kw)

    def adam_spy(self, *a, **kw):
        calls["adam"] += 1
        return real_adam(self, *a, **kw)

    def padam_spy(self, *a, basis=None, **kw):
        calls["projected"] += 1
        calls["basis"] += basis is not None
        return real_padam(self, *a, basis=basis, **kw)

    monkeypatch.setattr(uno, "project_", project_spy)
    monkeypatch.setattr(torch.optim.Adam, "step", adam_spy)
    monkeypatch.setattr(ProjectedAdam, "step", padam_spy)
    vae, judge = vae_judge
    cfg = RunConfig(method=name, steps=2, batch=32, n_monitor=64, fid_n=300, quiet=True)
    unlearn(cfg, None, loaded=Loaded(copy.deepcopy(vae), judge), data=small)
    assert calls["project_"] == 0, "a Python-level projection in the step"
    if name in PROJECTION:
        assert calls["adam"] == 0 and calls["projected"] == 2 and calls["basis"] >= 1
    else:
        assert calls["adam"] == 2 and calls["projected"] == 0


@pytest.mark.parametrize("rho", [0.0, 1.0])
def test_uno_subspace_ps_direction(vae_judge, small, rho):
    """The step's projected gradient is ρ·g_r − (g_f − P_S g_f), S = span(g_r, the top-k principal
    directions of the per-sample retain gradients), checked with materialised per-sample gradients."""
    from uno import per_sample

    task = _task(vae_judge, small, "uno-subspace-ps")
    m = methods.create("uno-subspace-ps", k=4, retain_weight=rho)
    task.begin_step(0)
    m.setup(task)
    task.begin_step(1)
    d, info = m.direction(task, 1)
    got = torch.cat([t.reshape(-1) for t in m.projected(d)])
    task.begin_step(1)  # the same draws: forget batch and noise, then the retain noise
    g_f = torch.cat([t.reshape(-1) for t in grads(task.forget_loss(u_sign=-1.0), task.params)])
    loss_fn, batch = task.retain_per_sample()
    per = per_sample.grads(task.model, loss_fn, *batch, params=task.params, batchnorm="frozen")
    g = torch.cat([t.reshape(len(batch[0]), -1) for t in per], 1)
    _, vecs = torch.linalg.eigh(g @ g.T)
    q, _ = torch.linalg.qr(torch.cat([g.sum(0, keepdim=True), vecs[:, -4:].T @ g]).T)
    want = rho * g.sum(0) - (g_f - q @ (q.T @ g_f))
    assert info.extra["k"] == 5
    torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-8 * float(want.abs().max()))


def test_uno_subspace_ps_uses_per_sample_and_rejects_bn_train(vae_judge, small, monkeypatch):
    """One uno.per_sample.gram call per step, with batchnorm="frozen" (c and q come from autograd on
    one forward); with BatchNorm in train mode the method is a user error before any step."""
    from uno import per_sample
    from uno.unlearn.errors import UnoUserError

    seen: list[tuple[str, str]] = []
    for fn in ("gram", "coefficients", "weighted_sum", "grads"):
        real = getattr(per_sample, fn)

        def spy(*a, _real=real, _fn=fn, **kw):
            seen.append((_fn, kw.get("batchnorm", "error")))
            return _real(*a, **kw)

        monkeypatch.setattr(per_sample, fn, spy)
    vae, judge = vae_judge
    cfg = RunConfig(
        method="uno-subspace-ps", steps=2, batch=32, n_monitor=64, fid_n=300, quiet=True
    )
    unlearn(cfg, None, loaded=Loaded(copy.deepcopy(vae), judge), data=small)
    assert seen == [("gram", "frozen")] * 2
    bad = RunConfig(method="uno-subspace-ps", steps=2, batch=32, n_monitor=64, fid_n=300,
                    quiet=True, bn_train=True)  # fmt: skip
    with pytest.raises(UnoUserError, match="bn-train"):
        unlearn(bad, None, loaded=Loaded(copy.deepcopy(vae), judge), data=small)


@pytest.mark.parametrize("name", ["uno", "uno-s", "uno-hat"])
def test_uno_reads_its_inner_products_in_one_pass(vae_judge, small, monkeypatch, name):
    """a, F, R of uno's steps come from one uno.dot_norms per step, never from uno.dot."""
    counts = {"dot_norms": 0}
    real = uno.dot_norms

    def dot_norms_spy(*a, **kw):
        counts["dot_norms"] += 1
        return real(*a, **kw)

    def no_dot(*a, **kw):
        raise AssertionError("uno.dot called in a step")

    monkeypatch.setattr(uno, "dot_norms", dot_norms_spy)
    monkeypatch.setattr(uno, "dot", no_dot)
    task = _task(vae_judge, small, name)
    m = methods.create(name)
    for s in (1, 2):
        task.begin_step(s)
        m.direction(task, s)
    assert counts["dot_norms"] == 2
