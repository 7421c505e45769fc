"""Separate raw vectors reach the CPU kernels as a row table: never stacked, checked for aliasing.

``uno.project_(grad, [v1, v2, ...])`` and ``uno.orthonormalize([v1, v2, ...])`` with vectors given
piece by piece read the vectors where they are (docs/kernels.md, "row tables"); these tests hold that
against the reference backend, spy on ``torch.stack``/``torch.cat``, and check the errors.
"""

from __future__ import annotations

import pytest
import torch

import uno
from backend_params import BACKEND_DEVICES, TOL

pytest.importorskip("uno._backends.cpu")

SHAPES = [(7, 5), (13,), (3, 4, 2)]


def _vec(gen, dtype=torch.float64):
    return [torch.randn(s, generator=gen, dtype=torch.float64).to(dtype) for s in SHAPES]


@pytest.fixture
def no_stack(monkeypatch):
    """Fail the test if anything stacks or concatenates tensors."""

    def refuse(*a, **kw):
        raise AssertionError("the vectors were copied (torch.stack / torch.cat)")

    monkeypatch.setattr(torch, "stack", refuse)
    monkeypatch.setattr(torch, "cat", refuse)


@pytest.mark.parametrize("k", [2, 3, 6])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_project_separate_vectors_matches_reference(k, dtype):
    gen = torch.Generator().manual_seed(k)
    vecs = [_vec(gen, dtype) for _ in range(k)]
    g = _vec(gen, dtype)
    want = [x.clone() for x in g]
    uno.project_(want, vecs, backend="reference")
    uno.project_(g, vecs, backend="cpu")
    for a, b in zip(g, want):
        assert torch.allclose(a.double(), b.double(), **TOL[dtype])


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
def test_separate_vectors_on_every_backend(backend, device):
    """Backends without row tables (reference, triton, cuda) get the stacked blocks instead."""
    gen = torch.Generator().manual_seed(5)
    vecs = [[x.to(device) for x in _vec(gen, torch.float32)] for _ in range(3)]
    g = [x.to(device) for x in _vec(gen, torch.float32)]
    want = [x.cpu().double() for x in g]
    uno.project_(want, [[x.cpu().double() for x in v] for v in vecs], backend="reference")
    uno.project_(g, vecs, backend=backend)
    for a, b in zip(g, want):
        assert torch.allclose(a.cpu().double(), b, **TOL[torch.float32])
    b = uno.orthonormalize(vecs, backend=backend)
    q = b.buffer[: b.k].double().cpu()
    assert b.k == 3 and torch.allclose(q @ q.T, torch.eye(3, dtype=torch.float64), atol=1e-5)


def test_project_separate_vectors_never_stacks(no_stack):
    gen = torch.Generator().manual_seed(1)
    vecs = [_vec(gen) for _ in range(4)]
    g = _vec(gen)
    uno.project_(g, vecs, backend="cpu")
    for v in vecs:  # g is now orthogonal to every vector
        assert abs(sum(float((a * b).sum()) for a, b in zip(g, v))) < 1e-10


def test_project_non_contiguous_vector_pieces():
    gen = torch.Generator().manual_seed(2)
    vecs = [[x.t() if x.dim() == 2 else x for x in _vec(gen)] for _ in range(3)]
    g = [x.t() if x.dim() == 2 else x for x in _vec(gen)]
    want = [x.clone() for x in g]
    uno.project_(want, vecs, backend="reference")
    uno.project_(g, vecs, backend="cpu")
    for a, b in zip(g, want):
        assert torch.allclose(a, b, **TOL[torch.float64])


def test_project_aliasing_a_vector_is_refused_untouched():
    gen = torch.Generator().manual_seed(3)
    vecs = [_vec(gen) for _ in range(3)]
    g = _vec(gen)
    g[1] = vecs[2][1]  # grad's piece 1 is vector 2's piece 1
    snap = [x.clone() for x in g]
    vsnap = [[x.clone() for x in v] for v in vecs]
    with pytest.raises(ValueError, match=r"basis\[2\]\[1\]"):
        uno.project_(g, vecs, backend="cpu")
    assert all(torch.equal(a, b) for a, b in zip(g, snap))
    assert all(torch.equal(a, b) for v, s in zip(vecs, vsnap) for a, b in zip(v, s))


def test_project_wrong_piece_shape_is_refused():
    gen = torch.Generator().manual_seed(4)
    vecs = [_vec(gen) for _ in range(2)]
    vecs[1][2] = torch.randn(3, 4, 3, dtype=torch.float64)
    g = _vec(gen)
    snap = [x.clone() for x in g]
    with pytest.raises(ValueError, match=r"basis\[1\]\[2\] has shape"):
        uno.project_(g, vecs, backend="cpu")
    assert all(torch.equal(a, b) for a, b in zip(g, snap))


@pytest.mark.parametrize("k", [2, 5, 8])
def test_orthonormalize_separate_vectors_never_copies(k, no_stack):
    gen = torch.Generator().manual_seed(10 + k)
    vecs = [_vec(gen, torch.float32) for _ in range(k)]
    snap = [[x.clone() for x in v] for v in vecs]
    b = uno.orthonormalize(vecs, backend="cpu")
    assert b.k == k
    q = b.buffer[: b.k].double()
    assert torch.allclose(q @ q.T, torch.eye(k, dtype=torch.float64), atol=1e-5)
    assert all(torch.equal(a, c) for v, s in zip(vecs, snap) for a, c in zip(v, s))


def test_orthonormalize_separate_vectors_matches_reference():
    gen = torch.Generator().manual_seed(20)
    vecs = [_vec(gen) for _ in range(6)]
    a = uno.orthonormalize(vecs, backend="cpu")
    b = uno.orthonormalize(vecs, backend="reference")
    assert a.k == b.k == 6
    # the same span: each basis projects the other's vectors onto themselves
    qa, qb = a.buffer[: a.k], b.buffer[: b.k]
    assert torch.allclose(qa.T @ (qa @ qb.T), qb.T, atol=1e-10)


def test_orthonormalize_vectors_requiring_grad():
    gen = torch.Generator().manual_seed(21)
    vecs = [[x.requires_grad_() for x in _vec(gen)] for _ in range(3)]
    b = uno.orthonormalize(vecs, backend="cpu")
    assert b.k == 3 and not b.buffer.requires_grad
