"""uno.optim: fused projected SGD/Adam against uno.project_ + torch.optim, every backend, every option.

The reference composition is `uno.project_` on the gradients (reference backend, the executable spec)
followed by torch.optim.SGD / Adam / AdamW with the same hyperparameters.
"""

from __future__ import annotations

import copy
from typing import Any, Dict, List

import pytest
import torch

import uno
from backend_params import BACKEND_DEVICES
from uno.optim import ProjectedAdam, ProjectedSGD, project_adam_, project_sgd_

# (name, uno class, torch class, uno kwargs, torch kwargs)
CONFIGS: List[Any] = [
    ("sgd", ProjectedSGD, torch.optim.SGD, dict(lr=0.05), dict(lr=0.05)),
    (
        "sgd-mom-damp-wd",
        ProjectedSGD,
        torch.optim.SGD,
        dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01),
        dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01),
    ),
    (
        "sgd-nesterov-max",
        ProjectedSGD,
        torch.optim.SGD,
        dict(lr=2e-3, momentum=0.8, nesterov=True, maximize=True, weight_decay=0.01),
        dict(lr=2e-3, momentum=0.8, nesterov=True, maximize=True, weight_decay=0.01),
    ),
    ("adam", ProjectedAdam, torch.optim.Adam, dict(lr=1e-2), dict(lr=1e-2)),
    (
        "adam-ams-wd-max",
        ProjectedAdam,
        torch.optim.Adam,
        dict(lr=1e-2, betas=(0.8, 0.99), weight_decay=0.05, amsgrad=True, maximize=True),
        dict(lr=1e-2, betas=(0.8, 0.99), weight_decay=0.05, amsgrad=True, maximize=True),
    ),
    (
        "adamw-ams",
        ProjectedAdam,
        torch.optim.AdamW,
        dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True, amsgrad=True, eps=1e-6),
        dict(lr=1e-2, weight_decay=0.1, amsgrad=True, eps=1e-6),
    ),
]


def make_model(dtype=torch.float32, seed=0) -> torch.nn.Module:
    torch.manual_seed(seed)
    m = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))
    return m.to(dtype)


def data(dtype=torch.float32):
    g = torch.Generator().manual_seed(1)
    return torch.randn(16, 5, generator=g, dtype=dtype), torch.randn(
        16, 3, generator=g, dtype=dtype
    )


def make_basis(model: torch.nn.Module, k: int = 2, seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    vecs = [
        [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in model.parameters()]
        for _ in range(k)
    ]
    return uno.orthonormalize(vecs, backend="reference")


def backward(model, x, y) -> None:
    model.zero_grad()
    torch.nn.functional.mse_loss(model(x), y).backward()


def groups(model, kw: Dict[str, Any], split: bool):
    """Two parameter groups (the second with half the learning rate) when ``split``."""
    if not split:
        return model.parameters()
    ps = list(model.parameters())
    return [{"params": ps[:2]}, {"params": ps[2:], "lr": kw["lr"] / 2}]


def steps_for(backend: str) -> int:
    return 4 if backend == "triton" else 100  # the Triton interpreter runs every program in Python


def assert_states_close(s_uno, s_torch, rtol, atol):
    assert set(s_uno) == set(s_torch)
    for key in s_torch:
        a, b = s_uno[key], s_torch[key]
        if b is None:
            assert a is None
            continue
        torch.testing.assert_close(a.to(b.dtype).cpu(), b.cpu(), rtol=rtol, atol=atol, msg=key)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
@pytest.mark.parametrize("cfg", CONFIGS, ids=[c[0] for c in CONFIGS])
@pytest.mark.parametrize("with_basis", [False, True], ids=["plain", "basis"])
def test_matches_reference_composition(backend, device, cfg, with_basis):
    _, ucls, tcls, ukw, tkw = cfg
    split = cfg[0] in ("sgd-mom-damp-wd", "adamw-ams")  # parameter groups with different lr
    m_uno, m_ref = make_model().to(device), make_model().to(device)
    x, y = (t.to(device) for t in data())
    basis = make_basis(m_ref) if with_basis else None
    if basis is not None and device != "cpu":
        basis = uno.Basis(basis.buffer.to(device), basis.k, basis.shapes)
    o_uno = ucls(groups(m_uno, ukw, split), **ukw, basis=basis, backend=backend)
    o_ref = tcls(groups(m_ref, tkw, split), **tkw)
    for _ in range(steps_for(backend)):
        backward(m_uno, x, y)
        backward(m_ref, x, y)
        if basis is not None:
            uno.project_([p.grad for p in m_ref.parameters()], basis, backend="reference")
        o_uno.step()
        o_ref.step()
    for a, b in zip(m_uno.parameters(), m_ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=2e-5)
    for a, b in zip(m_uno.parameters(), m_ref.parameters()):
        assert_states_close(o_uno.state[a], o_ref.state[b], rtol=1e-4, atol=2e-5)
    # Projected gradients are not written into p.grad by default.
    if basis is not None:
        backward(m_uno, x, y)
        raw = [p.grad.clone() for p in m_uno.parameters()]
        o_uno.step()
        for p, g in zip(m_uno.parameters(), raw):
            torch.testing.assert_close(p.grad, g)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("which", ["adamw", "sgd-nesterov"])
def test_project_update_is_orthogonal(backend, device, dtype, which):
    model = make_model(dtype).to(device)
    x, y = (t.to(device) for t in data(dtype))
    basis = make_basis(model, k=3)
    if which == "adamw":
        opt: Any = ProjectedAdam(
            model.parameters(), lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True,
            amsgrad=True, project="update", basis=basis, backend=backend,
        )  # fmt: skip
    else:
        opt = ProjectedSGD(
            model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01,
            project="update", basis=basis, backend=backend,
        )  # fmt: skip
    q = basis.buffer[: basis.k].to(torch.float64)
    tol = (
        1e-12 if dtype == torch.float64 else 3e-4
    )  # p's final rounding limits fp32 to ~eps|p|/|dp|
    for _ in range(min(10, steps_for(backend))):
        before = torch.cat([p.detach().reshape(-1).to(torch.float64) for p in model.parameters()])
        backward(model, x, y)
        opt.step()
        after = torch.cat([p.detach().reshape(-1).to(torch.float64) for p in model.parameters()])
        dp = after - before
        assert float(dp.norm()) > 0
        assert float((q @ dp).abs().max()) <= tol * float(dp.norm()), "update not orthogonal"


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
@pytest.mark.parametrize("project", ["grad", "update"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_backend_matches_spec(backend, device, project, dtype):
    """Every backend against the reference backend (the spec), all dtypes, both modes, grad_scale."""
    if backend == "triton" and dtype == torch.bfloat16:
        pytest.skip("the Triton interpreter has no bfloat16")
    if backend == "reference":
        pytest.skip("the spec itself")
    ms = [make_model(dtype).to(device) for _ in range(2)]
    x, y = (t.to(device) for t in data(dtype))
    basis = make_basis(
        make_model(torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype)
    )
    gs = torch.tensor(8.0, device=device)
    for cls, kw in [
        (ProjectedAdam, dict(lr=1e-2, amsgrad=True, weight_decay=0.01)),
        (ProjectedSGD, dict(lr=0.05, momentum=0.9, weight_decay=0.01)),
    ]:
        opts = [
            cls(m.parameters(), **kw, basis=basis, project=project, backend=b)
            for m, b in zip(ms, [backend, "reference"])
        ]
        for _ in range(2 if backend == "triton" else 5):
            for m, o in zip(ms, opts):
                backward(m, x, y)
                for p in m.parameters():
                    p.grad.mul_(8.0)
                o.step(grad_scale=gs)
        tol = {torch.float16: 2e-3, torch.bfloat16: 2e-2}.get(dtype, 1e-5)
        for a, b in zip(ms[0].parameters(), ms[1].parameters()):
            torch.testing.assert_close(a, b, rtol=tol, atol=tol)
            assert_states_close(opts[0].state[a], opts[1].state[b], rtol=tol, atol=tol)
        if dtype in (torch.float16, torch.bfloat16):
            st = opts[0].state[next(iter(ms[0].parameters()))]
            assert all(v.dtype == torch.float32 for key, v in st.items() if key != "step")


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
@pytest.mark.parametrize("cls", [ProjectedAdam, ProjectedSGD])
def test_found_inf_skips_everything(backend, device, cls):
    model = make_model().to(device)
    x, y = (t.to(device) for t in data())
    kw = dict(lr=1e-2, momentum=0.9) if cls is ProjectedSGD else dict(lr=1e-2, amsgrad=True)
    opt = cls(model.parameters(), **kw, basis=make_basis(model), backend=backend)
    inf = torch.tensor(1.0, device=device)
    ok = torch.tensor(0.0, device=device)
    # First step skipped: no state at all on the CPU (found_inf is read on the host, as torch does).
    # On a GPU found_inf stays on the device (no sync), so the state may be created, but untouched:
    # all zeros and step 0, as torch.optim.Adam(fused=True) leaves it.
    backward(model, x, y)
    before = [p.detach().clone() for p in model.parameters()]
    opt.step(found_inf=inf)
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p, b)
        st = opt.state.get(p, {})
        if device == "cpu":
            assert st.get("momentum_buffer") is None and "exp_avg" not in st
        else:
            for key, v in st.items():
                assert v is None or not bool(torch.as_tensor(v).any()), key
    opt.step(found_inf=ok)
    snap = copy.deepcopy(opt.state_dict())
    before = [p.detach().clone() for p in model.parameters()]
    backward(model, x, y)
    for p in model.parameters():
        p.grad[0] = float("inf")
    opt.step(found_inf=inf)
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p, b)
    after = opt.state_dict()
    for i, st in snap["state"].items():
        for key, v in st.items():
            assert torch.equal(after["state"][i][key], v), key
    # GradScaler-style attributes are honoured too.
    opt.found_inf = inf
    opt.step()
    del opt.found_inf
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p, b)


@pytest.mark.parametrize("kind", ["sgd", "adam", "adamw"])
def test_state_dict_round_trip(kind):
    """uno -> torch and torch -> uno: the loaded optimizer continues exactly like the original."""
    x, y = data()
    if kind == "sgd":
        mk_u = lambda ps: ProjectedSGD(ps, lr=0.05, momentum=0.9, nesterov=True)  # noqa: E731
        mk_t = lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True)  # noqa: E731
    elif kind == "adam":
        mk_u = lambda ps: ProjectedAdam(ps, lr=1e-2, amsgrad=True)  # noqa: E731
        mk_t = lambda ps: torch.optim.Adam(ps, lr=1e-2, amsgrad=True)  # noqa: E731
    else:
        mk_u = lambda ps: ProjectedAdam(ps, lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True)  # noqa: E731
        mk_t = lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1)  # noqa: E731
    for first, second in [(mk_u, mk_t), (mk_t, mk_u)]:
        m1 = make_model()
        o1 = first(m1.parameters())
        for _ in range(5):
            backward(m1, x, y)
            o1.step()
        m2 = copy.deepcopy(m1)
        o2 = second(m2.parameters())
        o2.load_state_dict(copy.deepcopy(o1.state_dict()))
        assert set(o2.state_dict()["param_groups"][0]) >= {"lr", "params"}
        for _ in range(5):
            for m, o in ((m1, o1), (m2, o2)):
                backward(m, x, y)
                o.step()
        for a, b in zip(m1.parameters(), m2.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_write_grad_and_raw_vectors_and_step_basis():
    x, y = data()
    m1, m2, m3 = make_model(), make_model(), make_model()
    basis = make_basis(m1)
    raw = [basis.vector(j) for j in range(basis.k)]
    o1 = ProjectedAdam(m1.parameters(), lr=1e-2, basis=basis, write_grad=True)
    o2 = ProjectedAdam(m2.parameters(), lr=1e-2, backend="reference")
    o2.set_basis([[t.clone() for t in v] for v in raw])
    o3 = ProjectedAdam(m3.parameters(), lr=1e-2)
    for _ in range(3):
        for m in (m1, m2, m3):
            backward(m, x, y)
        want = [p.grad.clone() for p in m1.parameters()]
        uno.project_(want, basis, backend="reference")
        o1.step()
        o2.step()
        o3.step(basis=basis)
        for p, w in zip(m1.parameters(), want):
            torch.testing.assert_close(p.grad, w, rtol=1e-5, atol=1e-7)
    for a, b, c in zip(m1.parameters(), m2.parameters(), m3.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
def test_functional_forms(backend, device):
    x, y = (t.to(device) for t in data())
    m1, m2 = make_model().to(device), make_model().to(device)
    basis = make_basis(m1)
    o = ProjectedAdam(
        m1.parameters(), lr=1e-2, amsgrad=True, basis=basis, project="update", backend=backend
    )
    ps = list(m2.parameters())
    ea = [torch.zeros_like(p) for p in ps]
    es = [torch.zeros_like(p) for p in ps]
    mx = [torch.zeros_like(p) for p in ps]
    st = [torch.zeros((), device=device) for p in ps]
    s1 = ProjectedSGD(m1.parameters(), lr=0.01, momentum=0.5, basis=basis, backend=backend)
    bufs: List[Any] = [None] * len(ps)
    for _ in range(3):
        backward(m1, x, y)
        backward(m2, x, y)
        o.step()
        project_adam_(
            ps, [p.grad for p in ps], ea, es, mx, st, lr=1e-2, amsgrad=True, basis=basis,
            project="update", backend=backend,
        )  # fmt: skip
        s1.step()
        project_sgd_(
            ps, [p.grad for p in ps], bufs, lr=0.01, momentum=0.5, basis=basis, backend=backend
        )
    for a, b in zip(m1.parameters(), ps):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert all(float(s) == 3.0 for s in st)
    assert all(b is not None for b in bufs)


def test_bad_inputs():
    m = make_model()
    other = torch.nn.Linear(5, 4)
    with pytest.raises(ValueError, match="other parameters"):
        ProjectedAdam(m.parameters(), basis=make_basis(torch.nn.Sequential(other)))
    with pytest.raises(ValueError, match="project must be"):
        ProjectedSGD(m.parameters(), lr=0.1, project="both")
    with pytest.raises(ValueError, match="Nesterov"):
        ProjectedSGD(m.parameters(), lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="beta"):
        ProjectedAdam(m.parameters(), betas=(1.0, 0.9))
    shapes = [p.shape for p in m.parameters()]
    meta = uno.Basis(
        torch.zeros(1, sum(p.numel() for p in m.parameters()), device="meta"), 1, shapes
    )
    with pytest.raises(ValueError, match="same device"):
        ProjectedAdam(m.parameters(), basis=meta)
    b64 = make_basis(make_model(torch.float64))
    with pytest.raises(TypeError, match="dtype"):
        ProjectedAdam(m.parameters(), basis=b64)
    x, y = data()
    backward(m, x, y)
    ps = list(m.parameters())
    before = [p.detach().clone() for p in ps]
    bufs: List[Any] = [None] * len(ps)
    with pytest.raises(TypeError, match="grad 0 has dtype"):
        project_sgd_(ps, [ps[0].grad.double()] + [p.grad for p in ps[1:]], bufs, lr=0.1)
    with pytest.raises(ValueError, match="grad 1 has shape"):
        project_sgd_(ps, [ps[0].grad, ps[0].grad] + [p.grad for p in ps[2:]], bufs, lr=0.1)
    with pytest.raises(ValueError, match="was built over"):
        project_sgd_(ps[:2], [p.grad for p in ps[:2]], bufs, lr=0.1, basis=make_basis(m))
    for p, b in zip(ps, before):
        assert torch.equal(p, b)  # nothing moved
    opt = ProjectedAdam(ps, lr=1e-2)
    with pytest.raises(ValueError, match="not contiguous"):
        q = torch.nn.Parameter(torch.randn(4, 3).T)
        q.grad = torch.randn(3, 4)
        ProjectedAdam([q], lr=1e-2).step()
    assert len(opt.state) == 0
    with pytest.raises(ValueError, match="found_inf must be a one-element"):
        ProjectedSGD(m.parameters(), lr=0.1).step(found_inf=torch.zeros(2))
    with pytest.raises(ValueError, match="unknown backend"):
        backward(m, x, y)
        ProjectedSGD(m.parameters(), lr=0.1, backend="nope").step()
    with pytest.raises(ValueError, match="momentum_buffers has"):
        ps = list(m.parameters())
        project_sgd_(ps, [p.grad for p in ps], [None], lr=0.1, momentum=0.9)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_opcheck(backend):
    from uno.ops.library import optim_step_op as _optim_step_op

    if "cpu" not in uno._backends.info(backend).devices:
        pytest.skip(f"{backend} unavailable")
    g = torch.Generator().manual_seed(0)
    shapes = [(7,), (3, 4)]
    ps = [torch.randn(s, generator=g).reshape(-1) for s in shapes]
    gr = [torch.randn(s, generator=g).reshape(-1) for s in shapes]
    s1 = [torch.randn(s, generator=g).reshape(-1) for s in shapes]
    s2 = [torch.rand(s, generator=g).reshape(-1) for s in shapes]
    s3 = [t.clone() + 0.1 for t in s2]
    steps = [torch.tensor(3.0) for _ in shapes]
    q = torch.linalg.qr(torch.randn(19, 2, generator=g))[0].T.contiguous()
    rows = [q[:, :7], q[:, 7:]]
    coef = torch.randn(2, dtype=torch.float64, generator=g)
    hyper = [1e-2, 0.9, 0.999, 1e-8, 0.01]
    for phase, c in ((0, coef), (2, None)):
        torch.library.opcheck(
            _optim_step_op,
            (ps, gr, s1, s2, s3, steps, rows, c, None, None, 1, phase, hyper, 32 | 16, backend),
        )
    torch.library.opcheck(
        _optim_step_op,
        (ps, gr, s1, [], [], [], rows, coef, torch.tensor(2.0), torch.tensor(0.0), 0, 0,
         [0.1, 0.9, 0.0, 0.0], 2, backend),
    )  # fmt: skip


@pytest.mark.parametrize("backend", ["reference", "cpu", "triton"])
def test_steps_pending_flag_is_cuda_only(backend):
    """FLAG_STEPS_PENDING (the cuda kernels increment Adam's step counts themselves) is refused by the
    other adapters, which read the counts as already incremented; nothing is written first."""
    from uno import _abi

    if backend == "cpu" and "cpu" not in uno._backends.info("cpu").devices:
        pytest.skip("built without the cpu kernels")
    if backend == "triton":
        pytest.importorskip("triton")
    p, g = torch.randn(5), torch.randn(5)
    m, v, step = torch.zeros(5), torch.zeros(5), torch.ones(())
    p0 = p.clone()
    fn = uno._backends.module(backend).optim_step
    with pytest.raises(ValueError, match="cuda-backend flag"):
        fn(_abi.StepArgs(
            [p], [g], [m], [v], [], [step], [], None, None, None, _abi.KIND_ADAM,
            _abi.PHASE_WRITE, [1e-3, 0.9, 0.999, 1e-8, 0.0], _abi.FLAG_STEPS_PENDING,
        ))  # fmt: skip
    assert torch.equal(p, p0) and torch.equal(step, torch.ones(()))


def test_eager_step_skips_dispatcher_and_bumps_versions(monkeypatch):
    """A plain eager step calls the cpu adapter directly (no custom-op dispatch) and still bumps the
    version counters of what it wrote, as the dispatcher would; results equal the op path's."""
    from uno.ops import library as uo

    torch.manual_seed(0)
    m1 = make_model()
    m2 = copy.deepcopy(m1)
    x, y = data()
    o1 = ProjectedAdam(m1.parameters(), lr=1e-2, basis=make_basis(m1), backend="cpu")
    o2 = ProjectedAdam(m2.parameters(), lr=1e-2, basis=make_basis(m2), backend="cpu")
    backward(m1, x, y)
    backward(m2, x, y)

    class Passthrough(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    calls = []
    real_op = uo.optim_step_op
    monkeypatch.setattr(uo, "optim_step_op", lambda *a: calls.append(1) or real_op(*a))
    with Passthrough():  # a mode is active: the step goes through the custom op
        o2.step()
    assert calls, "the step under a TorchFunctionMode did not use the custom op"
    monkeypatch.undo()

    def no_dispatch(*a, **kw):
        raise AssertionError("the eager step went through the custom op")

    versions = [p._version for p in m1.parameters()]
    with monkeypatch.context() as mp:
        mp.setattr(uo, "optim_step_op", no_dispatch)
        o1.step()
    assert all(p._version > v for p, v in zip(m1.parameters(), versions))
    for a, b in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
