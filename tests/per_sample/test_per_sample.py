"""uno.per_sample against torch.func.vmap(grad) on small models."""

from __future__ import annotations

from typing import Any, Dict, List

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.func import functional_call, grad, vmap

import uno.per_sample as ps
from uno.per_sample import _blocks


class MnistVAE(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(784, 400), nn.BatchNorm1d(400), nn.ReLU())
        self.mu = nn.Linear(400, 2)
        self.lv = nn.Linear(400, 2)
        self.dec = nn.Sequential(nn.Linear(2, 400), nn.ReLU(), nn.Linear(400, 784))


def vae_loss(model, x, eps):
    h = model.enc(x)
    mu, lv = model.mu(h), model.lv(h)
    z = mu + eps * (0.5 * lv).exp()
    rec = model.dec(z)
    return ((rec - x) ** 2).sum(1) - 0.5 * (1 + lv - mu**2 - lv.exp()).sum(1)


class ConvVAE(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Sequential(
            nn.Conv2d(1, 8, 4, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 4, 2, 1), nn.ReLU(), nn.Flatten()
        )
        self.head = nn.Linear(16 * 7 * 7, 64)
        self.dec_fc = nn.Linear(32, 16 * 7 * 7)
        self.dec = nn.Sequential(
            nn.ConvTranspose2d(16, 8, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(8, 1, 4, 2, 1)
        )


def conv_loss(model, x, eps):
    mu, lv = model.head(model.enc(x)).chunk(2, 1)
    z = mu + eps * (0.5 * lv).exp()
    rec = model.dec(model.dec_fc(z).view(-1, 16, 7, 7))
    return ((rec - x) ** 2).flatten(1).sum(1) - 0.5 * (1 + lv - mu**2 - lv.exp()).sum(1)


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(11, 8, padding_idx=0)
        self.ln = nn.LayerNorm(8)
        self.fc = nn.Linear(8, 8)
        self.gn = nn.GroupNorm(2, 4)
        self.conv = nn.Conv1d(8, 4, 3, padding=1)


def block_loss(model, idx):
    h = model.fc(model.ln(model.emb(idx)))
    c = model.gn(model.conv(h.transpose(1, 2)))
    return (c**2).flatten(1).sum(1) + h.tanh().sum((1, 2))


def reference_grads(model, loss_fn, *batch):
    names = [n for n, p in model.named_parameters()]
    params = {n: p.detach() for n, p in model.named_parameters()}

    def one(pp, *b):
        return functional_call(
            _Wrap(model, loss_fn),
            {"m." + k: v for k, v in pp.items()},
            tuple(t.unsqueeze(0) for t in b),
        )[0]

    g = vmap(grad(one), in_dims=(None, *([0] * len(batch))))(params, *batch)
    return [g[n] for n in names]


class _Wrap(nn.Module):
    def __init__(self, m, fn) -> None:
        super().__init__()
        self.m, self.fn = m, fn

    def forward(self, *b):
        return self.fn(self.m, *b)


def _check(model, loss_fn, *batch):
    ref = reference_grads(model, loss_fn, *batch)
    got = ps.grads(model, loss_fn, *batch)
    for r, g in zip(ref, got):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5)
    flat = torch.cat([r.reshape(r.shape[0], -1) for r in ref], 1).double()
    gm = flat @ flat.T
    torch.testing.assert_close(ps.gram(model, loss_fn, *batch), gm, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(
        ps.norms(model, loss_fn, *batch), gm.diag().sqrt(), rtol=1e-4, atol=1e-4
    )
    basis = torch.randn(3, flat.shape[1], dtype=torch.float64)
    torch.testing.assert_close(
        ps.coefficients(model, loss_fn, *batch, basis=basis.float()),
        flat @ basis.float().double().T,
        rtol=1e-4,
        atol=1e-3,
    )
    w = torch.randn(flat.shape[0])
    ws = ps.weighted_sum(model, loss_fn, *batch, weights=w)
    for r, s in zip(ref, ws):
        torch.testing.assert_close(s, torch.tensordot(w, r, 1), rtol=1e-4, atol=1e-4)


def test_mnist_vae():
    torch.manual_seed(0)
    m = MnistVAE().eval()
    _check(m, vae_loss, torch.rand(6, 784), torch.randn(6, 2))


def test_conv_vae():
    torch.manual_seed(0)
    m = ConvVAE()
    _check(m, conv_loss, torch.rand(4, 1, 28, 28), torch.randn(4, 32))


def test_transformer_like_block():
    torch.manual_seed(0)
    m = Block()
    _check(m, block_loss, torch.randint(0, 11, (5, 6)))


def test_cross_gram():
    torch.manual_seed(0)
    m = MnistVAE().eval()
    xa, ea, xb, eb = torch.rand(3, 784), torch.randn(3, 2), torch.rand(4, 784), torch.randn(4, 2)
    ra = torch.cat([g.flatten(1) for g in reference_grads(m, vae_loss, xa, ea)], 1).double()
    rb = torch.cat([g.flatten(1) for g in reference_grads(m, vae_loss, xb, eb)], 1).double()
    torch.testing.assert_close(
        ps.cross_gram(m, vae_loss, (xa, ea), (xb, eb)), ra @ rb.T, rtol=1e-4, atol=1e-4
    )


def test_batchnorm_train_errors_or_frozen():
    m = MnistVAE().train()
    x, e = torch.rand(4, 784), torch.randn(4, 2)
    with pytest.raises(ValueError, match="BatchNorm"):
        ps.gram(m, vae_loss, x, e)
    g = ps.gram(m, vae_loss, x, e, batchnorm="frozen")
    assert m.enc[1].training
    torch.testing.assert_close(g, ps.gram(m.eval(), vae_loss, x, e))


def test_mixing_loss_and_scalar_loss_error():
    m = MnistVAE().eval()
    x, e = torch.rand(4, 784), torch.randn(4, 2)

    def mixing(model, x, eps):
        h = model.enc(x)
        return ((h - h.mean(0)) ** 2).sum(1)

    with pytest.raises(ValueError, match="mixes samples"):
        ps.gram(m, mixing, x, e, check=True)
    with pytest.raises(ValueError, match="per-sample losses"):
        ps.gram(m, lambda mm, x, e: vae_loss(mm, x, e).mean(), x, e)


def _conv_strategies(k_max: int, s_max: int, groups: List[int], b_max: int) -> Dict[str, Any]:
    """Hypothesis strategies of a convolution's kernel, stride, padding, dilation, groups, batch."""
    ranges = {"k": (1, k_max), "s": (1, s_max), "pad": (0, 1), "dil": (1, 2), "b": (1, b_max)}
    out: Dict[str, Any] = {name: st.integers(lo, hi) for name, (lo, hi) in ranges.items()}
    out["groups"] = st.sampled_from(groups)
    return out


@settings(max_examples=8, deadline=None)
@given(**_conv_strategies(3, 2, [1, 2], 5), n=st.integers(5, 8))
def test_conv2d_hyperparameters(k, s, pad, dil, groups, b, n):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(2, 4, k, s, pad, dil, groups=groups))

    def loss(model, x):
        return (model(x) ** 2).flatten(1).sum(1)

    _check(m, loss, torch.randn(b, 2, n, n))


@settings(max_examples=6, deadline=None)
@given(t=st.integers(1, 9), b=st.integers(1, 64))
def test_linear_sequence(t, b):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))

    def loss(model, x):
        return model(x).pow(2).sum((1, 2))

    _check(m, loss, torch.randn(b, t, 3))


@settings(max_examples=8, deadline=None)
@given(**_conv_strategies(4, 3, [1, 2, 4], 4), op=st.integers(0, 2))
def test_conv_transpose2d_hyperparameters(k, s, pad, dil, op, groups, b):
    if op >= max(s, dil):
        op = 0
    torch.manual_seed(0)
    m = nn.Sequential(
        nn.ConvTranspose2d(4, 8, k, s, pad, output_padding=op, groups=groups, dilation=dil)
    )

    def loss(model, x):
        return (model(x) ** 2).flatten(1).sum(1)

    def no_fallback(*a, **kw):
        raise AssertionError("ConvTranspose2d took the torch.func fallback")

    # the fast path (unfolded output gradients, one bmm per group), never the torch.func fallback
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_blocks, "_fallback", no_fallback)
        _check(m, loss, torch.randn(b, 4, 4, 5))


class DCGANGenerator(nn.Module):
    """A small DCGAN generator: ConvTranspose2d + BatchNorm2d (eval) + ReLU, Tanh output."""

    def __init__(self, nz: int = 8, ngf: int = 4) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 2, 4, 1, 0, bias=False),
            nn.BatchNorm2d(ngf * 2),
            nn.ReLU(),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf),
            nn.ReLU(),
            nn.ConvTranspose2d(ngf, 1, 4, 2, 1, bias=False),
            nn.Tanh(),
        )


def gen_loss(model, z, target):
    return ((model.net(z) - target) ** 2).flatten(1).sum(1)


def test_dcgan_generator():
    torch.manual_seed(0)
    m = DCGANGenerator().eval()
    for bn in (m.net[1], m.net[4]):  # non-trivial running statistics
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    _check(m, gen_loss, torch.randn(5, 8, 1, 1), torch.randn(5, 1, 16, 16))
    with pytest.raises(ValueError, match="BatchNorm"):
        ps.gram(m.train(), gen_loss, torch.randn(5, 8, 1, 1), torch.randn(5, 1, 16, 16))


@pytest.mark.parametrize("backend", ["reference", "cpu", "triton"])
def test_gram_every_backend(backend):
    """gram/norms/cross_gram through each ghost_gram backend (a Linear layer on (B, T, d) inputs is
    ghost: 2 T^2 <= p d)."""
    from uno import _backends

    if "cpu" not in _backends.info(backend).devices:
        pytest.skip(f"backend {backend} unavailable: {_backends.info(backend).reason}")
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(24, 20), nn.Tanh(), nn.Linear(20, 16))

    def loss(model, x):
        return model(x).pow(2).sum((1, 2))

    x, y = torch.randn(4, 3, 24), torch.randn(3, 2, 24)
    ref = torch.cat([g.flatten(1) for g in reference_grads(m, loss, x)], 1).double()
    refy = torch.cat([g.flatten(1) for g in reference_grads(m, loss, y)], 1).double()
    gm = ps.gram(m, loss, x, backend=backend)
    torch.testing.assert_close(gm, ref @ ref.T, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(
        ps.norms(m, loss, x, backend=backend), (ref * ref).sum(1).sqrt(), rtol=1e-4, atol=1e-4
    )
    torch.testing.assert_close(
        ps.cross_gram(m, loss, (x,), (y,), backend=backend), ref @ refy.T, rtol=1e-4, atol=1e-4
    )


def test_coefficients_with_basis():
    import uno

    torch.manual_seed(0)
    m = MnistVAE().eval()
    x, e = torch.rand(5, 784), torch.randn(5, 2)
    params = list(m.parameters())
    basis = uno.Basis.empty([p.detach() for p in params], capacity=3)
    for _ in range(3):
        assert basis.append_([torch.randn_like(p) for p in params])
    ref = torch.cat([g.flatten(1) for g in reference_grads(m, vae_loss, x, e)], 1).double()
    rows = torch.cat([r.double() for r in basis.rows()], 1)
    torch.testing.assert_close(
        ps.coefficients(m, vae_loss, x, e, basis=basis), ref @ rows.T, rtol=1e-4, atol=1e-3
    )
    with pytest.raises(ValueError, match="basis pieces"):
        ps.coefficients(m, vae_loss, x, e, basis=[r[:, :-1] for r in basis.rows()])


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(7, 6)
        self.fc = nn.Linear(6, 6)
        self.scale = nn.Parameter(torch.tensor(1.5))


def tied_loss(model, idx):
    h = torch.tanh(model.fc(model.emb(idx)))  # (B, T, 6)
    logits = h @ model.emb.weight.T  # weight tying: emb.weight used outside nn.Embedding
    return (model.scale * logits).pow(2).sum((1, 2))  # scale: a parameter used in loss_fn itself


def test_parameters_used_outside_modules():
    """Functional uses (weight tying, a parameter in loss_fn) fall back to torch.func and are exact."""
    torch.manual_seed(0)
    _check(Tied(), tied_loss, torch.randint(0, 7, (4, 3)))


def test_foreign_parameter_is_a_clear_error():
    torch.manual_seed(0)
    m = nn.Linear(3, 2)
    w = nn.Parameter(torch.randn(2))

    def loss(model, x):
        return (model(x) * w).sum(1)

    with pytest.raises(ValueError, match="not a parameter of the model"):
        ps.grads(m, loss, torch.randn(4, 3), params=[m.weight, w])
    # Without the foreign tensor, the model's own parameters are fine.
    got = ps.grads(m, loss, torch.randn(4, 3), params=[m.weight])
    assert got[0].shape == (4, 2, 3)


@pytest.mark.parametrize(
    "fn", ["grads", "gram", "norms", "cross_gram", "coefficients", "weighted_sum"]
)
@pytest.mark.parametrize("bad", ["bogus", None, "Frozen"])
def test_bad_batchnorm_option_is_named_first(fn, bad):
    """batchnorm='bogus' named the BatchNorm training-mode error (or passed silently without a
    BatchNorm layer): now the bad value and the valid ones, before any forward pass."""
    torch.manual_seed(0)
    calls = []

    def loss(model, x):
        calls.append(1)
        return model(x).pow(2).sum(1)

    for m in (nn.Linear(4, 3), nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)).train()):
        x = torch.randn(5, 4)
        args: Any = ((x,), (x,)) if fn == "cross_gram" else (x,)
        kw: Dict[str, Any] = {"batchnorm": bad}
        if fn == "coefficients":
            kw["basis"] = torch.randn(2, sum(p.numel() for p in m.parameters()))
        if fn == "weighted_sum":
            kw["weights"] = torch.ones(5)
        with pytest.raises(ValueError, match=r"batchnorm must be one of 'error', 'frozen', got"):
            getattr(ps, fn)(m, loss, *args, **kw)
    assert not calls


def test_expanded_batch_is_read():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2))
    x = torch.randn(1, 4).expand(6, 4)

    def loss(model, x):
        return model(x).pow(2).sum(1)

    torch.testing.assert_close(ps.gram(m, loss, x), ps.gram(m, loss, x.contiguous()))
