"""docs/distributed.md's example runs under torchrun on 2 CPU ranks (bounded; nothing outlives it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

from distributed.launch import free_port

ROOT = Path(__file__).resolve().parents[2]


#: What torch prints when it aborts at exit with the gloo group's threads still running
#: (docs/distributed.md, "Known issue": torch's, seen after DTensor operators, with or without uno).
KNOWN_EXIT_ABORT = "terminate called without an active exception"


def run_example() -> tuple[int, str]:
    """One torchrun of the example on 2 ranks: (exit status, output)."""
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
        "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
        str(ROOT / "examples" / "fsdp_projected_adam.py"),
    ]  # fmt: skip
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(ROOT / "python"), os.environ.get("PYTHONPATH", "")]),
    )
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,  # its own process group: a timeout kills the ranks too
    )  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("the example did not finish in 120 s under torchrun")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, out


def rank_traceback(out: str) -> bool:
    """Whether a rank raised: a Python traceback other than torchrun's own report of a failed
    child (which ends in ``ChildFailedError`` and follows every failure, the abort's too)."""
    chunks = out.split("Traceback (most recent call last):")[1:]
    return any("ChildFailedError" not in c for c in chunks)


def finished_then_aborted(rc: int, out: str) -> bool:
    """The known abort: the example printed its result and raised nothing (a failed check would
    leave a rank's Python traceback), and then a rank died in C++ finalization."""
    return (
        rc != 0 and KNOWN_EXIT_ABORT in out and "basis rank 4;" in out and not rank_traceback(out)
    )


def test_a_rank_traceback_is_told_from_torchruns_report() -> None:
    report = "Traceback (most recent call last):\n  File run.py\nChildFailedError:\n"
    rank = "[rank1]: Traceback (most recent call last):\n[rank1]: AssertionError\n"
    assert not rank_traceback("basis rank 4; ...\n" + KNOWN_EXIT_ABORT + "\n" + report)
    assert rank_traceback(rank + report)


@pytest.mark.skipif(not dist.is_available(), reason="torch without torch.distributed")
def test_fsdp_example_under_torchrun() -> None:
    rc, out = run_example()
    for _ in range(2):
        if not finished_then_aborted(rc, out):
            break
        # Rare (1 in 30 runs, more under heavy load) and outside uno: run it again
        rc, out = run_example()
    assert rc == 0, out[-3000:]
    assert "basis rank 4;" in out
