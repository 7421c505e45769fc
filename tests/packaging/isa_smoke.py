"""Smoke test of a built ``_C`` at the ISA level it picks: ``python isa_smoke.py PATH/_C*.so``.

Runs without torch and without importing the ``uno`` package (``uno/__init__`` imports torch, which
under ``qemu-x86_64 -cpu Nehalem`` takes minutes and exercises torch's own CPU dispatch, not ours):
the extension module is loaded from its file and driven with numpy buffers. It checks a small
``project`` (k = 2), a projected Adam step (the coefficient phase, then the write phase) and a
symmetric ghost Gram against plain float64 numpy, and prints one JSON line: the level that ran
and a SHA-256 of every output, so that a caller can hold levels and runs against each other
(tests/packaging/test_isa_levels.py, test_qemu.py). Exit status 1 when a check fails.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import sys

import numpy as np

F32, F64 = 0, 1  # dtype codes (csrc/include/uno/abi.h)
KIND_ADAM, PHASE_WRITE, PHASE_GRAD_COEF = 1, 0, 1


def load(path: str):
    """Imports the extension module at ``path`` as ``uno._C`` without the ``uno`` package."""
    loader = importlib.machinery.ExtensionFileLoader("uno._C", path)
    spec = importlib.util.spec_from_file_location("uno._C", path, loader=loader)
    assert spec is not None
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def ptr(a: np.ndarray) -> int:
    return int(a.ctypes.data)


def digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def check_project(C, dtype: type, code: int, rng: np.random.Generator) -> tuple[str, str]:
    """x <- x - y Q over two pieces; returns the digests of x and of the returned measures."""
    n1, n2, k = 1000, 37, 2
    q = rng.standard_normal((k, n1 + n2)).astype(dtype)
    x = rng.standard_normal(n1 + n2).astype(dtype)
    y = rng.standard_normal(k)
    want = x.astype(np.float64) - y @ q.astype(np.float64)
    pieces = [x[:n1], x[n1:]]
    rows = [q[:, :n1], q[:, n1:]]  # row stride n1 + n2 (a Basis-like layout)
    out = np.zeros(k + 1)
    C.project_cpu([ptr(p) for p in pieces], [ptr(r) for r in rows], [n1 + n2] * 2, [n1, n2], k,
                  ptr(y), code, code, ptr(out), 1)  # fmt: skip
    tol = 1e-5 if dtype == np.float32 else 1e-12
    xs = x.astype(np.float64)
    measures = np.concatenate([q.astype(np.float64) @ xs, [xs @ xs]])
    assert np.allclose(xs, want, rtol=tol, atol=tol), "project: x"
    assert np.allclose(out, measures, rtol=1e-9, atol=1e-9), "project: measures"
    return digest(x), digest(out)


def check_adam(C, rng: np.random.Generator) -> tuple[str, str]:
    """One projected Adam step (project='grad') on a float32 parameter; digests of the writes, coefs."""
    n, k = 777, 2
    lr, b1, b2, eps, wd = 1e-2, 0.9, 0.999, 1e-8, 0.0
    qr, _ = np.linalg.qr(rng.standard_normal((n, k)))
    q = np.ascontiguousarray(qr.T).astype(np.float32)
    p = rng.standard_normal(n).astype(np.float32)
    g = rng.standard_normal(n).astype(np.float32)
    m = (0.1 * rng.standard_normal(n)).astype(np.float32)
    v = np.abs(0.1 * rng.standard_normal(n)).astype(np.float32)
    step = np.array([3.0], dtype=np.float32)  # already incremented, as the optimizer passes it
    hyper = [lr, b1, b2, eps, wd]
    p0, g0, m0, v0 = (a.astype(np.float64) for a in (p, g, m, v))
    coef = np.zeros(k)
    args = dict(s1_ptrs=[ptr(m)], s2_ptrs=[ptr(v)], s3_ptrs=[], step_ptrs=[ptr(step)],
                row_ptrs=[ptr(q)], lds=[n], ns=[n], k=k, grad_scale_ptr=0, found_inf_ptr=0,
                hyper=hyper, flags=0, p_dtype=F32, r_dtype=F32, s_dtype=F32, num_threads=1)  # fmt: skip
    C.optim_step_cpu(KIND_ADAM, PHASE_GRAD_COEF, [ptr(p)], [ptr(g)], coef_ptr=0, out_ptr=ptr(coef),
                     **args)  # fmt: skip
    q64 = q.astype(np.float64)
    assert np.allclose(coef, q64 @ g0, rtol=1e-9, atol=1e-9), "adam: coefficients"
    C.optim_step_cpu(KIND_ADAM, PHASE_WRITE, [ptr(p)], [ptr(g)], coef_ptr=ptr(coef), out_ptr=0,
                     **args)  # fmt: skip
    gp = g0 - coef @ q64
    m1 = m0 + (1 - b1) * (gp - m0)
    v1 = v0 * b2 + (1 - b2) * gp * gp
    t = float(step[0])
    denom = np.sqrt(v1) / np.sqrt(1 - b2**t) + eps
    p1 = p0 - lr / (1 - b1**t) * m1 / denom
    assert np.allclose(m, m1, rtol=1e-5, atol=1e-6), "adam: exp_avg"
    assert np.allclose(v, v1, rtol=1e-5, atol=1e-7), "adam: exp_avg_sq"
    assert np.allclose(p, p1, rtol=1e-5, atol=1e-5), "adam: param"
    return digest(p, m, v), digest(coef)


def check_ghost(C, rng: np.random.Generator) -> str:
    """The symmetric ghost Gram of (B, T, d) inputs and (B, T, p) output gradients, float64."""
    B, T, d, pp = 5, 3, 7, 4
    a = rng.standard_normal((B, T, d))
    g = rng.standard_normal((B, T, pp))
    out = np.zeros((B, B))
    st_a, st_g = [T * d, d, 1], [T * pp, pp, 1]
    C.ghost_gram_cpu(ptr(a), st_a, ptr(g), st_g, ptr(a), st_a, ptr(g), st_g, B, T, B, T, d, pp, F64,
                     False, True, ptr(out), 1)  # fmt: skip
    per_sample = np.einsum("bsp,bsd->bpd", g, a).reshape(B, -1)  # G_i^T A_i
    assert np.allclose(out, per_sample @ per_sample.T, rtol=1e-12, atol=1e-10), "ghost_gram"
    assert np.array_equal(out, out.T), "ghost_gram: symmetric"
    return digest(out)


def main(path: str) -> int:
    C = load(path)
    report: dict = {"level": C.cpu_isa, "error": C.cpu_isa_error, "built": list(C.cpu_isa_built)}
    if C.cpu_isa_error:
        try:  # every kernel must refuse to run
            C.project_cpu([], [], [], [], 1, 1, F64, F64, 1, 1)
        except RuntimeError as e:
            report["kernel_error"] = str(e)
        print(json.dumps(report))
        return 0
    rng = np.random.default_rng(17)
    try:
        report["project_f32_x"], report["project_f32_out"] = check_project(C, np.float32, F32, rng)
        report["project_f64_x"], report["project_f64_out"] = check_project(C, np.float64, F64, rng)
        report["adam_writes"], report["adam_coef"] = check_adam(C, rng)
        report["ghost"] = check_ghost(C, rng)
        report["ok"] = True
    except AssertionError as e:
        report["ok"], report["failed"] = False, str(e)
    print(json.dumps(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
