"""The ghost_gram op: every implemented backend against the float64 reference; opcheck; bad inputs."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from uno.per_sample import ghost_gram
from uno.per_sample._ghost_op import _IMPLEMENTED, _ghost_gram_op
from uno.reference.ghost_gram import ghost_gram as ref

TOL = {torch.float32: (1e-5, 1e-5), torch.float64: (1e-12, 1e-12), torch.bfloat16: (2e-2, 1e-2)}


def _materialized(a, g, a2=None, g2=None):
    m1 = torch.einsum("btp,btd->bpd", g.double(), a.double()).flatten(1)
    m2 = m1 if a2 is None else torch.einsum("btp,btd->bpd", g2.double(), a2.double()).flatten(1)
    return m1 @ m2.T


@pytest.mark.parametrize("backend", _IMPLEMENTED)
@pytest.mark.parametrize("dtype", list(TOL))
@settings(max_examples=10, deadline=None)
@given(
    b=st.integers(1, 9),
    t=st.integers(1, 5),
    d=st.integers(1, 7),
    p=st.integers(1, 7),
    cross=st.booleans(),
)
def test_matches_materialized(backend, dtype, b, t, d, p, cross):
    gen = torch.Generator().manual_seed(b * 100 + t)
    a, g = torch.randn(b, t, d, generator=gen), torch.randn(b, t, p, generator=gen)
    a2 = g2 = None
    if cross:
        a2, g2 = (
            torch.randn(b + 1, t + 1, d, generator=gen),
            torch.randn(b + 1, t + 1, p, generator=gen),
        )
    exp = _materialized(a, g, a2, g2)
    cast = [x if x is None else x.to(dtype) for x in (a, g, a2, g2)]
    got = ghost_gram(*cast, backend=backend)
    assert got.dtype == torch.float64
    if (
        dtype == torch.bfloat16
    ):  # flash-attn rule: vs the upcast reference, within 2x same-dtype error
        up = ref(*cast)
        same = ref(*cast, upcast=False)
        assert (got - up).abs().max() <= 2 * (same - up).abs().max() + TOL[dtype][
            1
        ] * up.abs().max()
    else:
        rtol, atol = TOL[dtype]
        torch.testing.assert_close(
            got, exp, rtol=rtol, atol=atol * max(1.0, exp.abs().max().item())
        )
    if not cross:
        torch.testing.assert_close(ghost_gram(*cast[:2], diag=True, backend=backend), got.diag())


def test_opcheck():
    a, g = torch.randn(4, 3, 5), torch.randn(4, 3, 2)
    torch.library.opcheck(_ghost_gram_op, (a, g, None, None, False, "reference"))
    torch.library.opcheck(_ghost_gram_op, (a, g, a[:2], g[:2], False, "reference"))
    torch.library.opcheck(_ghost_gram_op, (a, g, None, None, True, "reference"))


def test_bad_inputs():
    a, g = torch.randn(4, 3, 5), torch.randn(4, 2, 2)
    with pytest.raises(ValueError, match="equal B and T"):
        ghost_gram(a, g)
    with pytest.raises(ValueError, match="dtype"):
        ghost_gram(a, torch.randn(4, 3, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="both a2 and g2"):
        ghost_gram(a, torch.randn(4, 3, 2), a2=a)
    with pytest.raises((ValueError, RuntimeError)):
        ghost_gram(a, torch.randn(4, 3, 2), backend="nope")
