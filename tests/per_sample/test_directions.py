"""``uno.per_sample.weighted_sum`` with (B, k) weights and ``principal_directions`` against the
per-sample gradients of torch.func.vmap(grad) (the reference) on small models."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import uno.per_sample as ps
from uno.per_sample import _directions

from .test_per_sample import (
    Block,
    ConvVAE,
    MnistVAE,
    block_loss,
    conv_loss,
    reference_grads,
    vae_loss,
)

#: (rtol, atol) of a float32 model against the float32 reference (the sums differ in order)
TOL = {torch.float32: (1e-4, 1e-4), torch.float64: (1e-10, 1e-10)}


def _cases(dtype: torch.dtype):
    torch.manual_seed(0)
    vae = MnistVAE().eval().to(dtype)
    yield vae, vae_loss, (torch.rand(6, 784, dtype=dtype), torch.randn(6, 2, dtype=dtype))
    conv = ConvVAE().to(dtype)
    yield conv, conv_loss, (torch.rand(5, 1, 28, 28, dtype=dtype), torch.randn(5, 32, dtype=dtype))
    blk = Block().to(dtype)
    yield blk, block_loss, (torch.randint(0, 11, (7, 5)),)


def _flat(gs: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([g.reshape(g.shape[0], -1) for g in gs], 1).double()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_k_weighted_sums_from_one_capture_equal_the_reference(dtype):
    rtol, atol = TOL[dtype]
    for model, loss_fn, batch in _cases(dtype):
        ref = reference_grads(model, loss_fn, *batch)
        B = ref[0].shape[0]
        w = torch.randn(B, 3, dtype=dtype)
        got = ps.weighted_sum(model, loss_fn, *batch, weights=w)
        for r, g in zip(ref, got):
            assert g.shape == (3, *r.shape[1:]) and g.dtype == r.dtype
            torch.testing.assert_close(g, torch.tensordot(w.T, r, 1), rtol=rtol, atol=atol)
        one = ps.weighted_sum(model, loss_fn, *batch, weights=w[:, 1])  # the (B,) form: column 1
        for a, b in zip(one, got):
            torch.testing.assert_close(a, b[1], rtol=rtol, atol=atol)


def test_chunked_and_whole_weighted_sums_agree(monkeypatch):
    """A layer's k weighted copies are formed in chunks of k when they would be large: same sums."""
    torch.manual_seed(1)
    model, loss_fn, batch = next(iter(_cases(torch.float64)))[0:3]
    w = torch.randn(6, 5, dtype=torch.float64)
    whole = ps.weighted_sum(model, loss_fn, *batch, weights=w)
    monkeypatch.setattr(_directions, "_CHUNK_ELEMS", 1)  # one column at a time
    for a, b in zip(ps.weighted_sum(model, loss_fn, *batch, weights=w), whole):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_principal_directions_are_the_top_singular_directions(dtype):
    for model, loss_fn, batch in _cases(dtype):
        g = _flat(reference_grads(model, loss_fn, *batch))  # (B, P)
        dirs, vals = ps.principal_directions(model, loss_fn, *batch, k=3)
        q = _flat([d for d in dirs])  # (k', P) as rows of flattened parameter pieces
        k = q.shape[0]
        assert k == 3 and vals.shape == (3,) and vals.dtype == torch.float64
        eye = torch.eye(k, dtype=torch.float64)
        tol = 1e-4 if dtype == torch.float32 else 1e-9
        torch.testing.assert_close(q @ q.T, eye, rtol=tol, atol=tol)
        s = torch.linalg.svdvals(g)
        torch.testing.assert_close(vals, s[:3] ** 2, rtol=tol, atol=tol * float(s[0] ** 2))
        u = torch.linalg.svd(g.T, full_matrices=False).U[:, :3]  # the top left singular vectors
        torch.testing.assert_close((q @ u).abs().sum(0), torch.ones(3, dtype=torch.float64),
                                   rtol=tol * 10, atol=tol * 10)  # fmt: skip


def _tiny() -> tuple[nn.Module, object]:
    torch.manual_seed(2)
    m = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)).double()

    def loss(model, x):
        return model(x).pow(2).sum(1)

    return m, loss


def test_fewer_directions_than_asked_when_the_batch_spans_fewer():
    m, loss = _tiny()
    x = torch.randn(1, 4, dtype=torch.float64).expand(4, 4)  # four copies of one sample: rank 1
    dirs, vals = ps.principal_directions(m, loss, x, k=3)
    assert vals.shape == (1,) and all(d.shape[0] == 1 for d in dirs)
    q = _flat(dirs)
    torch.testing.assert_close(float(q.norm()), 1.0, rtol=1e-9, atol=1e-9)
    zero = torch.zeros(3, 4, dtype=torch.float64)  # zero inputs, zero-output model: no direction
    m2 = nn.Linear(4, 2, bias=False).double()

    def lin(model, x):
        return model(x).sum(1)

    dirs0, vals0 = ps.principal_directions(m2, lin, zero, k=2)
    assert vals0.numel() == 0 and [tuple(d.shape) for d in dirs0] == [(0, 2, 4)]


@pytest.mark.parametrize(
    "weights, error, message",
    [
        ([1.0, 2.0, 3.0], TypeError, "weights must be a (B,) or (B, k) tensor, got list"),
        (torch.ones(3, 2, 1), ValueError, "got 3 dimensions"),
        (torch.tensor([1.0, float("nan"), 0.0]), ValueError, "finite floating-point"),
        (torch.ones(3, dtype=torch.int64), ValueError, "finite floating-point"),
    ],
)
def test_bad_weights_are_refused_before_any_forward(weights, error, message):
    m, loss = _tiny()
    calls = []

    def counted(model, x):
        calls.append(1)
        return loss(model, x)

    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        ps.weighted_sum(m, counted, torch.randn(3, 4, dtype=torch.float64), weights=weights)
    assert not calls


def test_weights_of_another_batch_size_are_refused():
    m, loss = _tiny()
    x = torch.randn(3, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"expected weights of shape \(3, k\), got \(5, 2\)"):
        ps.weighted_sum(m, loss, x, weights=torch.ones(5, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"expected weights of shape \(3,\), got \(5,\)"):
        ps.weighted_sum(m, loss, x, weights=torch.ones(5, dtype=torch.float64))


def test_non_finite_gradients_are_an_error_not_an_empty_basis():
    m, loss = _tiny()
    x = torch.randn(3, 4, dtype=torch.float64)
    x[1, 0] = float("nan")
    with pytest.raises(ValueError, match="not finite"):
        ps.principal_directions(m, loss, x, k=2)


@pytest.mark.parametrize("k", [0, -1, True, 2.0, None])
def test_bad_k_is_refused_before_any_forward(k):
    m, loss = _tiny()
    calls = []

    def counted(model, x):
        calls.append(1)
        return loss(model, x)

    with pytest.raises(ValueError, match="k must be a positive int"):
        ps.principal_directions(m, counted, torch.randn(3, 4, dtype=torch.float64), k=k)
    assert not calls


@settings(max_examples=25, deadline=None)
@given(b=st.integers(1, 6), k=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_weighted_sums_are_linear_in_the_weights(b, k, seed):
    """ws(W₁ + 2·W₂) = ws(W₁) + 2·ws(W₂), column by column, for any B and k."""
    m, loss = _tiny()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 4, dtype=torch.float64, generator=gen)
    w1 = torch.randn(b, k, dtype=torch.float64, generator=gen)
    w2 = torch.randn(b, k, dtype=torch.float64, generator=gen)
    lhs = ps.weighted_sum(m, loss, x, weights=w1 + 2 * w2)
    a = ps.weighted_sum(m, loss, x, weights=w1)
    c = ps.weighted_sum(m, loss, x, weights=w2)
    for s, p, r in zip(lhs, a, c):
        torch.testing.assert_close(s, p + 2 * r, rtol=1e-10, atol=1e-10)
