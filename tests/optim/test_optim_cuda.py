"""The projected optimizer steps on the CUDA backend (``-m gpu``; skipped without CUDA).

One ``ProjectedAdam`` step with a basis of k <= 16 rows over <= 256 pieces is at most 2 GPU operations
(the coefficients with their reduction folded in, then the write with the step-count increment folded
in); the fallbacks (k > 16, more than 256 pieces) are bounded too. A step makes no host
synchronisation, is bitwise deterministic, agrees with the reference backend, moves nothing when
``found_inf`` is set, and replays in a CUDA graph exactly as eager steps run.
"""

from __future__ import annotations

import pytest
import torch

import uno
from uno.optim import ProjectedAdam, ProjectedSGD

pytestmark = pytest.mark.gpu

SHAPES = [(512, 256), (256,), (1000, 10), (10,)] + [(((i * 37) % 300) + 1,) for i in range(150)]
SHAPES300 = [(((i * 37) % 300) + 1,) for i in range(299)] + [(3000, 7)]  # 2 launch groups


def _params(shapes, seed=0):
    """CUDA parameters with fixed gradients (the same for the same seed)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for s in shapes:
        p = torch.randn(s, generator=g).cuda().requires_grad_()
        p.grad = torch.randn(s, generator=g).cuda()
        out.append(p)
    return out


def _basis(shapes, k, seed=1):
    g = torch.Generator().manual_seed(seed)
    return uno.orthonormalize(
        [[torch.randn(s, generator=g).cuda() for s in shapes] for _ in range(k)]
    )


def _gpu_ops_per_step(opt):
    """Names of the GPU operations (kernels, memsets, memcpys) of one step after a warm-up step."""
    from torch.profiler import ProfilerActivity, profile

    opt.step()  # the states and this stream's counter exist after it
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        opt.step()
        torch.cuda.synchronize()
    return [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]


#: name → (optimizer class, keyword arguments, shapes, k, most GPU operations per step)
LAUNCHES = {
    "adam k=1 grad": (ProjectedAdam, {}, SHAPES, 1, 2),
    "adam k=4 grad": (ProjectedAdam, {}, SHAPES, 4, 2),
    "adam k=4 update amsgrad": (ProjectedAdam, dict(project="update", amsgrad=True), SHAPES, 4, 2),
    "adamw k=16 update": (
        ProjectedAdam,
        dict(project="update", weight_decay=0.1, decoupled_weight_decay=True),
        SHAPES,
        16,
        2,
    ),
    "adam no basis": (ProjectedAdam, {}, SHAPES, 0, 1),
    "sgd momentum k=4": (ProjectedSGD, dict(momentum=0.9), SHAPES, 4, 2),
    "fallback adam k=32 (2 row tiles)": (ProjectedAdam, {}, SHAPES, 32, 3),
    "fallback adam k=4 300 pieces (2 groups)": (ProjectedAdam, {}, SHAPES300, 4, 4),
}


@pytest.mark.parametrize("case", sorted(LAUNCHES))
def test_gpu_operations_per_step(case):
    cls, kw, shapes, k, most = LAUNCHES[case]
    basis = _basis(shapes, k) if k else None
    names = _gpu_ops_per_step(cls(_params(shapes), lr=1e-3, basis=basis, backend="cuda", **kw))
    assert len(names) <= most, sorted({n[:70] for n in names})


@pytest.mark.parametrize("project", ["grad", "update"])
def test_no_host_sync(project):
    """Sync debug mode "error" raises on any synchronising call inside the steps."""
    opt = ProjectedAdam(
        _params(SHAPES), lr=1e-3, project=project, basis=_basis(SHAPES, 4), backend="cuda"
    )
    opt.step()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        opt.step()
        opt.step()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()


@pytest.mark.parametrize("shapes", [SHAPES, SHAPES300], ids=["154-pieces", "300-pieces"])
@pytest.mark.parametrize("project", ["grad", "update"])
def test_deterministic_and_matches_reference(shapes, project):
    basis = _basis(shapes, 4)
    runs = []
    for backend in ("cuda", "cuda", "reference"):
        ps = _params(shapes)
        opt = ProjectedAdam(
            ps,
            lr=1e-2,
            weight_decay=0.01,
            decoupled_weight_decay=True,
            project=project,
            basis=basis,
            backend=backend,
        )
        for _ in range(3):
            opt.step()
        runs.append((ps, opt))
    (a, oa), (b, _), (r, orf) = runs
    assert all(torch.equal(x, y) for x, y in zip(a, b)), "two cuda runs differ"
    err = max((x - y).abs().max().item() for x, y in zip(a, r))
    serr = max(
        (oa.state[x]["exp_avg"] - orf.state[y]["exp_avg"]).abs().max().item() for x, y in zip(a, r)
    )
    assert err <= 1e-5 and serr <= 1e-5, f"max |dp| {err:.2e}, max |d exp_avg| {serr:.2e}"
    assert {float(oa.state[p]["step"]) for p in a} == {3.0}


def test_found_inf_moves_nothing():
    """A skipped step (found_inf on the device) leaves parameters, states and step counts unchanged."""
    ps = _params(SHAPES)
    opt = ProjectedAdam(ps, lr=1e-2, project="update", basis=_basis(SHAPES, 4), backend="cuda")
    opt.step()
    before = [p.detach().clone() for p in ps]
    states = [{key: v.clone() for key, v in opt.state[p].items()} for p in ps]
    opt.step(found_inf=torch.ones((), device="cuda"))
    torch.cuda.synchronize()
    assert all(torch.equal(p, q) for p, q in zip(ps, before))
    for p, st in zip(ps, states):
        for key, v in st.items():
            assert torch.equal(opt.state[p][key], v), key


@pytest.mark.parametrize("project", ["grad", "update"])
def test_cuda_graph_replay_equals_eager_steps(project):
    """One captured step replayed 3 times beside 3 eager steps of a twin: bitwise equal."""
    basis = _basis(SHAPES, 4)
    pe, pg = _params(SHAPES), _params(SHAPES)
    oe = ProjectedAdam(pe, lr=1e-2, project=project, basis=basis, backend="cuda")
    og = ProjectedAdam(pg, lr=1e-2, project=project, basis=basis, backend="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        og.step()  # warm-up outside the capture: creates the states
    torch.cuda.current_stream().wait_stream(side)
    oe.step()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        og.step()
    for _ in range(3):
        graph.replay()
        oe.step()
    torch.cuda.synchronize()
    diff = max((a - b).abs().max().item() for a, b in zip(pe, pg))
    assert all(torch.equal(a, b) for a, b in zip(pe, pg)), f"max |dp| {diff:.2e}"
    for a, b in zip(pe, pg):
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(oe.state[a][key], og.state[b][key]), key
