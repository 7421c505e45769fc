"""The cached step plan (uno.optim._plan): bit-identical to the uncached step, and rebuilt whenever
what it depends on changes (each invalidation tested against an optimizer that never caches)."""

from __future__ import annotations

import copy
from typing import Any, Callable, Dict, List, Tuple

import pytest
import torch

import uno
from uno.optim import ProjectedAdam, ProjectedSGD

pytestmark = pytest.mark.skipif(
    "cpu" not in uno._backends.info("cpu").devices, reason="built without the cpu kernels"
)

SHAPES = [(7, 5), (7,), (3, 7), (3,), (11,), (2, 3, 4)]
OPTS: Dict[str, Tuple[Any, Dict[str, Any]]] = {
    "adam": (ProjectedAdam, dict(lr=1e-2)),
    "adam-update-ams-wd": (
        ProjectedAdam,
        dict(lr=1e-2, amsgrad=True, weight_decay=0.05, project="update", maximize=True),
    ),
    "adamw": (ProjectedAdam, dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True)),
    "sgd-mom": (ProjectedSGD, dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01)),
    "sgd-nesterov-update": (
        ProjectedSGD,
        dict(lr=0.05, momentum=0.9, nesterov=True, project="update"),
    ),
    "sgd-plain": (ProjectedSGD, dict(lr=0.05)),
}


def params(seed: int = 0, dtype=torch.float32) -> List[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=dtype)) for s in SHAPES]


def basis_over(ps, k: int = 2, seed: int = 5):
    gen = torch.Generator().manual_seed(seed)
    return uno.orthonormalize(
        [[torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in ps] for _ in range(k)]
    )


def set_grads(ps, step: int) -> None:
    gen = torch.Generator().manual_seed(100 + step)
    for p in ps:
        p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype)


class Spy:
    """Counts the uncached builds (``_group_calls``) of an optimizer."""

    def __init__(self, opt) -> None:
        self.builds = 0
        inner = opt._group_calls

        def counted(g):
            self.builds += 1
            return inner(g)

        opt._group_calls = counted


def uncached(opt):
    """Make ``opt`` never reuse a plan (the reference: every step built from scratch)."""
    step = opt.step

    def fresh(*a, **kw):
        opt._plan = None
        return step(*a, **kw)

    opt.step = fresh
    return opt


def pair(name: str, with_basis: bool = True):
    cls, kw = OPTS[name]
    pa, pb = params(), params()
    ka = dict(kw, basis=basis_over(pa)) if with_basis else dict(kw)
    kb = dict(kw, basis=basis_over(pb)) if with_basis else dict(kw)
    return pa, cls(pa, **ka), pb, uncached(cls(pb, **kb))


def assert_same(pa, oa, pb, ob) -> None:
    for x, y in zip(pa, pb):
        assert torch.equal(x, y)
    for x, y in zip(pa, pb):
        sa, sb = oa.state.get(x, {}), ob.state.get(y, {})
        assert sorted(sa) == sorted(sb)
        for key in sa:
            assert torch.equal(torch.as_tensor(sa[key]), torch.as_tensor(sb[key])), key


def run(pa, oa, pb, ob, steps: range, threads: int = 1) -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for s in steps:
            set_grads(pa, s)
            set_grads(pb, s)
            oa.step()
            ob.step()
    finally:
        torch.set_num_threads(before)
    assert_same(pa, oa, pb, ob)


@pytest.mark.parametrize("name", list(OPTS))
@pytest.mark.parametrize("with_basis", [True, False], ids=["basis", "plain"])
@pytest.mark.parametrize("threads", [1, 2])
def test_cached_steps_bit_identical(name, with_basis, threads):
    pa, oa, pb, ob = pair(name, with_basis)
    spy = Spy(oa)
    run(pa, oa, pb, ob, range(6), threads)
    # built on the steps that create state (first: SGD momentum buffers, Adam states) and the next
    assert spy.builds <= 2
    assert oa._plan is not None


def test_same_grad_objects_reused_and_amp_scale():
    """Gradients written in place (zero_grad(set_to_none=False)) and a grad_scale; a CPU found_inf
    of 1 skips everything (step counts too) on a cached step."""
    pa, oa, pb, ob = pair("adam")
    run(pa, oa, pb, ob, range(3))
    for s in range(3, 6):
        for x, y in zip(pa, pb):
            x.grad.mul_(1.5).add_(0.1 * s)
            y.grad.mul_(1.5).add_(0.1 * s)
        gs = torch.tensor(4.0)
        oa.step(grad_scale=gs)
        ob.step(grad_scale=gs)
    assert_same(pa, oa, pb, ob)
    snap = [x.detach().clone() for x in pa]
    steps = [oa.state[x]["step"].clone() for x in pa]
    oa.step(found_inf=torch.tensor(1.0))
    assert all(torch.equal(x, y) for x, y in zip(pa, snap))
    assert all(torch.equal(oa.state[x]["step"], s) for x, s in zip(pa, steps))


def _both(fn: Callable[[Any, Any], None]):
    def apply(pa, oa, pb, ob):
        fn(pa, oa)
        fn(pb, ob)

    return apply


def _lr(ps, opt):
    opt.param_groups[0]["lr"] = 3e-3


def _betas(ps, opt):
    opt.param_groups[0]["betas"] = (0.5, 0.9)


def _amsgrad(ps, opt):
    opt.param_groups[0]["amsgrad"] = True


def _project(ps, opt):
    opt.project = "update"


def _state_replaced(ps, opt):
    opt.state[ps[2]]["exp_avg"] = torch.full_like(ps[2], 0.25)


def _state_dict_copied(ps, opt):
    opt.state[ps[1]] = dict(opt.state[ps[1]])  # the same entries in a new dict


def _state_entry_added(ps, opt):
    opt.state[ps[4]]["note"] = torch.zeros(())  # one more entry (the step ignores it)


def _state_reloaded(ps, opt):
    opt.load_state_dict(copy.deepcopy(opt.state_dict()))


def _group_params(ps, opt):
    opt.param_groups[0]["params"] = list(reversed(opt.param_groups[0]["params"]))
    opt.set_basis(basis_over(opt.param_groups[0]["params"]))


def _new_group(ps, opt):
    extra = torch.nn.Parameter(torch.full((4,), 0.5))
    opt.add_param_group({"params": [extra], "lr": 1e-3})
    opt.set_basis(None)
    ps.append(extra)


def _param_data(ps, opt):
    ps[1].data = ps[1].data.clone() * 0.5  # a new storage behind the same Parameter


def _dtype(ps, opt):
    for p in ps:
        p.data = p.data.double()
    opt.set_basis(basis_over(ps))


def _basis_grows(ps, opt):
    gen = torch.Generator().manual_seed(9)
    opt.basis.append_([torch.randn(p.shape, generator=gen) for p in ps])


def _basis_content(ps, opt):
    opt.basis.buffer.mul_(-1.0)  # same pointers, other values: the full rows are re-read


def _no_grad(ps, opt):
    opt._test_skip = 3  # see grads_for: parameter 3 has no gradient from now on


MUTATIONS = {
    "lr": _lr,
    "betas": _betas,
    "amsgrad": _amsgrad,
    "project": _project,
    "state-replaced": _state_replaced,
    "state-dict-copied": _state_dict_copied,
    "state-entry-added": _state_entry_added,
    "state-reloaded": _state_reloaded,
    "group-params": _group_params,
    "new-group": _new_group,
    "param-data": _param_data,
    "dtype": _dtype,
    "basis-grows": _basis_grows,
    "basis-content": _basis_content,
    "no-grad": _no_grad,
}
# the uncached builds (group calls) each change costs: one step, or two where that step makes or
# converts state (amsgrad's max_exp_avg_sq, float64 states), two groups for new-group
REBUILDS = {"project": 1, "state-replaced": 1, "state-dict-copied": 1, "state-entry-added": 1,
            "state-reloaded": 1, "group-params": 1,
            "param-data": 1, "basis-grows": 1, "no-grad": 1, "amsgrad": 2, "dtype": 2,
            "new-group": 4}  # fmt: skip


@pytest.mark.parametrize("what", list(MUTATIONS))
def test_invalidation(what):
    """Each change between steps gives the uncached step's result; the structural ones rebuild."""
    pa, oa, pb, ob = pair("adam")
    run(pa, oa, pb, ob, range(3))
    spy = Spy(oa)
    _both(MUTATIONS[what])(pa, oa, pb, ob)
    skip = getattr(oa, "_test_skip", None)
    for s in range(3, 6):
        set_grads(pa, s)
        set_grads(pb, s)
        if skip is not None:
            pa[skip].grad = pb[skip].grad = None
        oa.step()
        ob.step()
    assert_same(pa, oa, pb, ob)
    assert spy.builds == REBUILDS.get(what, 0)


def test_sgd_momentum_switched_on():
    pa, oa, pb, ob = pair("sgd-plain")
    run(pa, oa, pb, ob, range(3))
    for o in (oa, ob):
        o.param_groups[0]["momentum"] = 0.9
    run(pa, oa, pb, ob, range(3, 6))


def test_shared_step_counter():
    """Adam step counters shared by two parameters: the plan leaves the kernels' in-place increment
    off (each counter is then counted once per piece, as the uncached step does)."""
    pa, oa, pb, ob = pair("adam")
    run(pa, oa, pb, ob, range(2))
    for ps, o in ((pa, oa), (pb, ob)):
        o.state[ps[1]]["step"] = o.state[ps[0]]["step"]
    run(pa, oa, pb, ob, range(2, 5))
    assert oa._plan is not None and not oa._plan.pending


def test_bad_grad_on_cached_step_raises_and_writes_nothing():
    pa, oa, _, _ = pair("adam")
    for s in range(3):
        set_grads(pa, s)
        oa.step()
    assert oa._plan is not None
    set_grads(pa, 3)
    pa[2].grad.data = torch.randn(5)  # .data skips autograd's shape check
    snap = [p.detach().clone() for p in pa]
    with pytest.raises(ValueError, match="grad 2 has shape"):
        oa.step()
    assert all(torch.equal(p, q) for p, q in zip(pa, snap))
    pa[2].grad.data = torch.randn(pa[2].shape, dtype=torch.float64)
    with pytest.raises(TypeError, match="grad 2 has dtype"):
        oa.step()
    assert all(torch.equal(p, q) for p, q in zip(pa, snap))


def test_non_contiguous_grad_takes_the_uncached_step():
    pa, oa, pb, ob = pair("adam")
    run(pa, oa, pb, ob, range(3))
    for s in range(3, 5):
        set_grads(pa, s)
        set_grads(pb, s)
        for ps in (pa, pb):
            ps[0].grad = ps[0].grad.t().contiguous().t()  # (7, 5) with transposed strides
        oa.step()
        ob.step()
    assert_same(pa, oa, pb, ob)


def test_bad_hyperparameter_on_cached_step():
    pa, oa, _, _ = pair("adam")
    for s in range(3):
        set_grads(pa, s)
        oa.step()
    oa.param_groups[0]["lr"] = -1.0
    snap = [p.detach().clone() for p in pa]
    with pytest.raises(ValueError, match="learning rate"):
        oa.step()
    assert all(torch.equal(p, q) for p, q in zip(pa, snap))


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd-mom"])
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_fused_grad_write_loop_bit_identical(name, k, dtype):
    """The write phase's fused loop (project="grad", no grad_scale: csrc/cpu/optim_step.cpp
    block_proj_grad) against the general loop it replaces, which a grad_scale of exactly 1 takes
    (dividing by 1 is exact): bit-identical parameters and states."""
    cls, kw = OPTS[name]
    pa, pb = params(dtype=dtype), params(dtype=dtype)
    bt = torch.float32 if dtype == torch.bfloat16 else dtype
    ba = uno.orthonormalize([[torch.randn(p.shape, dtype=bt) for p in pa] for _ in range(k)])
    oa, ob = cls(pa, basis=ba, **kw), cls(pb, basis=ba, **kw)
    one = torch.tensor(1.0)
    for s in range(4):
        set_grads(pa, s)
        set_grads(pb, s)
        oa.step()
        ob.step(grad_scale=one)
    assert_same(pa, oa, pb, ob)


def test_load_state_dict_and_set_basis_drop_the_plan():
    """The plan holds the states and basis rows it points at: loading a state or setting a basis drops
    it at once, so the old tensors are not kept alive until the next step."""
    pa, oa, _, _ = pair("adam")
    for s in range(3):
        set_grads(pa, s)
        oa.step()
    assert oa._plan is not None
    oa.load_state_dict(copy.deepcopy(oa.state_dict()))
    assert oa._plan is None
    set_grads(pa, 3)
    oa.step()
    set_grads(pa, 4)
    oa.step()
    assert oa._plan is not None
    oa.set_basis(basis_over(pa))
    assert oa._plan is None
