"""The cpu write phase's fused loop (csrc/cpu/optim_step.cpp ``block_proj_grad``: project="grad",
no grad_scale) in prefetch groups of 16 elements and their tails, at every ISA level this CPU
supports (forced, each in a fresh process) and at 1 and 2 threads: the reference's values within
per-dtype tolerances, the general loop's bits (a grad_scale of exactly 1 takes it), and the same
bits at every level and thread count (the writes are element-wise, no FMA contraction)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import uno

pytestmark = pytest.mark.skipif(
    "cpu" not in uno._backends.info("cpu").devices, reason="built without the cpu kernels"
)

# Runs in a fresh process (UNO_CPU_ISA is read once, when _C is imported); prints one JSON object:
# {case: digest of the params and states after the step}. Every case also checks the reference and
# the general loop itself, so a failure names the case.
_SCRIPT = r"""
import hashlib, json, sys
import torch
from uno import _abi
from uno._backends import cpu, reference

SIZES = (1, 15, 16, 17, 31, 1601, 2048 + 33, 70_001)  # groups and tails, several blocks, 8 chunks
TOL = {torch.float32: 2e-6, torch.float64: 1e-13, torch.bfloat16: 2e-2}
CASES = {  # name: (kind, hyper, flags, number of states)
    "adam": (_abi.KIND_ADAM, [1e-2, 0.9, 0.999, 1e-8, 0.0], 0, 2),
    "adamw": (_abi.KIND_ADAM, [1e-2, 0.9, 0.999, 1e-8, 0.1], _abi.FLAG_DECOUPLED, 2),
    "amsgrad-max": (_abi.KIND_ADAM, [1e-2, 0.8, 0.99, 1e-6, 0.05],
                    _abi.FLAG_AMSGRAD | _abi.FLAG_MAXIMIZE, 3),
    "sgd-mom": (_abi.KIND_SGD, [0.05, 0.9, 0.1, 0.01], 0, 1),
}


def run(be, name, dtype, k, threads, scale):
    kind, hyper, flags, nst = CASES[name]
    gen = torch.Generator().manual_seed(k)
    sd = torch.float32 if dtype == torch.bfloat16 else dtype
    params = [torch.randn(n, generator=gen).to(dtype) for n in SIZES]
    grads = [torch.randn(n, generator=gen).to(dtype) for n in SIZES]
    states = [[(0.1 * torch.randn(n, generator=gen)).abs().to(sd) for n in SIZES]
              for _ in range(nst)]
    rows = [torch.randn(k, n, generator=gen).to(sd) for n in SIZES]
    coef = torch.randn(k, generator=gen, dtype=torch.float64) * 0.01
    steps = [torch.tensor(3.0) for _ in SIZES] if kind == _abi.KIND_ADAM else []
    s = states + [[]] * (3 - nst)
    a = _abi.StepArgs(params, grads, s[0], s[1], s[2], steps, rows, coef,
                      None if scale is None else torch.tensor(scale), None, kind,
                      _abi.PHASE_WRITE, hyper, flags)
    torch.set_num_threads(threads)
    be.optim_step(a)
    return [*params, *(t for st in states for t in st)]


def digest(ts):
    h = hashlib.sha256()
    for t in ts:
        h.update(t.contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


out = {}
for name in CASES:
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        for k in (1, 3):
            fused = run(cpu, name, dtype, k, 1, None)
            case = f"{name}/{str(dtype)[6:]}/k={k}"
            general = run(cpu, name, dtype, k, 1, 1.0)  # grad_scale 1: the general loop
            assert digest(fused) == digest(general), case + ": fused != general loop"
            assert digest(run(cpu, name, dtype, k, 2, None)) == digest(fused), case + ": 2 threads"
            want = run(reference, name, dtype, k, 1, None)
            tol = TOL[dtype]
            for x, y in zip(fused, want):
                x, y = x.double(), y.double()
                err = float((x - y).abs().max() / (1 + y.abs().max()))
                assert err <= tol, f"{case}: {err:.3g} from the reference"
            out[case] = digest(fused)
print(json.dumps(out))
"""


def _digests(level: str) -> dict:
    env = dict(os.environ, UNO_CPU_ISA=level)
    res = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True)
    assert res.returncode == 0, f"{level}: {res.stderr[-2000:]}"
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_fused_write_loop_at_every_level():
    """At every supported level: the reference within tolerance, the general loop's bits, the
    same bits at 2 threads; and one set of bits for all levels."""
    from uno import _C

    levels = [v for v in ("x86-64-v2", "x86-64-v3", "x86-64-v4")
              if v in getattr(_C, "cpu_isa_supported", [])]  # fmt: skip
    if not levels:
        pytest.skip("not an x86-64 dispatch build")
    got = {lvl: _digests(lvl) for lvl in levels}
    first = got[levels[0]]
    assert len(first) == 4 * 3 * 2
    for lvl in levels[1:]:
        assert got[lvl] == first, f"{lvl} writes other bits than {levels[0]}"
