"""uno.project_: every backend against the float64 oracle, the maths' properties, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import uno
from backend_params import BACKEND_DEVICES, TOL, dtypes_for
from helpers import flat64, max_abs_cos, oracle_project, rand_pieces

SHAPES = [(7, 5), (13,), (1,), (0, 4), (3, 2, 2)]
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))


def _eps(dtype):
    return torch.finfo(dtype).eps


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
@pytest.mark.parametrize("form", ["basis", "raw-list", "raw-one"])
def test_matches_oracle(backend, device, form):
    gen = torch.Generator().manual_seed(0)
    for dtype in dtypes_for(backend, device):
        g = rand_pieces(SHAPES, dtype, device, gen)
        k = 1 if form == "raw-one" else 4
        vecs = [rand_pieces(SHAPES, dtype, device, gen) for _ in range(k)]
        if form == "basis":
            basis = uno.orthonormalize(vecs, backend=backend)
        elif form == "raw-one":
            basis = vecs[0]
        else:
            basis = vecs
        want = oracle_project(g, vecs)
        uno.project_(g, basis, backend=backend)
        tol = TOL[dtype]
        scale = float(want.abs().max())
        torch.testing.assert_close(
            flat64(g), want, rtol=tol["rtol"] * 10, atol=tol["atol"] * 10 * scale, msg=str(dtype)
        )


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
def test_tensor_forms(backend, device):
    """A Tensor grad with a same-shaped vector, a (k, *shape) tensor, and a list of tensors."""
    gen = torch.Generator().manual_seed(1)
    g = torch.randn(6, 5, generator=gen).to(device)
    v = torch.randn(3, 6, 5, generator=gen).to(device)
    for basis, vecs in [(v[0], [[v[0]]]), (v, [[x] for x in v]), (list(v), [[x] for x in v])]:
        x = g.clone()
        uno.project_(x, basis, backend=backend)
        torch.testing.assert_close(flat64([x]), oracle_project([g], vecs), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
@SETTINGS
@given(
    shapes=st.lists(
        st.one_of(st.tuples(st.integers(0, 23)), st.tuples(st.integers(1, 7), st.integers(0, 11))),
        min_size=1,
        max_size=5,
    ),
    k=st.integers(1, 64),
    seed=st.integers(0, 2**31 - 1),
    use_basis=st.booleans(),
)
def test_properties(backend, device, shapes, k, seed, use_basis):
    """Orthogonal afterwards, idempotent, basis unchanged, norm not increased."""
    gen = torch.Generator().manual_seed(seed)
    dtype = torch.float32
    g = rand_pieces(shapes, dtype, device, gen)
    vecs = [rand_pieces(shapes, dtype, device, gen) for _ in range(k)]
    vec_copies = [[p.clone() for p in v] for v in vecs]
    basis = uno.orthonormalize(vecs, backend=backend) if use_basis else vecs
    buf_copy = basis.buffer.clone() if use_basis else None
    n0 = float(flat64(g).norm())
    uno.project_(g, basis, backend=backend)
    assert max_abs_cos(g, vecs) <= 50 * _eps(dtype) * math.sqrt(k) or float(flat64(g).norm()) <= (
        1e-5 * n0
    )
    assert float(flat64(g).norm()) <= n0 * (1 + 1e-6) + 1e-30
    once = [p.clone() for p in g]
    uno.project_(g, basis, backend=backend)
    for a, b in zip(g, once):
        assert torch.equal(a, b), "projecting twice changed grad"
    for v, c in zip(vecs, vec_copies):
        for a, b in zip(v, c):
            assert torch.equal(a, b), "raw basis vectors were modified"
    if use_basis:
        assert torch.equal(basis.buffer, buf_copy), "Basis was modified"


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
@pytest.mark.parametrize("use_basis", [True, False])
def test_orthogonal_grad_untouched(backend, device, use_basis):
    gen = torch.Generator().manual_seed(3)
    shapes = [(40,), (9, 3)]
    vecs = [rand_pieces(shapes, torch.float64, "cpu", gen) for _ in range(3)]
    g64 = rand_pieces(shapes, torch.float64, "cpu", gen)
    want = oracle_project(g64, vecs)
    # Exactly orthogonal in float64, then rounded to float32.
    g = []
    o = 0
    for s in shapes:
        n = math.prod(s)
        g.append(want[o : o + n].reshape(s).to(device=device, dtype=torch.float32))
        o += n
    vecs32 = [[p.to(device=device, dtype=torch.float32) for p in v] for v in vecs]
    basis = uno.orthonormalize(vecs32, backend=backend) if use_basis else vecs32
    before = [p.clone() for p in g]
    uno.project_(g, basis, backend=backend)
    for a, b in zip(g, before):
        assert torch.equal(a, b)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("use_basis", [True, False])
def test_cancellation_second_pass(backend, device, dtype, use_basis):
    """grad almost inside the span: the result is still orthogonal relative to its own small norm."""
    gen = torch.Generator().manual_seed(4)
    shapes = [(300,), (20, 10)]
    k = 5
    vecs = [rand_pieces(shapes, torch.float64, "cpu", gen) for _ in range(k)]
    tiny = rand_pieces(shapes, torch.float64, "cpu", gen)
    coef = torch.randn(k, generator=gen, dtype=torch.float64)
    g = [sum(coef[j] * vecs[j][t] for j in range(k)) + 1e-5 * tiny[t] for t in range(len(shapes))]
    g = [p.to(device=device, dtype=dtype) for p in g]
    vv = [[p.to(device=device, dtype=dtype) for p in v] for v in vecs]
    basis = uno.orthonormalize(vv, backend=backend) if use_basis else vv
    uno.project_(g, basis, backend=backend)
    assert max_abs_cos(g, vv) <= 100 * _eps(dtype) * math.sqrt(k)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
@pytest.mark.parametrize("use_basis", [True, False])
def test_ill_conditioned_basis(backend, device, use_basis):
    """Condition number 1e6 in float32: orthogonality still to working precision."""
    gen = torch.Generator().manual_seed(5)
    p, k = 2000, 8
    u, _ = torch.linalg.qr(torch.randn(p, k, generator=gen, dtype=torch.float64))
    w, _ = torch.linalg.qr(torch.randn(k, k, generator=gen, dtype=torch.float64))
    s = torch.logspace(0, -6, k, dtype=torch.float64)
    v = (u @ torch.diag(s) @ w.T).T.to(torch.float32)  # (k, P), cond 1e6
    assert torch.linalg.cond(v.double()) > 5e5
    vecs = [[v[j].to(device)] for j in range(k)]
    g = [torch.randn(p, generator=gen).to(device)]
    basis = uno.orthonormalize(vecs, backend=backend) if use_basis else vecs
    if use_basis:
        assert basis.k == k
    uno.project_(g, basis, backend=backend)
    assert max_abs_cos(g, vecs) <= 20 * _eps(torch.float32) * math.sqrt(k)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
def test_dependent_and_zero_vectors(backend, device):
    gen = torch.Generator().manual_seed(6)
    shapes = [(50,), (4, 4)]
    a = rand_pieces(shapes, torch.float32, device, gen)
    b = rand_pieces(shapes, torch.float32, device, gen)
    dep = [x + 2 * y for x, y in zip(a, b)]
    zero = [torch.zeros_like(x) for x in a]
    vecs = [a, zero, b, dep, a]
    basis = uno.orthonormalize(vecs, backend=backend)
    assert basis.k == 2
    for form in (basis, vecs):
        g = rand_pieces(shapes, torch.float32, device, torch.Generator().manual_seed(7))
        uno.project_(g, form, backend=backend)
        want = oracle_project(
            rand_pieces(shapes, torch.float32, device, torch.Generator().manual_seed(7)), [a, b]
        )
        torch.testing.assert_close(flat64(g), want, rtol=1e-4, atol=1e-5)
    g = rand_pieces(shapes, torch.float32, device, gen)
    before = [x.clone() for x in g]
    uno.project_(g, [zero], backend=backend)  # span {0}: nothing to remove
    assert all(torch.equal(x, y) for x, y in zip(g, before))


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
def test_non_contiguous_grad(backend, device):
    gen = torch.Generator().manual_seed(8)
    g = torch.randn(6, 9, generator=gen).to(device).T  # non-contiguous view
    v = torch.randn(9, 6, generator=gen).to(device)
    want = oracle_project([g], [[v]])
    uno.project_(g, v, backend=backend)
    torch.testing.assert_close(flat64([g]), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
def test_half_grad_with_float32_basis(backend, device):
    gen = torch.Generator().manual_seed(9)
    shapes = [(64,), (8, 8)]
    vecs = [rand_pieces(shapes, torch.float32, device, gen) for _ in range(3)]
    basis = uno.orthonormalize(vecs, backend=backend)
    for dtype in [d for d in dtypes_for(backend, device) if d in (torch.float16, torch.bfloat16)]:
        g = rand_pieces(shapes, dtype, device, gen)
        want = oracle_project(g, vecs)
        uno.project_(g, basis, backend=backend)
        torch.testing.assert_close(flat64(g), want, rtol=0, atol=float(TOL[dtype]["atol"]) * 4)


# ---- bad input -------------------------------------------------------------------------------


def _snapshot(ts):
    return [t.clone() for t in ts]


def test_bad_inputs_raise_and_leave_inputs_untouched():
    g = [torch.randn(4, 3), torch.randn(5)]
    v = [torch.randn(4, 3), torch.randn(5)]
    snap = _snapshot(g)
    cases = [
        ([], v, ValueError, "empty"),
        (g, [], ValueError, "empty"),
        (g, [torch.randn(4, 3)], ValueError, "1 tensors"),
        (g, [torch.randn(3, 4), torch.randn(5)], ValueError, "shape"),
        (g, [v[0].double(), v[1].double()], TypeError, "dtype"),
        (g, [v[0], v[1].to(torch.int64)], TypeError, "dtype"),
        ([g[0].to(torch.int32), g[1]], v, TypeError, "dtype"),
        (g, [v[0].to("meta"), v[1].to("meta")], ValueError, "same device"),
        (g, "nope", TypeError, "basis must be"),
        ("nope", v, TypeError, "grad must be"),
        (g, [v[0], None], TypeError, r"basis\[1\]"),
        (g, [[v[0], v[1]], v[0]], TypeError, "mixes"),
    ]
    for grad, basis, exc, match in cases:
        with pytest.raises(exc, match=match):
            uno.project_(grad, basis)
    for a, b in zip(g, snap):
        assert torch.equal(a, b)


def test_non_finite_basis_rejected_before_any_write():
    g = [torch.randn(4, 3), torch.randn(5)]
    v = [torch.randn(4, 3), torch.randn(5)]
    v[1][2] = float("nan")
    snap = _snapshot(g)
    with pytest.raises(ValueError, match="non-finite"):
        uno.project_(g, v)
    v[1][2] = float("inf")
    with pytest.raises(ValueError, match="non-finite"):
        uno.project_(g, [v, [torch.randn(4, 3), torch.randn(5)]])
    assert all(torch.equal(a, b) for a, b in zip(g, snap))
    with pytest.raises(ValueError, match="non-finite"):
        uno.orthonormalize([v])


def test_non_finite_grad_left_as_is():
    g = torch.randn(10)
    g[3] = float("inf")
    snap = g.clone()
    uno.project_(g, torch.randn(10))
    assert torch.equal(g, snap)


def test_aliasing_rejected():
    x = torch.randn(20)
    snap = x.clone()
    with pytest.raises(ValueError, match="overlap"):
        uno.project_(x, x)
    with pytest.raises(ValueError, match="overlap"):
        uno.project_(x[:10], x[5:15])
    with pytest.raises(ValueError, match="overlap"):
        uno.project_([x[:10], x[5:15]], [torch.randn(10), torch.randn(10)])
    assert torch.equal(x, snap)
    # Disjoint slices of one buffer are fine.
    uno.project_(x[:10], x[10:20].clone())


def test_basis_for_other_shapes_rejected():
    b = uno.orthonormalize([[torch.randn(3, 3)]])
    with pytest.raises(ValueError, match="built for pieces"):
        uno.project_([torch.randn(9)], b)
    with pytest.raises(TypeError, match="dtype"):
        uno.project_([torch.randn(3, 3, dtype=torch.float64)], b)


def test_backend_selection(monkeypatch):
    g = torch.randn(8)
    with pytest.raises(ValueError, match="unknown backend"):
        uno.project_(g, torch.randn(8), backend="fortran")
    with pytest.raises(RuntimeError, match="Available for cpu"):
        uno.project_(g, torch.randn(8), backend="cuda")
    monkeypatch.setenv("UNO_BACKEND", "nope")
    with pytest.raises(ValueError, match="UNO_BACKEND"):
        uno.project_(g, torch.randn(8))
    monkeypatch.setenv("UNO_BACKEND", "reference")
    uno.project_(g, torch.randn(8))
    report = uno.backends()
    assert set(report) == {"reference", "cpu", "cuda", "triton"}
    assert report["reference"].startswith("available")


def test_rtol_validation():
    with pytest.raises(ValueError, match="rtol"):
        uno.project_(torch.randn(4), torch.randn(4), rtol=-1.0)
    with pytest.raises(ValueError, match="rtol"):
        uno.orthonormalize([torch.randn(4)], rtol=float("nan"))


# ---- torch.library integration ---------------------------------------------------------------


def test_opcheck_project():
    g = [torch.randn(4, 3), torch.randn(5)]
    rows = [torch.randn(2, 12), torch.randn(2, 5)]
    torch.library.opcheck(torch.ops.uno.project_.default, (g, rows, False, 1e-6, ""))
    b = uno.orthonormalize([[torch.randn(4, 3), torch.randn(5)] for _ in range(2)])
    torch.library.opcheck(torch.ops.uno.project_.default, (g, b.rows(), True, 1e-6, ""))


def test_compile_fullgraph():
    def step(grads, basis):
        uno.project_(grads, basis)
        return grads[0] * 2

    compiled = torch.compile(step, fullgraph=True)  # inductor, as users run it
    gen = torch.Generator().manual_seed(10)
    g = [torch.randn(6, 4, generator=gen), torch.randn(7, generator=gen)]
    v = [[torch.randn(6, 4, generator=gen), torch.randn(7, generator=gen)] for _ in range(2)]
    g2 = [p.clone() for p in g]
    out = compiled(g, v)
    step(g2, v)
    assert torch.equal(out, g2[0] * 2)
    for a, b in zip(g, g2):
        torch.testing.assert_close(a, b)
    b = uno.orthonormalize(v)
    compiled(g, b)
    assert max_abs_cos(g, v) < 1e-5


def test_eager_fast_path_matches_the_op_and_bumps_versions():
    """Plain eager calls skip the dispatcher; results equal the registered op's, versions move."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from uno.ops.library import direct_ok
    from uno.ops.library import project_op as _project_op

    gen = torch.Generator().manual_seed(3)
    shapes = [(7, 5), (11,), (3, 2, 2)]
    g = [torch.randn(s, generator=gen) for s in shapes]
    basis = [[torch.randn(s, generator=gen) for s in shapes] for _ in range(3)]
    g_op = [t.clone() for t in g]
    versions = [t._version for t in g]
    assert direct_ok(g)
    uno.project_(g, basis)
    assert all(t._version > v for t, v in zip(g, versions))
    rows, _ = uno.ops._vectors.rows_for(basis, g_op)
    _project_op(g_op, rows, False, uno.ops._small.check_rtol(None, torch.float32), "")
    for a, b in zip(g, g_op):
        assert torch.equal(a, b)

    seen = []

    class Log(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.append(str(func))
            return func(*args, **(kwargs or {}))

    with Log():
        assert not direct_ok(g)
        uno.project_([t.clone() for t in g], basis)
    assert any("uno.project_" in s for s in seen), "inside a dispatch mode the op must be visible"
    leaf = torch.randn(4, requires_grad=True)
    assert not direct_ok([leaf])
    with torch.no_grad():
        assert direct_ok([leaf])


def test_basis_aliasing_rejected():
    """A grad that is (part of) the Basis's own buffer, or pieces that overlap each other, are refused
    on the Basis fast path too, before any write."""
    torch.manual_seed(0)
    shapes = [(4, 3), (5,)]
    basis = uno.orthonormalize([[torch.randn(s) for s in shapes] for _ in range(2)])
    snap = basis.buffer.clone()
    with pytest.raises(ValueError, match="overlap"):
        uno.project_(basis.vector(1), basis)
    with pytest.raises(ValueError, match="overlap"):  # a spare (capacity) row is outside the span
        inside = basis.buffer[0, 2:14].view(4, 3)
        uno.project_([inside, torch.randn(5)], basis)
    x = torch.randn(20)
    xs = x.clone()
    with pytest.raises(ValueError, match="overlap"):
        uno.project_([x[:12].view(4, 3), x[10:15]], basis)
    assert torch.equal(basis.buffer, snap) and torch.equal(x, xs)
    # Disjoint pieces of one buffer are fine, and the result matches the tensor-by-tensor reference.
    g = [x[:12].view(4, 3), x[12:17]]
    want = [t.clone() for t in g]
    uno.project_(want, basis, backend="reference")
    uno.project_(g, basis)
    for a, b in zip(g, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_basis_rows_cache_follows_growth():
    """Basis.rows() is cached per (buffer, k): growing the basis gives the new rows; rows() is a fresh
    plain list per call and the kernels' cached RowBlocks is read-only."""
    torch.manual_seed(0)
    b = uno.Basis.empty([torch.zeros(3, 2), torch.zeros(4)], capacity=1)
    b.append_([torch.randn(3, 2), torch.randn(4)])
    r1 = b.rows()
    assert [tuple(r.shape) for r in r1] == [(1, 6), (1, 4)]
    assert b.rows() is not r1 and type(r1) is list
    with pytest.raises(TypeError, match="read-only"):
        b._row_blocks().append(torch.zeros(1, 4))
    b.append_([torch.randn(3, 2), torch.randn(4)])  # grows the buffer (capacity 1 -> more)
    r2 = b.rows()
    assert [tuple(r.shape) for r in r2] == [(2, 6), (2, 4)]
    assert r2[0].data_ptr() == b.buffer.data_ptr()
    g = [torch.randn(3, 2), torch.randn(4)]
    uno.project_(g, b)
    for j in range(2):
        assert abs(float(uno.dot(g, b.vector(j)))) < 1e-5


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
def test_expanded_tensors_read_or_clear_error(backend, device):
    """Expanded (stride-0) tensors: read wherever they are only read (raw basis vectors, the
    reductions, orthonormalize, append_), a clear error where project_ would write one in place
    (before the fix torch's raw RuntimeError came after the kernels ran)."""
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(64, generator=gen, dtype=torch.float64).to(device)
    e = torch.full((1,), 0.5, dtype=torch.float64, device=device).expand(64)
    dense = e.contiguous()
    g = q.clone()
    uno.project_(g, [e], backend=backend)
    want = q.clone()
    uno.project_(want, [dense], backend=backend)
    torch.testing.assert_close(g, want)
    torch.testing.assert_close(uno.dot(e, q, backend=backend), uno.dot(dense, q, backend=backend))
    torch.testing.assert_close(
        uno.gram([e, q], backend=backend), uno.gram([dense, q], backend=backend)
    )
    torch.testing.assert_close(
        uno.cos2(e, [q], backend=backend), uno.cos2(dense, [q], backend=backend)
    )
    b1 = uno.orthonormalize([e, q], backend=backend)
    b2 = uno.orthonormalize([dense, q], backend=backend)
    torch.testing.assert_close(b1.buffer[: b1.k], b2.buffer[: b2.k])
    b3 = uno.orthonormalize([q], capacity=2, backend=backend)
    assert b3.append_(e) and b3.k == 2
    keep = q.clone()
    for grad, basis in ((e, [q]), ([keep, e], [q, q])):
        with pytest.raises(
            ValueError, match=r"grad.*expanded/overlapping memory cannot be written"
        ):
            uno.project_(grad, basis, backend=backend)
    assert torch.equal(keep, q)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
def test_tensors_of_an_autograd_graph_are_refused_in_grad_mode(backend, device):
    """project_ has no autograd formula: on a non-leaf of a graph the write was invisible to backward
    (``w.grad`` came out as if nothing had been projected), and on a leaf that requires grad (a
    parameter passed where its gradient belongs) torch's own in-place ops refuse. Both raise before
    any write; under ``torch.no_grad()`` both are written, as torch's in-place ops would be."""
    v = torch.randn(10, device=device)
    w = torch.randn(10, device=device, requires_grad=True)
    y = w * 2
    snap_w, snap_y = w.detach().clone(), y.detach().clone()
    with pytest.raises(RuntimeError, match=r"grad\[0\] is part of an autograd graph"):
        uno.project_(y, [v], backend=backend)
    first = torch.randn(3, device=device)
    snap_first = first.clone()
    with pytest.raises(RuntimeError, match=r"grad\[1\] requires grad.*p\.grad does not"):
        uno.project_([first, w], [[torch.randn(3, device=device), v]], backend=backend)
    assert torch.equal(w.detach(), snap_w) and torch.equal(y.detach(), snap_y)
    assert torch.equal(first, snap_first)  # nothing written, not even the other pieces
    with torch.no_grad():
        uno.project_(w, [v], backend=backend)
    assert abs(float(w.detach().double() @ v.double())) < 1e-5 * float(snap_w.norm() * v.norm())
    w.grad = torch.randn(10, device=device)  # the usual call: p.grad never requires grad
    uno.project_(w.grad, [v], backend=backend)
    assert abs(float(w.grad.double() @ v.double())) < 1e-5 * float(v.norm()) * 10
