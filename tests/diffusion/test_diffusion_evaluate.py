"""The diffusion table's measures: relearning attacks with labels, f by several judges, quality."""

from __future__ import annotations

import torch

from uno.unlearn.diffusion import evaluate as ev


def test_relearning_works_on_a_copy_and_logs_every_kth_step(mlp, judge, digits):
    before = [p.detach().clone() for p in mlp.parameters()]
    z = ev.fresh_codes(4)
    curve = ev.relearn(mlp, digits[0], [judge, judge], z, [1], steps=5, batch=8, every=2)
    assert len(curve) == 1 + 3  # before, after steps 2, 4 and the last (5)
    assert all(len(c) == 2 and c[0] == c[1] for c in curve)  # the same samples for both judges
    assert all(torch.equal(a, b) for a, b in zip(before, mlp.parameters()))


def test_fractions_and_conditional_accuracy_are_shares(mlp, judge):
    z = ev.fresh_codes(6)
    assert torch.equal(z, ev.fresh_codes(6))
    (f,) = ev.fractions(mlp, [judge], z, [1])
    assert 0.0 <= f <= 1.0
    (acc,) = ev.conditional_accuracy(mlp, [judge], n=10)
    assert 0.0 <= acc <= 1.0
