"""Which threads the CPU kernels run on (csrc/include/uno/parallel.h): the pool of the OpenMP runtime
torch loaded, borrowed through ``GOMP_parallel``, or uno's own ``std::thread`` helpers
(``UNO_CPU_THREADS=std``, or no OpenMP runtime in the process). Both must give the same bits: a
kernel's chunks and their order do not depend on which thread runs them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import uno
from uno import _C

# Every multi-threaded CPU kernel at 2 threads on inputs large enough to be split (parallel.h:
# kMinWorkPerThread), in float32 and float64; prints the pool and one digest of all outputs.
_SCRIPT = """
import hashlib, torch
import uno, uno.optim
from uno import _C
from uno._backends import cpu as be
torch.set_num_threads(2)
h = hashlib.sha256()
for dt in (torch.float32, torch.float64):
    g = torch.Generator().manual_seed(7)
    ns = (1, 4099, 600_001)
    for k in (1, 4, 16):
        x = [torch.randn(n, generator=g, dtype=dt) for n in ns]
        rows = [torch.randn(k, n, generator=g, dtype=dt) for n in ns]
        h.update(be.inner(x, rows, True).numpy().tobytes())
        be.project(x, rows, torch.randn(k, generator=g, dtype=torch.float64))
        for p in x:
            h.update(p.numpy().tobytes())
    for k in (5, 16, 33):
        rows = torch.randn(k, 300_000 + 5, generator=g, dtype=dt)
        m = torch.randn(k, k, generator=g, dtype=torch.float64)
        out = torch.empty_like(rows)
        be.combine([out], [rows], m)
        h.update(out.numpy().tobytes())
    params = [torch.nn.Parameter(torch.randn(n, generator=g, dtype=dt)) for n in ns]
    basis = uno.orthonormalize([[torch.randn(n, generator=g, dtype=dt) for n in ns] for _ in range(2)])
    opt = uno.optim.ProjectedAdam(params, basis=basis, lr=1e-2)
    for _ in range(3):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g, dtype=dt)
        opt.step()
    for p in params:
        h.update(p.detach().numpy().tobytes())
print(_C.cpu_thread_pool(), h.hexdigest())
"""


def _env(pool: str | None) -> dict[str, str]:
    """The environment of a subprocess that imports the uno this test imported (a source checkout
    or the installed package) with UNO_CPU_THREADS=pool (unset for None)."""
    env = dict(os.environ)
    env.pop("UNO_CPU_THREADS", None)
    if pool is not None:
        env["UNO_CPU_THREADS"] = pool
    src = str(Path(uno.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(
        [src] + ([env["PYTHONPATH"]] if "PYTHONPATH" in env else [])
    )
    return env


def _run(pool: str | None) -> tuple[str, str]:
    res = subprocess.run([sys.executable, "-c", _SCRIPT], env=_env(pool), capture_output=True,
                         text=True, timeout=600)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    name, digest = res.stdout.split()
    return name, digest


def _gomp_loaded() -> bool:
    maps = Path("/proc/self/maps")
    return maps.exists() and any(s in maps.read_text() for s in ("libgomp", "libiomp5"))


def test_pool_name_matches_the_process():
    """With torch's libgomp in the process the kernels borrow its pool; the name is one of two."""
    name = _C.cpu_thread_pool()
    assert name in ("openmp", "std")
    if os.environ.get("UNO_CPU_THREADS") == "std":
        assert name == "std"
    elif sys.platform.startswith("linux"):
        torch.ones(4).sum()  # (torch loads its OpenMP runtime at import; an op does not change it)
        assert (name == "openmp") == _gomp_loaded()


def test_openmp_pool_and_own_threads_give_the_same_bits():
    """inner, project, combine (register, streamed and blocked paths) and ProjectedAdam at 2
    threads: the same digest on torch's OpenMP pool and on uno's own threads."""
    default, forced = _run(None), _run("std")
    assert forced[0] == "std"
    if default[0] != "openmp":
        pytest.skip("no OpenMP runtime in this process: both runs used uno's own threads")
    assert default[1] == forced[1]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() on this platform")
def test_forked_child_runs_the_kernels_after_the_parent_used_the_pool():
    """libgomp's pool does not survive fork(): a child that asked it for a team waited forever. The
    fork handler in parallel.h sends the child to uno's own threads. (The child compares with numpy:
    torch's own OpenMP ops hang in such a child, which is torch's behaviour, not uno's.)"""
    from uno._backends import cpu as be

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        g = torch.Generator().manual_seed(3)
        rows = torch.randn(16, 600_000, generator=g)
        m = torch.randn(16, 16, generator=g, dtype=torch.float64)
        out = torch.empty_like(rows)
        be.combine([out], [rows], m)  # the parent uses the pool (when there is one)
        want = out.numpy().tobytes()
        other = torch.empty_like(rows)
        pid = os.fork()
        if pid == 0:  # the child: never returns into pytest
            code = 1
            try:
                be.combine([other], [rows], m)
                code = 0 if other.numpy().tobytes() == want else 3
            finally:
                os._exit(code)
        deadline = time.monotonic() + 120
        status = None
        while time.monotonic() < deadline:
            done, st = os.waitpid(pid, os.WNOHANG)
            if done:
                status = os.waitstatus_to_exitcode(st)
                break
            time.sleep(0.05)
        if status is None:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        assert status == 0, f"child: {'hung' if status is None else status}"
    finally:
        torch.set_num_threads(before)


# A parent whose torch used the OpenMP pool but whose uno never ran a multi-threaded kernel forks; the
# child's first such kernel must not ask libgomp for a team (the fork handler is registered at import).
_FORK_SCRIPT = """
import os, time, torch
from uno._backends import cpu as be
torch.set_num_threads(2)
a = torch.randn(4_000_000)
for _ in range(3):
    (a * 2).sum()  # torch's pool, not uno's
rows = torch.randn(16, 600_000)
m = torch.randn(16, 16, dtype=torch.float64)
out = torch.empty_like(rows)
pid = os.fork()
if pid == 0:
    try:
        be.combine([out], [rows], m)
    finally:
        os._exit(0)
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    done, st = os.waitpid(pid, os.WNOHANG)
    if done:
        print("exit", os.waitstatus_to_exitcode(st))
        break
    time.sleep(0.05)
else:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    print("hung")
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() on this platform")
def test_forked_child_of_a_parent_that_only_used_torchs_pool():
    res = subprocess.run([sys.executable, "-c", _FORK_SCRIPT], env=_env(None), capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.split() == ["exit", "0"], res.stdout
