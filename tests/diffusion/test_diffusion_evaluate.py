"""The diffusion table's measures: the attacks of uno.unlearn.attacks with labels, f by several judges,
quality."""

from __future__ import annotations

import torch

from uno.unlearn.diffusion import evaluate as ev
from uno.unlearn.evaluation import FreshForget


def test_relearning_uses_the_shared_attacks_on_a_copy_with_labels(mlp, judge, digits):
    mlp.decode_labels = [1]
    before = [p.detach().clone() for p in mlp.parameters()]
    tr = digits[0]
    data = (tr.subset(torch.nonzero(tr.y != 1)[:, 0]), tr.subset(torch.nonzero(tr.y == 1)[:, 0]))
    fresh = FreshForget([judge, judge], [1], 784, n=6, seed=ev.FRESH_SEED)
    state = torch.get_rng_state()
    a, b = ev.relearn(mlp, fresh, data, [1], seed=0, steps=5, every=2, n_step=4)
    assert torch.equal(state, torch.get_rng_state())  # seeded inside fork_rng
    assert a.at == [0, 2, 4, 5] and b.at == list(range(11))  # attack (ii): 10 steps, f after each
    assert all(x == y for x, y in zip(a.f1, a.f2))  # the same samples for both judges
    assert all(torch.equal(p, q) for p, q in zip(before, mlp.parameters()))
    again, _ = ev.relearn(mlp, fresh, data, [1], seed=0, steps=5, every=2, n_step=4)
    assert again.f1 == a.f1 and again.final == a.final
    # the loss really is the labelled denoising loss: one attack step moves the weights
    torch.manual_seed(0)
    loss = ev.attack_loss(mlp, data[0].x[:8], data[0].y[:8])
    loss.backward()
    assert loss.item() > 0 and any(
        p.grad is not None and p.grad.abs().sum() > 0 for p in mlp.parameters()
    )


def test_fractions_and_conditional_accuracy_are_shares(mlp, judge):
    z = ev.fresh_codes(6)
    assert torch.equal(z, ev.fresh_codes(6))
    fresh = FreshForget([judge], [1], 784, n=6, seed=ev.FRESH_SEED)
    assert torch.equal(fresh.z, z.reshape(6, -1))  # the table's fresh codes are these
    (f,) = ev.fractions(mlp, [judge], z, [1])
    assert 0.0 <= f <= 1.0
    (acc,) = ev.conditional_accuracy(mlp, [judge], n=10)
    assert 0.0 <= acc <= 1.0
