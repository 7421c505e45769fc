"""``uno unlearn --nproc N``: start N local ranks, wait for them, stop them all on any failure."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any, Optional, Sequence

from uno.unlearn.parallel.world import CHILD_ENV, PEER_EXIT


class Terminated(Exception):
    """The launcher received SIGTERM (raised in its main thread so that its children are stopped)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum}")
        self.signum = signum


def _raise_terminated(signum: int, _frame: Optional[FrameType]) -> None:
    raise Terminated(signum)


def launch(argv: Sequence[str], nproc: int, poll_s: float = 0.2) -> int:
    """Run ``uno <argv>`` in ``nproc`` local processes that form one gloo group; returns the exit
    status (0, or the first failing rank's; the other ranks are then stopped).

    The ranks inherit stdout and stderr (only rank 0 prints). Every child is stopped if this process
    is interrupted (SIGINT: ``KeyboardInterrupt`` propagates, the CLI's status is 130; SIGTERM: the
    status is 128 + 15, as a shell reports a process killed by it), so none outlives it.
    """
    from uno.bench.dist import free_port

    pkg_root = str(Path(__file__).resolve().parents[3])  # the tree this uno was imported from
    base = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    base.update(WORLD_SIZE=str(nproc), LOCAL_WORLD_SIZE=str(nproc), **{CHILD_ENV: "1"})
    base["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, base.get("PYTHONPATH")) if p)
    procs: list[subprocess.Popen[bytes]] = []
    # signal handlers can only be set in the main thread (the CLI's); elsewhere they stay as they
    # are. SIGINT raises KeyboardInterrupt even where the shell started this process with SIGINT
    # ignored (a background job), so that an explicit SIGINT also stops the ranks.
    main = threading.current_thread() is threading.main_thread()
    previous: Any = None
    if main:
        previous = (
            signal.signal(signal.SIGTERM, _raise_terminated),
            signal.signal(signal.SIGINT, signal.default_int_handler),
        )
    try:
        for r in range(nproc):
            env = dict(base, RANK=str(r), LOCAL_RANK=str(r))
            procs.append(subprocess.Popen([sys.executable, "-m", "uno.cli", *argv], env=env))
        while True:
            codes = [p.poll() for p in procs]
            if any(c not in (None, 0) for c in codes):
                return _status(procs)
            if all(c == 0 for c in codes):
                return 0
            time.sleep(poll_s)
    except Terminated as e:
        print("uno: terminated: stopping the ranks", file=sys.stderr)
        return 128 + e.signum
    finally:
        # a second SIGTERM while the ranks are stopped must not leave them running
        if main:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            _stop_all(procs)
        finally:
            if main:
                signal.signal(signal.SIGTERM, previous[0])
                signal.signal(signal.SIGINT, previous[1])


def _status(procs: Sequence[subprocess.Popen[bytes]], grace_s: float = 5.0) -> int:
    """The run's status once a rank failed: the others get ``grace_s`` to fail too, then the first
    rank (in rank order) whose failure is its own (not :data:`PEER_EXIT`) gives it; a rank killed by
    signal s counts as 128 + s, as a shell reports it."""
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(p.poll() is None for p in procs):
        time.sleep(0.05)
    codes = [p.poll() for p in procs]
    failed = [c if c > 0 else 128 - c for c in codes if c is not None and c != 0]
    own = [c for c in failed if c != PEER_EXIT]
    return (own or failed)[0]


def _stop_all(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
