"""The denoisers, the schedule, DDIM and DDPM training."""

from __future__ import annotations

import pytest
import torch

from uno.unlearn.diffusion import sampling
from uno.unlearn.diffusion.schedule import alpha_bar, loss_weight, predict_x0, q_sample
from uno.unlearn.diffusion.train import build_model, denoising_loss, train_diffusion
from uno.unlearn.io import load_model, save_model


def test_schedules_decrease_from_one_to_zero():
    for kind in ("cosine", "linear"):
        ab = alpha_bar(1000, kind)
        assert ab.shape == (1000,)
        assert bool((ab[1:] < ab[:-1]).all())
        assert 0.99 < float(ab[0]) <= 1.0 and float(ab[-1]) < 0.01
    with pytest.raises(ValueError, match="unknown schedule"):
        alpha_bar(10, "square")


def test_one_step_x0_inverts_q_sample():
    ab = alpha_bar(100)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(6, 1, 28, 28, generator=g) * 2 - 1
    eps = torch.randn(6, 1, 28, 28, generator=g)
    t = torch.tensor([0, 10, 40, 60, 90, 99])
    back = predict_x0(ab, q_sample(ab, x0, t, eps), t, eps)
    torch.testing.assert_close(back, x0, atol=2e-3, rtol=0)


def test_min_snr_weight_caps_small_timesteps_only():
    ab = alpha_bar(1000)
    w = loss_weight(ab, torch.tensor([0, 500, 999]))
    assert float(w[0]) < 0.01 and float(w[2]) == 1.0


def test_forward_shapes_and_null_label(model):
    with torch.no_grad():  # the MLP's adaLN-zero start ignores the embedding; give it weights
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    x = torch.randn(5, 1, 28, 28)
    t = torch.randint(50, (5,))
    y = torch.arange(5)
    assert model(x, t, y).shape == x.shape
    assert not torch.equal(model(x, t, None), model(x, t, y))
    assert torch.equal(model(x, t, None), model(x, t, torch.full((5,), model.null_label)))


def test_ddim_is_deterministic_in_the_codes(model):
    z = sampling.codes(4, seed=3)
    y = torch.tensor([0, 1, 2, 3])
    a = sampling.ddim(model, z, y, steps=3, guidance=2.0)
    b = sampling.ddim(model, sampling.codes(4, seed=3), y, steps=3, guidance=2.0)
    c = sampling.ddim(model, sampling.codes(4, seed=4), y, steps=3, guidance=2.0)
    assert a.shape == (4, 1, 28, 28) and float(a.min()) >= 0 and float(a.max()) <= 1
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_ddim_timesteps_and_bad_steps():
    assert sampling.timesteps(1000, 20)[0] == 999 and sampling.timesteps(1000, 20)[-1] == 0
    ts = sampling.timesteps(50, 7)
    assert ts == sorted(set(ts), reverse=True)
    with pytest.raises(ValueError, match="DDIM steps"):
        sampling.timesteps(50, 0)


def test_decode_uses_the_models_chain_and_cycles_labels(mlp):
    z = sampling.codes(3, seed=0).reshape(3, -1)
    x = mlp.decode(z)
    ref = sampling.ddim(mlp, z.reshape(3, 1, 28, 28), torch.arange(3), 3, 2.0)
    assert torch.equal(x, ref)
    mlp.decode_labels = [1]
    assert torch.equal(
        mlp.decode(z),
        sampling.ddim(mlp, z.reshape(3, 1, 28, 28), torch.ones(3, dtype=torch.long), 3, 2.0),
    )


def test_a_training_step_decreases_the_loss(model, digits):
    ab = alpha_bar(model.T, model.schedule)
    g = torch.Generator().manual_seed(0)
    x0 = digits[0].x[:32] * 2 - 1
    y = digits[0].y[:32]
    t = torch.randint(model.T, (32,), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = float(denoising_loss(model, x0, y, t, eps, ab).detach())
    for _ in range(3):
        opt.zero_grad()
        denoising_loss(model, x0, y, t, eps, ab).backward()
        opt.step()
    assert float(denoising_loss(model, x0, y, t, eps, ab).detach()) < before


def _trained(digits, steps=3):
    torch.manual_seed(0)  # the initial weights
    m = build_model("mlp", width=8, depth=1, emb=8, T=50)
    return train_diffusion(m, digits[0], steps=steps, quiet=True)


def test_training_is_deterministic_and_returns_the_ema(digits):
    a, la = _trained(digits)
    b, lb = _trained(digits)
    assert la == lb and len(la) == 3
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    assert not any(p.requires_grad for p in a.parameters())


def test_unknown_architecture():
    with pytest.raises(ValueError, match="unknown diffusion architecture"):
        build_model("vit")


def test_saved_model_round_trips(tmp_path, model):
    save_model(tmp_path / "m.safetensors", model)
    back, _ = load_model(tmp_path / "m.safetensors", ("diffusion_mlp", "diffusion_unet"))
    x, t, y = torch.randn(2, 1, 28, 28), torch.tensor([3, 40]), torch.tensor([1, 2])
    assert torch.equal(back(x, t, y), model(x, t, y))


def test_sampling_embeds_distinct_pairs_only_with_the_same_values(mlp):
    """Without autograd the embedding runs on the distinct (t, y) pairs and is gathered back."""
    torch.manual_seed(0)
    for (
        p
    ) in mlp.ada.parameters():  # adaLN-zero starts at 0: give the modulations something to carry
        p.data.normal_()
    x, t = torch.randn(12, 1, 28, 28), torch.tensor([3] * 6 + [7] * 6)
    y = torch.tensor([1, 10] * 6)
    with_grad = mlp(x, t, y)
    seen = []
    hook = mlp.t_mlp.register_forward_hook(lambda m, i, o: seen.append(len(i[0])))
    with torch.no_grad():
        without = mlp(x, t, y)
    hook.remove()
    assert seen == [4]  # 2 timesteps × 2 labels
    torch.testing.assert_close(without, with_grad.detach(), rtol=1e-5, atol=1e-5)
