"""The `inner` primitive of every backend against the reference: dot products and Gram, deterministic.

The ops tests exercise the primitives through `uno.project_` & co.; these tests pin the contract itself
(docs/kernels.md): row strides (a Basis slice vs a user's (k, *shape) tensor), zero-size pieces,
half-precision x with float32 rows, determinism, thread counts, and the errors of the adapters.
"""

from __future__ import annotations

import pytest
import torch

from backend_params import dtypes_for
from kernels.cases import FAST, SHAPES, _row_dtype, _rows_for, _x_for
from uno import _backends
from uno._backends import reference


@pytest.mark.parametrize("backend,device", FAST)
@pytest.mark.parametrize("ns", SHAPES, ids=lambda s: "-".join(map(str, s)))
@pytest.mark.parametrize("k", [1, 3, 8])
@pytest.mark.parametrize("strided", [False, True], ids=["blocks", "strided"])
def test_inner_matches_reference(backend, device, ns, k, strided):
    mod = _backends.module(backend)
    gen = torch.Generator().manual_seed(k * 7 + len(ns))
    for dtype in dtypes_for(backend, device):
        rows = _rows_for(ns, k, _row_dtype(dtype), device, strided=strided, gen=gen)
        x = _x_for(ns, dtype, device, gen)
        for with_gram in (False, True):
            for xx in (x, None):
                got = mod.inner(xx, rows, with_gram).cpu()
                want = reference.inner(xx, rows, with_gram).cpu()
                assert got.dtype == torch.float64 and got.shape == want.shape
                scale = want.abs().max().clamp_min(1.0)
                assert torch.allclose(got, want, rtol=1e-10, atol=1e-10 * float(scale)), (
                    f"{dtype} with_gram={with_gram} x={'yes' if xx else 'None'}: "
                    f"max err {(got - want).abs().max():.3e}"
                )


@pytest.mark.parametrize("backend,device", FAST)
def test_reductions_deterministic(backend, device):
    mod = _backends.module(backend)
    gen = torch.Generator().manual_seed(5)
    # The Triton interpreter is slow: a smaller vector there (still several programs).
    ns = [10_003, 17, 5_000] if (backend, device) == ("triton", "cpu") else [100_003, 17, 50_000]
    rows = _rows_for(ns, 4, torch.float32, device, strided=True, gen=gen)
    x = _x_for(ns, torch.float32, device, gen)
    first = mod.inner(x, rows, True)
    for _ in range(3):
        assert torch.equal(mod.inner(x, rows, True), first)


def test_cpu_backend_honours_thread_count():
    if "cpu" not in _backends.info("cpu").devices:
        pytest.skip(_backends.info("cpu").reason)
    mod = _backends.module("cpu")
    gen = torch.Generator().manual_seed(9)
    ns = [300_001, 7, 123_457]
    rows = _rows_for(ns, 3, torch.float32, "cpu", strided=True, gen=gen)
    x = _x_for(ns, torch.float32, "cpu", gen)
    want = reference.inner(x, rows, True)
    old = torch.get_num_threads()
    try:
        results = {}
        for n in (1, 2, 3, 8):
            torch.set_num_threads(n)
            results[n] = mod.inner(x, rows, True)
            assert torch.equal(mod.inner(x, rows, True), results[n]), "not deterministic"
            assert torch.allclose(results[n], want, rtol=1e-11, atol=1e-9)
    finally:
        torch.set_num_threads(old)


def test_cpu_adapter_rejects_int_and_mixed_dtypes():
    if "cpu" not in _backends.info("cpu").devices:
        pytest.skip(_backends.info("cpu").reason)
    mod = _backends.module("cpu")
    with pytest.raises(TypeError, match="dtype"):
        mod.inner([torch.ones(4, dtype=torch.int32)], [torch.ones(1, 4, dtype=torch.int32)], False)
    with pytest.raises(TypeError, match="mixes dtypes"):
        mod.inner(None, [torch.ones(1, 4), torch.ones(1, 4, dtype=torch.float64)], True)
    with pytest.raises(ValueError, match="empty"):
        mod.inner(None, [], True)
    with pytest.raises(ValueError, match=r"\(r, 2\)"):
        mod.combine([torch.ones(1, 4)], [torch.ones(2, 4)], torch.ones(1, 3, dtype=torch.float64))


def test_cpu_kernels_validate_raw_arguments():
    """The _C entry points check their lists themselves (a ValueError, never a crash)."""
    if "cpu" not in _backends.info("cpu").devices:
        pytest.skip(_backends.info("cpu").reason)
    from uno import _C

    out = torch.zeros(3, dtype=torch.float64)
    r = torch.ones(2, 4)
    with pytest.raises(ValueError, match="null"):
        _C.inner_cpu([], [0], [4], [4], 2, False, 0, 0, int(out.data_ptr()), 1)
    with pytest.raises(ValueError, match="row stride"):
        _C.inner_cpu([], [r.data_ptr()], [2], [4], 2, False, 0, 0, int(out.data_ptr()), 1)
    with pytest.raises(ValueError, match="k must be"):
        _C.inner_cpu([], [r.data_ptr()], [4], [4], 0, False, 0, 0, int(out.data_ptr()), 1)
    with pytest.raises(ValueError, match="differ in length"):
        _C.inner_cpu([], [r.data_ptr()], [4, 4], [4], 2, False, 0, 0, int(out.data_ptr()), 1)
    with pytest.raises(ValueError, match="num_threads"):
        _C.inner_cpu([], [r.data_ptr()], [4], [4], 2, False, 0, 0, int(out.data_ptr()), 0)
    with pytest.raises((ValueError, TypeError)):
        _C.inner_cpu([], [r.data_ptr()], [4], [4], 2, False, 0, 7, int(out.data_ptr()), 1)
