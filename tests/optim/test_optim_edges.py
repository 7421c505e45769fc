"""uno.optim on the edges a real training loop reaches: parameters without a gradient (an unused head
after ``zero_grad()``) and non-finite gradient elements, every backend, both projection modes."""

from __future__ import annotations

import copy
import importlib
from typing import Any, List, Tuple

import pytest
import torch

import uno
from backend_params import BACKEND_DEVICES
from uno.optim import ProjectedAdam, ProjectedSGD

CPU_BACKENDS = [p for p in BACKEND_DEVICES if p.values[1] == "cpu"]

# (id, uno class, torch class, kwargs accepted by both)
OPTS: List[Any] = [
    ("sgd", ProjectedSGD, torch.optim.SGD, dict(lr=0.05)),
    ("sgd-mom-wd", ProjectedSGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9, weight_decay=0.01)),
    ("adam", ProjectedAdam, torch.optim.Adam, dict(lr=1e-2)),
    (
        "adam-ams-wd",
        ProjectedAdam,
        torch.optim.Adam,
        dict(lr=1e-2, amsgrad=True, weight_decay=0.05),
    ),
]
OPT_IDS = [o[0] for o in OPTS]


class TwoHeads(torch.nn.Module):
    """The issue's repro: a trunk Linear(20, 64) and two heads Linear(64, 1)."""

    def __init__(self, dtype: torch.dtype, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.trunk = torch.nn.Linear(20, 64)
        self.heads = torch.nn.ModuleList([torch.nn.Linear(64, 1), torch.nn.Linear(64, 1)])
        self.to(dtype)

    def loss(self, head: int, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        p = next(self.parameters())
        x = torch.randn(32, 20, generator=g, dtype=p.dtype)
        y = torch.randn(32, 1, generator=g, dtype=p.dtype)
        return torch.nn.functional.mse_loss(self.heads[head](torch.tanh(self.trunk(x))), y)


def random_basis(params: List[torch.Tensor], k: int, seed: int = 5) -> uno.Basis:
    g = torch.Generator().manual_seed(seed)
    vecs = [[torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params] for _ in range(k)]
    return uno.orthonormalize(vecs, backend="reference")


def flat(params: List[torch.Tensor]) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).to(torch.float64) for p in params])


def restricted(basis: uno.Basis, keep: List[int]) -> uno.Basis:
    """The basis restricted to the parameters ``keep`` and re-orthonormalised there (the spec)."""
    vecs = [[basis.vector(j)[i] for i in keep] for j in range(basis.k)]
    return uno.orthonormalize(vecs, backend="reference")


# ---------------------------------------------------------------------------------------------------
# .grad is None: project within the parameters that are updated.
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend,device", CPU_BACKENDS)
@pytest.mark.parametrize("k", [1, 4])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-11), (torch.float32, 2e-5)])
@pytest.mark.parametrize(
    "cls,kw,project",
    [
        (ProjectedSGD, dict(lr=0.05, momentum=0.9), "grad"),
        (ProjectedSGD, dict(lr=0.05, momentum=0.9, weight_decay=0.01), "update"),
        (ProjectedAdam, dict(lr=1e-2, weight_decay=0.01), "update"),
    ],
    ids=["sgd-grad", "sgd-update", "adam-update"],
)
def test_step_orthogonal_with_an_unused_head(backend, device, k, dtype, tol, cls, kw, project):
    """The issue's repro: before the fix, relative <dp, q_j> was ~1e-3 per step (one head unused);
    now it is at rounding level, over a two-task loop (the unused head changes between tasks)."""
    model = TwoHeads(dtype)
    params = list(model.parameters())
    basis = random_basis(params, k)
    opt = cls(params, **kw, project=project, basis=basis, backend=backend)
    q = basis.buffer[: basis.k].to(torch.float64)
    n_steps = 2 if backend == "triton" else 6
    for task in (0, 1):
        for s in range(n_steps):
            opt.zero_grad()
            model.loss(task, seed=10 * task + s).backward()
            assert model.heads[1 - task].weight.grad is None
            before = flat(params)
            opt.step()
            dp = flat(params) - before
            assert float(dp.norm()) > 0
            assert float((q @ dp).abs().max()) <= tol * float(dp.norm())
        # the next task starts with fresh momentum (its directions need not be in the new complement)
        opt.state.clear()


@pytest.mark.parametrize("backend,device", CPU_BACKENDS)
@pytest.mark.parametrize("opt", OPTS, ids=OPT_IDS)
@pytest.mark.parametrize("project", ["grad", "update"])
def test_unused_head_matches_composition_on_the_subset(backend, device, opt, project):
    """``"grad"``: uno.project_ on the subset's gradients with the restricted basis, then torch.optim
    over the subset. ``"update"``: torch.optim's step over the subset, projected by uno.project_.
    The unused head keeps its values and its (possibly empty) state."""
    _, ucls, tcls, kw = opt
    m_uno = TwoHeads(torch.float64)
    m_ref = copy.deepcopy(m_uno)
    p_uno, p_ref = list(m_uno.parameters()), list(m_ref.parameters())
    basis = random_basis(p_uno, 3)
    keep = [0, 1, 2, 3]  # trunk weight, bias; head 0 weight, bias (head 1 has no gradient)
    sub = restricted(basis, keep)
    o_uno = ucls(p_uno, **kw, project=project, basis=basis, backend=backend)
    o_ref = tcls([p_ref[i] for i in keep], **kw)
    head1 = [p.detach().clone() for p in p_uno[4:]]
    for s in range(2 if backend == "triton" else 5):
        for m, o in ((m_uno, o_uno), (m_ref, o_ref)):
            o.zero_grad()
            m.loss(0, seed=s).backward()
        o_uno.step()
        if project == "grad":
            uno.project_([p_ref[i].grad for i in keep], sub, backend="reference")
            o_ref.step()
        else:
            before = [p_ref[i].detach().clone() for i in keep]
            o_ref.step()
            with torch.no_grad():
                delta = [p_ref[i] - b for i, b in zip(keep, before)]
                uno.project_(delta, sub, backend="reference")
                for i, b, d in zip(keep, before, delta):
                    p_ref[i].copy_(b + d)
    for i in keep:
        torch.testing.assert_close(p_uno[i], p_ref[i], rtol=1e-9, atol=1e-11)
    for p, h in zip(p_uno[4:], head1):
        assert torch.equal(p, h)
        assert len(o_uno.state[p]) == 0


@pytest.mark.parametrize("backend,device", CPU_BACKENDS)
@pytest.mark.parametrize("cls", [ProjectedSGD, ProjectedAdam])
def test_all_grads_none_is_a_no_op_and_rank_zero_is_unprojected(backend, device, cls):
    model = TwoHeads(torch.float64)
    params = list(model.parameters())
    # every basis vector lives on head 1 only: restricted to trunk + head 0 it vanishes (rank 0)
    g = torch.Generator().manual_seed(2)
    vecs = [
        [torch.zeros_like(p) if i < 4 else torch.randn(p.shape, generator=g, dtype=p.dtype)
         for i, p in enumerate(params)]
        for _ in range(2)
    ]  # fmt: skip
    basis = uno.orthonormalize(vecs, backend="reference")
    opt = cls(params, lr=1e-2, project="update", basis=basis, backend=backend)
    before = [p.detach().clone() for p in params]
    opt.zero_grad()
    opt.step()  # no gradient at all
    assert all(torch.equal(a, b) for a, b in zip(params, before)) and len(opt.state) == 0
    ref = copy.deepcopy(model)
    tref = (torch.optim.SGD if cls is ProjectedSGD else torch.optim.Adam)(
        list(ref.parameters())[:4], lr=1e-2
    )
    for m, o in ((model, opt), (ref, tref)):
        o.zero_grad()
        m.loss(0, seed=1).backward()
        o.step()
    for a, b in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_restricted_basis_is_cached_until_the_set_or_the_basis_changes(monkeypatch):
    orth = importlib.import_module("uno.ops.orthonormalize")  # the package re-exports the function
    calls = []
    real = orth.orthonormalize

    def counting(*a: Any, **k: Any) -> uno.Basis:
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(orth, "orthonormalize", counting)
    model = TwoHeads(torch.float64)
    params = list(model.parameters())
    basis = random_basis(params, 2)
    opt = ProjectedSGD(params, lr=1e-2, basis=basis, backend="reference")

    def step(head: int) -> None:
        opt.zero_grad()
        model.loss(head, seed=0).backward()
        opt.step()

    for _ in range(3):
        step(0)
    assert len(calls) == 1  # one re-orthonormalisation for three steps over the same set
    step(1)
    assert len(calls) == 2  # another set of parameters
    basis.append_([torch.randn_like(p) for p in params])
    step(1)
    assert len(calls) == 3  # the basis grew
    opt.zero_grad()
    sum(model.loss(h, seed=0) for h in (0, 1)).backward()
    opt.step()
    assert len(calls) == 3  # every parameter has a gradient: the full basis, nothing to redo


# ---------------------------------------------------------------------------------------------------
# Non-finite gradient elements: only those elements go non-finite, as in torch.optim.
# ---------------------------------------------------------------------------------------------------
def small_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))


def backward(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(16, 5, generator=g), torch.randn(16, 3, generator=g)
    model.zero_grad()
    torch.nn.functional.mse_loss(model(x), y).backward()


def _poison(model: torch.nn.Module, value: float) -> Tuple[int, int]:
    w = model[0].weight.grad
    w[2, 3] = value
    return 2, 3


@pytest.mark.parametrize("backend,device", CPU_BACKENDS)
@pytest.mark.parametrize("opt", OPTS, ids=OPT_IDS)
@pytest.mark.parametrize("project", ["grad", "update"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_grad_element_stays_local(backend, device, opt, project, bad):
    """One nan/inf gradient element: ``"grad"`` is exactly uno.project_ (which leaves a non-finite
    grad untouched) + torch.optim, ``"update"`` the stock step; every other element stays finite.
    Before the fix a nan coefficient was broadcast into every parameter."""
    _, ucls, tcls, kw = opt
    m_uno, m_ref = small_model(), small_model()
    params = list(m_uno.parameters())
    basis = random_basis(params, 2)
    o_uno = ucls(params, **kw, project=project, basis=basis, backend=backend)
    o_ref = tcls(m_ref.parameters(), **kw)
    n_good = 1 if backend == "triton" else 3
    for s in range(n_good + 1):
        for m in (m_uno, m_ref):
            backward(m, seed=s)
            if s == n_good:
                _poison(m, bad)
        if project == "grad":  # a no-op on the poisoned step: project_ leaves a non-finite grad
            uno.project_([p.grad for p in m_ref.parameters()], basis, backend="reference")
        if project == "update" and s < n_good:
            before = [p.detach().clone() for p in m_ref.parameters()]
            o_ref.step()
            with torch.no_grad():
                delta = [p - b for p, b in zip(m_ref.parameters(), before)]
                uno.project_(delta, basis, backend="reference")
                for p, b, d in zip(m_ref.parameters(), before, delta):
                    p.copy_(b + d)
        else:
            o_ref.step()
        o_uno.step()
    bad_mask = ~torch.isfinite(m_ref[0].weight)
    assert int(bad_mask.sum()) == 1
    for a, b in zip(m_uno.parameters(), m_ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, equal_nan=True)
    assert torch.equal(~torch.isfinite(m_uno[0].weight), bad_mask)
    for p in list(m_uno.parameters())[1:]:
        assert bool(torch.isfinite(p).all())


# ---------------------------------------------------------------------------------------------------
# Expanded (stride-0) gradients, as autograd leaves them for the sum() of a broadcast.
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend,device", CPU_BACKENDS)
@pytest.mark.parametrize("cls", [ProjectedSGD, ProjectedAdam])
@pytest.mark.parametrize("project", ["grad", "update"])
def test_expanded_grad_is_read_and_refused_for_write_grad(backend, device, cls, project):
    def run(expanded: bool, write_grad: bool = False) -> Tuple[List[torch.Tensor], Any]:
        model = small_model()
        backward(model, seed=0)
        params = list(model.parameters())
        b = params[3]
        g = torch.full((1,), 0.25).expand(b.shape)
        b.grad = g if expanded else g.contiguous()
        opt = cls(params, lr=1e-2, basis=random_basis(params, 2), project=project,
                  write_grad=write_grad, backend=backend)  # fmt: skip
        return params, opt

    ref, o_ref = run(expanded=False)
    got, o_got = run(expanded=True)
    o_ref.step()
    o_got.step()
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    params, opt = run(expanded=True, write_grad=True)
    before = [p.detach().clone() for p in params]
    with pytest.raises(ValueError, match=r"grad 3 .*expanded/overlapping memory cannot be written"):
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(params, before))
    assert len(opt.state) == 0


def test_functional_steps_refuse_tensors_of_an_autograd_graph():
    """The functional steps write leaf parameters in grad mode (as in test_functional_forms), but a
    non-leaf parameter or state of a graph would be written behind autograd's back: refused before
    anything moves, and written under ``torch.no_grad()``."""
    w = torch.randn(6, requires_grad=True)
    p = w * 1.0  # a non-leaf "parameter"
    g = torch.randn(6)
    snap = p.detach().clone()
    with pytest.raises(RuntimeError, match=r"parameter 0 is part of an autograd graph"):
        uno.project_sgd_([p], [g], [None], lr=0.1)
    ea = torch.zeros(6, requires_grad=True) * 1.0
    leaf = torch.randn(6, requires_grad=True)
    leaf_snap = leaf.detach().clone()
    args = ([leaf], [g], [ea], [torch.zeros(6)], [], [torch.zeros(())])
    with pytest.raises(RuntimeError, match=r"exp_avgs\[0\] is part of an autograd graph"):
        uno.project_adam_(*args, lr=0.1)
    assert torch.equal(p.detach(), snap) and torch.equal(leaf.detach(), leaf_snap)
    assert not ea.detach().any()
    uno.project_sgd_([leaf], [g], [None], lr=0.1)  # a leaf parameter in grad mode: stepped
    assert torch.allclose(leaf.detach(), leaf_snap - 0.1 * g)
    with torch.no_grad():
        uno.project_sgd_([p], [g], [None], lr=0.1)
    assert torch.allclose(p.detach(), snap - 0.1 * g)
