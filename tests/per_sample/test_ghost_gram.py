"""The ghost_gram op: every backend against the float64 reference and against materialized per-sample
gradients; strided inputs; determinism; opcheck; bad inputs."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from backend_params import BACKEND_DEVICES
from uno.ops.library import ghost_gram_op as _ghost_gram_op
from uno.per_sample import ghost_gram
from uno.reference.ghost_gram import ghost_gram as ref

# Relative to max |G|: float32/16-bit inputs form the d- and p-sums in float32 (documented).
RTOL = {torch.float32: 1e-5, torch.float64: 1e-12, torch.float16: 1e-5, torch.bfloat16: 1e-5}


def _materialized(a, g, a2=None, g2=None):
    m1 = torch.einsum("btp,btd->bpd", g.double(), a.double()).flatten(1)
    m2 = m1 if a2 is None else torch.einsum("btp,btd->bpd", g2.double(), a2.double()).flatten(1)
    return m1 @ m2.T


def _dtypes(backend, device):
    out = [torch.float32, torch.float64, torch.float16]
    if not (backend == "triton" and device == "cpu"):
        out.append(torch.bfloat16)
    return out


def _close(got, exp, dtype):
    scale = max(1.0, exp.abs().max().item())
    assert got.dtype == torch.float64
    assert (got - exp).abs().max().item() <= RTOL[dtype] * scale, (got - exp).abs().max()


def _inputs(seed, b, t, d, p, b2, t2, device, dtype, strided=False):
    gen = torch.Generator().manual_seed(seed)

    def r(*shape):
        x = torch.randn(*shape, generator=gen).to(dtype)
        if strided:  # the layout of a transposed unfold: T is the fastest dimension
            x = x.transpose(1, 2).contiguous().transpose(1, 2)
        return x.to(device)

    return r(b, t, d), r(b, t, p), r(b2, t2, d), r(b2, t2, p)


# Small sizes: the Triton interpreter runs every program in Python.
@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
@settings(max_examples=6, deadline=None)
@given(
    b=st.integers(1, 5),
    t=st.integers(1, 20),
    d=st.integers(1, 20),
    p=st.integers(1, 9),
    b2=st.integers(1, 4),
    t2=st.integers(1, 18),
    strided=st.booleans(),
    dtype_i=st.integers(0, 3),
)
def test_matches_reference(backend, device, b, t, d, p, b2, t2, strided, dtype_i):
    dts = _dtypes(backend, device)
    dtype = dts[dtype_i % len(dts)]
    a, g, a2, g2 = _inputs(b * 1000 + t * 10 + d, b, t, d, p, b2, t2, device, dtype, strided)
    # The oracle: materialized per-sample gradients of the (rounded) inputs, in float64.
    _close(ghost_gram(a, g, backend=backend).cpu(), _materialized(a.cpu(), g.cpu()), dtype)
    _close(
        ghost_gram(a, g, a2, g2, backend=backend).cpu(),
        _materialized(a.cpu(), g.cpu(), a2.cpu(), g2.cpu()),
        dtype,
    )
    full = ghost_gram(a, g, backend=backend)
    assert torch.equal(full, full.T)  # the symmetric Gram is computed once per pair and mirrored
    _close(ghost_gram(a, g, diag=True, backend=backend).cpu(), full.diag().cpu(), dtype)


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
def test_matches_spec_function(backend, device):
    """The op against the reference function itself (float64 oracle of float32 inputs)."""
    a, g, a2, g2 = _inputs(7, 6, 17, 33, 5, 3, 9, device, torch.float32)
    _close(ghost_gram(a, g, backend=backend).cpu(), ref(a.cpu(), g.cpu()), torch.float32)
    _close(
        ghost_gram(a, g, a2, g2, backend=backend).cpu(),
        ref(a.cpu(), g.cpu(), a2.cpu(), g2.cpu()),
        torch.float32,
    )
    _close(
        ghost_gram(a, g, diag=True, backend=backend).cpu(),
        ref(a.cpu(), g.cpu(), diag=True),
        torch.float32,
    )


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
def test_empty_and_degenerate(backend, device):
    z = torch.zeros(0, 3, 4, device=device)
    assert ghost_gram(z, torch.zeros(0, 3, 2, device=device), backend=backend).shape == (0, 0)
    a, g = torch.randn(3, 0, 4, device=device), torch.randn(3, 0, 2, device=device)
    assert torch.equal(
        ghost_gram(a, g, backend=backend).cpu(), torch.zeros(3, 3, dtype=torch.float64)
    )
    a, g = torch.randn(2, 3, 0, device=device), torch.randn(2, 3, 5, device=device)
    assert torch.equal(ghost_gram(a, g, diag=True, backend=backend).cpu(), torch.zeros(2).double())


def test_cpu_deterministic_across_threads():
    from uno import _backends

    if "cpu" not in _backends.info("cpu").devices:
        pytest.skip("no compiled CPU kernels")
    # 64 samples x 16 positions x (64 + 64) features: ~68M multiply-adds, enough for two threads.
    a, g, _, _ = _inputs(3, 64, 16, 64, 64, 1, 1, "cpu", torch.float32)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = ghost_gram(a, g, backend="cpu")
        torch.set_num_threads(2)
        two = ghost_gram(a, g, backend="cpu")
    finally:
        torch.set_num_threads(old)
    assert torch.equal(one, two)
    assert torch.equal(one, ghost_gram(a, g, backend="cpu"))


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_gpu_larger_shapes(backend):
    """A conv-like layer (T = 49, d = 512) on the GPU backends against the CPU kernel's float64."""
    a, g, a2, g2 = _inputs(1, 20, 49, 512, 64, 7, 30, "cuda", torch.float64, strided=True)
    _close(ghost_gram(a, g, backend=backend).cpu(), ref(a.cpu(), g.cpu()), torch.float64)
    _close(
        ghost_gram(a, g, a2, g2, backend=backend).cpu(),
        ref(a.cpu(), g.cpu(), a2.cpu(), g2.cpu()),
        torch.float64,
    )


@pytest.mark.parametrize("backend,device", BACKEND_DEVICES)
def test_opcheck(backend, device):
    a, g = torch.randn(4, 3, 5, device=device), torch.randn(4, 3, 2, device=device)
    at = a.transpose(1, 2).contiguous().transpose(1, 2)
    for args in (
        (a, g, None, None, False, backend),
        (at, g, a[:2], g[:2], False, backend),
        (a, g, None, None, True, backend),
    ):
        torch.library.opcheck(_ghost_gram_op, args)


def test_bad_inputs():
    a, g = torch.randn(4, 3, 5), torch.randn(4, 2, 2)
    with pytest.raises(ValueError, match="equal B and T"):
        ghost_gram(a, g)
    with pytest.raises(ValueError, match="dtype"):
        ghost_gram(a, torch.randn(4, 3, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="both a2 and g2"):
        ghost_gram(a, torch.randn(4, 3, 2), a2=a)
    with pytest.raises(ValueError, match="bad second batch"):
        ghost_gram(a, torch.randn(4, 3, 2), a2=torch.randn(2, 3, 4), g2=torch.randn(2, 3, 2))
    with pytest.raises(ValueError, match="p=2"):
        ghost_gram(a, torch.randn(4, 3, 2), a2=torch.randn(2, 3, 5), g2=torch.randn(2, 3, 3))
    with pytest.raises(ValueError, match="diag"):
        ghost_gram(a, torch.randn(4, 3, 2), a, torch.randn(4, 3, 2), diag=True)
    with pytest.raises(TypeError, match="float32"):
        ghost_gram(a.int(), torch.randn(4, 3, 2).int())
    with pytest.raises(ValueError, match="unknown backend"):
        ghost_gram(a, torch.randn(4, 3, 2), backend="nope")


def test_triton_bfloat16_interpreter_error():
    from uno import _triton

    if not _triton.INTERPRET:
        pytest.skip("only the CPU interpreter lacks bfloat16")
    a, g = torch.randn(2, 3, 4).bfloat16(), torch.randn(2, 3, 5).bfloat16()
    with pytest.raises(TypeError, match="bfloat16"):
        ghost_gram(a, g, backend="triton")


def test_cpu_kernel_rejects_bad_arguments():
    """The C++ entry point validates before writing (a caller bypassing the op gets ValueError)."""
    from uno import _backends

    if "cpu" not in _backends.info("cpu").devices:
        pytest.skip("no compiled CPU kernels")
    from uno import _C

    out = torch.full((2, 2), 7.0, dtype=torch.float64)
    ok = dict(
        a_ptr=1, a_strides=[1, 1, 1], g_ptr=1, g_strides=[1, 1, 1], a2_ptr=1,
        a2_strides=[1, 1, 1], g2_ptr=1, g2_strides=[1, 1, 1], b1=2, t1=1, b2=2, t2=1, d=1, p=1,
        dtype=0, diag=False, symmetric=True, out_ptr=int(out.data_ptr()), num_threads=1,
    )  # fmt: skip
    for bad in (
        dict(dtype=9),
        dict(num_threads=0),
        dict(a_strides=[1, 1]),
        dict(b2=3),
        dict(diag=True, symmetric=False),
        dict(t1=-1),
        dict(out_ptr=0),
    ):
        with pytest.raises(ValueError):
            _C.ghost_gram_cpu(**{**ok, **bad})
    assert torch.equal(out, torch.full((2, 2), 7.0, dtype=torch.float64))


def test_stale_compiled_core_falls_back_by_default(monkeypatch):
    """A _C built before ghost_gram existed: the default backend moves on, an explicit one raises."""
    from uno import _backends

    if "cpu" not in _backends.info("cpu").devices:
        pytest.skip("no compiled CPU kernels")
    from uno import _C

    monkeypatch.delenv("UNO_BACKEND", raising=False)
    a, g = torch.randn(3, 2, 4), torch.randn(3, 2, 5)
    monkeypatch.delattr(_C, "ghost_gram_cpu")
    _close(ghost_gram(a, g), _materialized(a, g), torch.float32)
    with pytest.raises(RuntimeError, match="lacks ghost_gram_cpu"):
        ghost_gram(a, g, backend="cpu")
