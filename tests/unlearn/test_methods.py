"""Every method runs on tiny VAE and GAN models and moves the parameters the way its rule says."""

from __future__ import annotations

import copy

import pytest
import torch

from uno.unlearn import methods
from uno.unlearn.errors import UnoUserError
from uno.unlearn.methods.base import forget_retain_grads, grads
from uno.unlearn.methods.uno import uno_direction, uno_direction_naive
from uno.unlearn.models import DCGANGenerator, MLPJudge, MnistVAE
from uno.unlearn.tasks import GANTask, VAETask

#: every method but those that need the diffusion task (esd: tests/diffusion)
VAE_METHODS = sorted(n for n in methods.names() if "vae" in methods.create(n).models)


def _dot(a, b):
    return sum(float((x.double() * y.double()).sum()) for x, y in zip(a, b))


def _vae_task(vae_judge, small, **kw):
    vae, judge = vae_judge
    return VAETask(
        vae, judge, small[0], [1], batch=32, n_monitor=64, original=copy.deepcopy(vae), **kw
    )


@pytest.mark.parametrize("w_u", [0.0, 1e3])
@pytest.mark.parametrize("bn_train", [False, True])
@pytest.mark.parametrize("edges", [True, False])
def test_uno_fast_equals_double_backprop(small, monkeypatch, w_u, bn_train, edges):
    import uno.unlearn.methods.uno as uno_mod

    # edges=False: a torch whose backward() takes no gradient edges (in-place writes regenerate views)
    if not edges:
        monkeypatch.setattr(uno_mod, "_backward_takes_edges", lambda: False)
    torch.manual_seed(0)
    vae = MnistVAE(hidden=16).double()
    judge = MLPJudge(hidden=8).double()
    tr = small[0].subset(torch.arange(400))
    tr.x = tr.x.double()
    task = VAETask(vae, judge, tr, [1], batch=16, n_monitor=32, w_u=w_u, bn_train=bn_train)
    for lam in (1.0, 1e3):
        task.begin_step(3)
        fast, info = uno_direction(task, lam)
        task.begin_step(3)
        naive = uno_direction_naive(task, lam)
        scale = max(float(n.abs().max()) for n in naive)
        for f, n in zip(fast, naive):  # exact up to float64 rounding
            torch.testing.assert_close(f, n, rtol=1e-9, atol=1e-11 * scale)
        assert 0.0 < info.cos2 < 1.0


def test_uno_direction_restores_callers_grads(vae_judge, small):
    """The step accumulates in ``p.grad`` internally: the caller's grads come back untouched, the result
    does not alias them, and a second call on the same batch gives the same direction."""
    task = _vae_task(vae_judge, small)
    for p in task.params:
        p.grad = torch.full_like(p, 7.0)
    before = [p.grad for p in task.params]
    task.begin_step(2)
    d1, _ = uno_direction(task, 1e3)
    for p, g in zip(task.params, before):
        assert p.grad is g and bool((g == 7.0).all())
    assert all(d.data_ptr() != g.data_ptr() for d, g in zip(d1, before))
    task.begin_step(2)
    d2, _ = uno_direction(task, 1e3)
    for a, b in zip(d1, d2):
        torch.testing.assert_close(a, b)


class _ToyTask:
    """Duck-typed task: a term linear in ``b`` (its gradient is a constant expanded view, no graph), a
    shared histogram-like term U, float64."""

    def __init__(self, w_u: float, split: bool = True) -> None:
        g = torch.Generator().manual_seed(0)
        self.W = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
        self.b = torch.randn(3, generator=g, dtype=torch.float64, requires_grad=True)
        self.params = [self.W, self.b]
        self.w_u = w_u
        self.xf = torch.randn(5, 4, generator=g, dtype=torch.float64)
        self.xr = torch.randn(6, 4, generator=g, dtype=torch.float64)
        if split:
            self.ell_forget, self.ell_retain = self._ell_forget, self._ell_retain
            self.histogram_loss = self._u

        self.h: object = None  # a shared forward node when set (see refresh_shared)

    def refresh_shared(self):
        """One forward node that both losses use (as a task that caches a forward per step would)."""
        self.h = (self.W * 1.5).cos()

    def _ell_forget(self):
        W = self.W if self.h is None else self.W + self.h
        return (self.xf @ W).tanh().pow(2).sum() + 3.0 * self.b.sum()

    def _ell_retain(self):
        W = self.W if self.h is None else self.W * self.h
        return (self.xr @ W + self.b).sin().sum()

    def _u(self):
        W = self.W if self.h is None else self.W - self.h
        return 0.1 * (W.pow(3).sum() + self.b.exp().sum())

    def forget_loss(self, u_sign=1.0):
        return self._ell_forget() + u_sign * self.w_u * self._u()

    def retain_loss(self):
        return self._ell_retain() + self.w_u * self._u()


@pytest.mark.parametrize("w_u", [0.0, 2.0])
@pytest.mark.parametrize("split", [True, False])
@pytest.mark.parametrize("edges", [True, False])
def test_uno_direction_shared_term_and_layouts(monkeypatch, w_u, split, edges):
    """∇U taken once (split task) or inside both losses (task with only forget_loss/retain_loss), with
    and without gradient edges (older torch), a constant expanded gradient: all equal the naive form."""
    import uno.unlearn.methods.uno as uno_mod

    if not edges:
        monkeypatch.setattr(uno_mod, "_backward_takes_edges", lambda: False)
    task = _ToyTask(w_u, split)
    fast, info = uno_direction(task, 10.0)
    naive = uno_direction_naive(task, 10.0)
    for f, n in zip(fast, naive):
        torch.testing.assert_close(f, n, rtol=1e-10, atol=1e-12)
    lf = task.forget_loss()
    assert info.loss_f == pytest.approx(float(lf.detach()), rel=1e-12)
    assert all(p.grad is None for p in task.params)


@pytest.mark.parametrize("w_u", [0.0, 2.0])
@pytest.mark.parametrize("split", [True, False])
def test_uno_direction_shared_forward_node(w_u, split):
    """Losses that share a forward node: the forget half must keep its graph for the retain half (a
    backward through freed buffers would raise); the result equals the naive form."""
    from uno.unlearn.methods.uno import _shares_nodes

    task = _ToyTask(w_u, split=split)
    assert not _shares_nodes(task._ell_forget(), [task._ell_retain(), task._u()])
    task.refresh_shared()
    assert _shares_nodes(task._ell_forget(), [task._ell_retain()])
    assert _shares_nodes(task._ell_forget(), [task.b * 2, task._u()])  # any of the others
    task.refresh_shared()
    fast, _ = uno_direction(task, 10.0)
    task.refresh_shared()  # each step's graph is used once (the step frees it)
    naive = uno_direction_naive(task, 10.0)
    for f, n in zip(fast, naive):
        torch.testing.assert_close(f, n, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("hat_sign", [1.0, -1.0])
def test_forget_retain_grads_shared_term(hat_sign):
    task = _ToyTask(2.0)
    g_f, g_r, info = forget_retain_grads(task, hat_sign=hat_sign)
    ref_f = grads(task.forget_loss(u_sign=hat_sign), task.params)
    ref_r = grads(task.retain_loss(), task.params)
    for a, b in zip([*g_f, *g_r], [*ref_f, *ref_r]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert info.loss_f == pytest.approx(
        float(task.forget_loss(u_sign=hat_sign).detach()), rel=1e-12
    )


def test_uno_float32_close(vae_judge, small):
    task = _vae_task(vae_judge, small)
    task.begin_step(1)
    fast, _ = uno_direction(task, 1e3)
    task.begin_step(1)
    naive = uno_direction_naive(task, 1e3)
    num = sum(float((f - n).double().pow(2).sum()) for f, n in zip(fast, naive)) ** 0.5
    den = sum(float(n.double().pow(2).sum()) for n in naive) ** 0.5
    assert num / den < 1e-4


def _directions(task, name, step=1, **kw):
    m = methods.create(name, **kw)
    task.begin_step(0)
    m.setup(task)
    task.begin_step(step)
    d, info = m.direction(task, step)
    d = m.projected(d)  # what a projection method's optimizer steps along
    task.begin_step(step)
    g_f, g_r, _ = forget_retain_grads(task, hat_sign=-1.0 if "ascent" in name else 1.0)
    return d, info, [t.detach() for t in g_f], [t.detach() for t in g_r]


def test_surgery_orthogonal_to_gf(vae_judge, small):
    d, info, g_f, g_r = _directions(_vae_task(vae_judge, small), "surgery")
    assert abs(_dot(d, g_f)) <= 1e-5 * (_dot(d, d) * _dot(g_f, g_f)) ** 0.5
    # the removed part is along g_f: d − g_r ∥ g_f
    diff = [a - b for a, b in zip(d, g_r)]
    c2 = _dot(diff, g_f) ** 2 / (_dot(diff, diff) * _dot(g_f, g_f))
    assert c2 == pytest.approx(1.0, abs=1e-4)
    assert 0.0 <= info.cos2 <= 1.0


def test_surgery_ascent_orthogonal_to_gr(vae_judge, small):
    d, _, g_f, g_r = _directions(_vae_task(vae_judge, small), "surgery-ascent")
    assert abs(_dot(d, g_r)) <= 1e-5 * (_dot(d, d) * _dot(g_r, g_r)) ** 0.5
    assert _dot(d, g_f) < 0  # ascent on the forget loss


def test_ascent_and_retain(vae_judge, small):
    task = _vae_task(vae_judge, small)
    d, _, g_f, _ = _directions(task, "ascent")
    for a, b in zip(d, g_f):
        torch.testing.assert_close(a, -b)
    d, _, _, _ = _directions(task, "retain")
    task.begin_step(1)  # retain draws only the retain loss's noise
    g_r = grads(task.retain_loss(), task.params)
    for a, b in zip(d, g_r):
        torch.testing.assert_close(a, b)


def test_alternating_methods(vae_judge, small):
    task = _vae_task(vae_judge, small)
    d1, _, g_f, _ = _directions(task, "ascent-descent", step=1)
    for a, b in zip(d1, g_f):
        torch.testing.assert_close(a, -b)
    d2, _, g_f2, _ = _directions(task, "ascent-descent", step=2)
    assert abs(_dot(d2, g_f2)) <= 1e-5 * (_dot(d2, d2) * _dot(g_f2, g_f2)) ** 0.5
    d3, _, g_f3, _ = _directions(task, "uno-s", step=2)
    assert abs(_dot(d3, g_f3)) <= 1e-5 * (_dot(d3, d3) * _dot(g_f3, g_f3)) ** 0.5
    task.begin_step(1)
    ref, _ = uno_direction(task, 1e3)
    d4, _, _, _ = _directions(task, "uno-s", step=1)
    for a, b in zip(d4, ref):
        torch.testing.assert_close(a, b)


def test_uno_subspace_orthogonal_to_retain_micro_batches(vae_judge, small):
    task = _vae_task(vae_judge, small)
    m = methods.create("uno-subspace", k=4, retain_weight=0.0)
    task.begin_step(1)
    d, info = m.direction(task, 1)
    d = m.projected(d)
    assert info.extra["k"] == 4
    task.begin_step(1)
    task.forget_loss()  # same noise draws as in the step
    for c in task.retain_loss_chunks(4):
        g = grads(c, task.params)
        assert abs(_dot(d, g)) <= 1e-4 * (_dot(d, d) * _dot(g, g)) ** 0.5


def test_salun_mask_and_clip(vae_judge, small):
    task = _vae_task(vae_judge, small)
    m = methods.create("salun")
    task.begin_step(0)
    m.setup(task)
    frac = sum(float(x.sum()) for x in m.mask) / sum(x.numel() for x in m.mask)
    assert 0.4 < frac <= 0.75  # about half of the parameters (ties at the median go in)
    task.begin_step(1)
    d, _ = m.direction(task, 1)
    assert _dot(d, d) ** 0.5 <= 5.0 + 1e-4
    for x, mk in zip(d, m.mask):
        assert float(x[mk == 0].abs().sum()) == 0.0


def test_registry():
    names = methods.names()
    for n in [
        "uno",
        "uno-s",
        "surgery",
        "surgery-ascent",
        "ascent",
        "ascent-descent",
        "retain",
        "fu",
        "salun",
        "uno-subspace",
        "uno-hat",
        "surgery-hat",
        "ascent-hat",
        "retain-hat",
    ]:
        assert n in names
    with pytest.raises(UnoUserError, match="unknown method"):
        methods.create("nope")
    assert methods.create("uno-hat").hat


def _two_adam_steps(task, m):
    """``m.setup`` then steps 1 and 2 with ``m``'s optimizer on its directions, as the run loop does."""
    opt = m.optimizer(task.params, 1e-3)
    task.begin_step(0)
    m.setup(task)
    for s in (1, 2):
        task.begin_step(s)
        d, _ = m.direction(task, s)
        for p, g in zip(task.params, d):
            p.grad = g
        m.step(opt)


@pytest.mark.parametrize("name", VAE_METHODS)
def test_every_method_runs_on_vae(vae_judge, small, name):
    task = _vae_task(vae_judge, small, w_u=1e3 if name.endswith("-hat") else 0.0)
    before = [p.detach().clone() for p in task.params]
    _two_adam_steps(task, methods.create(name))
    assert all(torch.isfinite(p).all() for p in task.params)
    assert any(not torch.equal(a, p) for a, p in zip(before, task.params))


@pytest.fixture(scope="module")
def gan_setup():
    torch.manual_seed(0)
    gen = DCGANGenerator(latent=8, width=8)
    judge = MLPJudge(hidden=16)
    with torch.no_grad():
        # make the untrained judge's decisions depend on the (nearly constant) image: centre and scale
        x = gen.eval()(torch.randn(512, 8))
        judge.fc1.weight.mul_(100.0)
        judge.fc1.bias.copy_(-judge.fc1.weight @ x.mean(0).flatten())
        pred = judge(x).argmax(1)
    counts = torch.bincount(pred, minlength=10)
    target = int(torch.argmin((counts - 256).abs()))
    assert 0 < int(counts[target]) < 512
    return gen, judge, target


@pytest.mark.parametrize(
    "name",
    [
        "uno",
        "uno-hat",
        "surgery",
        "surgery-ascent",
        "ascent",
        "retain",
        "uno-subspace",
        "fu",
        "salun",
        "uno-s",
    ],
)
def test_every_method_runs_on_gan(gan_setup, name):
    gen, judge, target = gan_setup
    g = copy.deepcopy(gen)
    task = GANTask(
        g,
        judge,
        [target],
        original=copy.deepcopy(gen),
        batch=16,
        n_monitor=32,
        pool=512,
        w_u=1e3 if name.endswith("-hat") else 0.0,
    )
    f0 = task.forget_fraction()  # setup changes no parameter: the original's fraction
    _two_adam_steps(task, methods.create(name))
    assert all(torch.isfinite(p).all() for p in task.params)
    assert 0.0 <= task.forget_fraction() <= 1.0 and f0 > 0


def test_methods_own_their_hyperparameters():
    from uno.unlearn.config import RunConfig
    from uno.unlearn.errors import UnoUserError
    from uno.unlearn.methods.base import Method

    cfg = RunConfig(method="uno", lam=7.0, k=3)
    assert methods.from_config(cfg).lam == 7.0
    assert methods.from_config(RunConfig(method="uno-s-hat", lam=7.0)).lam == 7.0
    sub = methods.from_config(RunConfig(method="uno-subspace", k=3))
    assert (sub.k, sub.retain_weight) == (3, 1.0)
    assert methods.from_config(RunConfig(method="fu")).alpha == 3.0  # no flag: the default
    assert methods.from_config(RunConfig(method="surgery", lam=7.0, k=3)).hparams == {}
    assert methods.create("salun", clip=2.0).clip == 2.0

    class OwnConstructor(Method):  # the older style (bench/paper_uno_step.py): keywords of __init__
        def __init__(self, hat=False, lam=1.0, **kw):
            super().__init__(hat=hat, **kw)
            self.lam = lam

    assert OwnConstructor.options(cfg) == {"lam": 7.0}
    with pytest.raises(UnoUserError, match="unknown method 'nope'"):
        methods.from_config(RunConfig(method="nope"))
