"""The constants shared across the ABI agree on both sides: python/uno/_abi.py and
csrc/include/uno/abi.h (exported by the compiled core as ``uno._C.abi``)."""

from __future__ import annotations

import itertools

import pytest
import torch

from uno import _abi, _backends

NAMES = [n for n in dir(_abi) if n.startswith(("KIND_", "PHASE_", "FLAG_"))]


@pytest.fixture(scope="module")
def c_abi():
    if "cpu" not in _backends.info("cpu").devices:
        pytest.skip(_backends.info("cpu").reason)
    from uno import _C

    return _C.abi


def test_step_constants_match(c_abi):
    c_names = sorted(n for n in dir(c_abi) if n.startswith(("KIND_", "PHASE_", "FLAG_")))
    assert c_names == sorted(NAMES)
    for n in NAMES:
        assert getattr(c_abi, n) == getattr(_abi, n), n


def test_dtype_codes_match(c_abi):
    assert c_abi.DTYPE_CODES == {
        str(d).removeprefix("torch."): c for d, c in _abi.DTYPE_CODES.items()
    }


def test_dtype_pairs_match(c_abi):
    py_pairs = {
        (_abi.DTYPE_CODES[x], _abi.DTYPE_CODES[r])
        for x, r in itertools.product(_abi.FLOAT_DTYPES, repeat=2)
        if (x, r) in _abi.PAIRS
    }
    assert set(map(tuple, c_abi.PAIRS)) == py_pairs
    assert (_abi.DTYPE_CODES[torch.float16], _abi.DTYPE_CODES[torch.float32]) in py_pairs


def test_flags_are_distinct_bits():
    flags = [getattr(_abi, n) for n in NAMES if n.startswith("FLAG_")]
    assert all(f > 0 and f & (f - 1) == 0 for f in flags)
    assert len(set(flags)) == len(flags)
