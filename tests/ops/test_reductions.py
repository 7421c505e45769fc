"""uno.dot, uno.gram, uno.cos2: every backend against float64 oracles."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import uno
from backend_params import BACKEND_DEVICES, TOL, dtypes_for
from helpers import flat64, rand_pieces


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
def test_dot_gram_cos2(backend, device):
    gen = torch.Generator().manual_seed(0)
    shapes = [(17, 3), (5,), (0, 2), (1,)]
    for dtype in dtypes_for(backend, device):
        a = rand_pieces(shapes, dtype, device, gen)
        b = rand_pieces(shapes, dtype, device, gen)
        fa, fb = flat64(a), flat64(b)
        tol = dict(rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["atol"] * 10)
        d = uno.dot(a, b, backend=backend)
        assert d.dtype == torch.float64 and d.dim() == 0 and d.device.type == device
        torch.testing.assert_close(d.cpu(), fa @ fb, **tol)
        c = uno.cos2(a, b, backend=backend)
        torch.testing.assert_close(c.cpu(), (fa @ fb) ** 2 / ((fa @ fa) * (fb @ fb)), **tol)
        vecs = [a, b, rand_pieces(shapes, dtype, device, gen)]
        g = uno.gram(vecs, backend=backend)
        m = torch.stack([flat64(v) for v in vecs])
        torch.testing.assert_close(g.cpu(), m @ m.T, rtol=TOL[dtype]["rtol"], atol=1e-4)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    shapes=st.lists(st.tuples(st.integers(0, 41)), min_size=1, max_size=4),
    k=st.integers(1, 64),
    seed=st.integers(0, 2**31 - 1),
)
def test_gram_hypothesis(backend, device, shapes, k, seed):
    gen = torch.Generator().manual_seed(seed)
    vecs = [rand_pieces(shapes, torch.float32, device, gen) for _ in range(k)]
    g = uno.gram(vecs, backend=backend).cpu()
    m = torch.stack([flat64(v) for v in vecs])
    torch.testing.assert_close(g, m @ m.T, rtol=1e-10, atol=1e-10)
    assert torch.equal(g, g.T)


def test_forms_and_degenerate():
    x = torch.randn(4, 5)
    g = uno.gram(x)  # (k, *shape) tensor: 4 vectors of shape (5,)
    torch.testing.assert_close(g, x.double() @ x.double().T)
    z = torch.zeros(7)
    assert float(uno.cos2(z, z)) == 0.0
    assert float(uno.dot(z, torch.randn(7))) == 0.0


def test_bad_input():
    with pytest.raises(ValueError, match="differ in shape"):
        uno.dot(torch.randn(3), torch.randn(4))
    with pytest.raises(TypeError, match="differ in dtype"):
        uno.cos2(torch.randn(3), torch.randn(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="non-empty"):
        uno.gram([])
    a = torch.randn(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="not differentiable"):
        uno.dot(a, torch.randn(3))
    with torch.no_grad():
        uno.dot(a, torch.randn(3))
    uno.dot(a.detach(), torch.randn(3))


def test_opcheck_inner():
    x = [torch.randn(6), torch.randn(3)]
    rows = [torch.randn(2, 6), torch.randn(2, 3)]
    for with_gram in (False, True):
        torch.library.opcheck(torch.ops.uno.inner.default, (x, rows, with_gram, ""))
    torch.library.opcheck(torch.ops.uno.inner.default, ([], rows, True, ""))


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
def test_dot_norms(backend, device):
    """⟨a,b⟩, ‖a‖², ‖b‖² of two separate lists in one call, per backend and dtype, against float64."""
    gen = torch.Generator().manual_seed(3)
    shapes = [(17, 3), (5,), (0, 2), (1,), (257,)]
    for dtype in dtypes_for(backend, device):
        a = rand_pieces(shapes, dtype, device, gen)
        b = rand_pieces(shapes, dtype, device, gen)
        a0 = [t.clone() for t in a]
        b0 = [t.clone() for t in b]
        fa, fb = flat64(a), flat64(b)
        out = uno.dot_norms(a, b, backend=backend)
        assert out.dtype == torch.float64 and out.shape == (3,) and out.device.type == device
        want = torch.stack([fa @ fb, fa @ fa, fb @ fb])
        tol = dict(rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["atol"] * 10)
        torch.testing.assert_close(out.cpu(), want, **tol)
        assert all(torch.equal(x, y) for x, y in zip(a + b, a0 + b0))  # inputs untouched
        # the same numbers the separate reductions give
        torch.testing.assert_close(out[0], uno.dot(a, b, backend=backend), rtol=1e-12, atol=0.0)
        z = uno.dot_norms(a, a, backend=backend)
        torch.testing.assert_close(z[0], z[1], rtol=1e-12, atol=0.0)


def test_dot_norms_forms_and_bad_input():
    x, y = torch.randn(6, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    torch.testing.assert_close(uno.dot_norms(x, y), torch.stack([x @ y, x @ x, y @ y]))
    assert uno.dot_norms(torch.zeros(3), torch.zeros(3)).tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="differ in shape"):
        uno.dot_norms([torch.randn(3)], [torch.randn(4)])
    with pytest.raises(TypeError, match="differ in dtype"):
        uno.dot_norms(torch.randn(3), torch.randn(3, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="not differentiable"):
        uno.dot_norms(torch.randn(3, requires_grad=True), torch.randn(3))
