"""The `combine` primitive of every backend against float64 torch: out of place and in place.

The ops tests exercise the primitives through `uno.project_` & co.; these tests pin the contract itself
(docs/kernels.md): row strides (a Basis slice vs a user's (k, *shape) tensor), zero-size pieces,
half-precision x with float32 rows, determinism, thread counts, and the errors of the adapters.
"""

from __future__ import annotations

import pytest
import torch

from backend_params import TOL
from kernels.cases import FAST, SHAPES, _rows_for
from uno import _backends


@pytest.mark.parametrize("backend,device", FAST)
@pytest.mark.parametrize("ns", SHAPES, ids=lambda s: "-".join(map(str, s)))
@pytest.mark.parametrize("k,r", [(1, 1), (2, 1), (2, 2), (3, 2), (4, 4), (5, 3), (6, 6), (9, 5)])
@pytest.mark.parametrize("inplace", [False, True], ids=["out", "inplace"])
def test_combine_matches_reference(backend, device, ns, k, r, inplace):
    mod = _backends.module(backend)
    gen = torch.Generator().manual_seed(200 + k * r + len(ns))
    for dtype in (torch.float32, torch.float64):
        rows = _rows_for(ns, k, dtype, device, strided=True, gen=gen)
        m = torch.randn(r, k, generator=gen, dtype=torch.float64).to(device)
        want = [(m @ rr.double()).to(dtype) for rr in rows]
        if inplace:
            out = [rr[:r] for rr in rows]  # the first r rows of the same memory
        else:
            out = [torch.empty(r, rr.shape[1], dtype=dtype, device=device) for rr in rows]
        mod.combine(out, rows, m)
        for o, w in zip(out, want):
            assert torch.allclose(o.double(), w.double(), **TOL[dtype])


@pytest.mark.parametrize("k,r", [(8, 8), (16, 16), (20, 11), (24, 24), (25, 25), (33, 7), (64, 64)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpu_tiled_combine_across_blocks_pieces_threads_and_in_place(k, r, dtype):
    """5 <= k <= 24 takes the cpu panel kernel (full panels read straight from the rows, except in
    place with more than one group of output rows and for a range's last panel, which are packed;
    outputs stored from the registers, streamed when a row is 64-byte aligned), k > 24 the blocked
    kernel (at x86-64-v4 64-column blocks when every output row is 64-byte aligned, L2-sized blocks
    otherwise; the next block prefetched during the tiles): pieces shorter than, equal to and across
    panel and block boundaries, with a tail shorter than a panel; the float64 oracle within
    tolerance, the same bits at 1 and 2 threads, for aligned and shifted (unaligned) outputs, and
    in place (the packed path against the unpacked one at r > 8)."""
    if "cpu" not in _backends.info("cpu").devices:
        pytest.skip("built without the cpu kernels")
    mod = _backends.module("cpu")
    gen = torch.Generator().manual_seed(k + r)
    ns = [1, 63, 64, 65, 64 * 9 + 17, 40_000]
    rows = [torch.randn(k, n, generator=gen, dtype=torch.float64).to(dtype) for n in ns]
    m = torch.randn(r, k, generator=gen, dtype=torch.float64)
    want = [(m @ rr.double()).to(dtype) for rr in rows]
    before = torch.get_num_threads()
    got = []
    try:
        for th, shift in ((1, 0), (2, 0), (1, 1), (2, 1)):
            torch.set_num_threads(th)
            out = [torch.empty(r, n + shift, dtype=dtype)[:, shift:] for n in ns]
            mod.combine(out, rows, m)
            got.append(out)
        torch.set_num_threads(1)
        inplace = [rr.clone() for rr in rows]
        mod.combine([x[:r] for x in inplace], inplace, m)
    finally:
        torch.set_num_threads(before)
    for o, w in zip(got[0], want):
        assert torch.allclose(o.double(), w.double(), **TOL[dtype])
    assert all(torch.equal(a, b) for run in got[1:] for a, b in zip(got[0], run))
    assert all(torch.equal(a[:r], b) for a, b in zip(inplace, got[0]))
