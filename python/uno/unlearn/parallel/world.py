"""This process's place among the ranks, the process group's life, and the bounded collectives."""

from __future__ import annotations

import datetime
import logging
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Optional, TypeVar

import torch

from uno.unlearn.errors import UnoUserError

#: Seconds a collective may wait before it raises (default 1800: rank 0 may train a missing model).
TIMEOUT_ENV = "UNO_DIST_TIMEOUT_S"
#: Set in the processes :func:`uno.unlearn.parallel.launch` starts, so that they join the group
#: instead of spawning again.
CHILD_ENV = "UNO_NPROC_CHILD"
#: The exit status of a rank whose collective failed because another rank stopped (the launcher
#: reports another rank's status before this one: that rank's error is the cause).
PEER_EXIT = 75

T = TypeVar("T")


class PeerError(RuntimeError):
    """A collective failed: another rank stopped (its own error says why) or did not answer in time."""


def collective(fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    """``fn(*args, **kw)`` (a torch.distributed collective), its failure as :class:`PeerError`."""
    try:
        return fn(*args, **kw)
    except RuntimeError as e:
        world = current()
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PeerError(
            f"rank {world.rank if world else '?'}: a collective failed, another rank stopped or "
            f"timed out ({first[:200]})"
        ) from e


@dataclass(frozen=True)
class World:
    """This process's place among the ranks of a data-parallel run."""

    rank: int
    size: int

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes files and measures FID."""
        return self.rank == 0

    def rows(self, n: int) -> tuple[int, int]:
        """``[lo, hi)``: this rank's contiguous share of ``n`` rows (the first ``n % size`` ranks
        take one more, as ``torch.tensor_split``)."""
        q, r = divmod(n, self.size)
        lo = self.rank * q + min(self.rank, r)
        return lo, lo + q + (1 if self.rank < r else 0)


def current() -> Optional[World]:
    """The data-parallel world of this process (None: one process, or a group of one)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return None
    return World(dist.get_rank(), dist.get_world_size())


def counts_replicated() -> bool:
    """Whether this rank adds terms computed on replicated inputs (rank 0, or a single process)."""
    world = current()
    return world is None or world.main


def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (``torchrun`` and ``launch`` set it; 1 without)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        raise UnoUserError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer") from None


def barrier() -> None:
    """Wait for every rank (bounded by the group's timeout); nothing in one process."""
    if current() is not None:
        import torch.distributed as dist

        collective(dist.barrier)


def main_first(fn: Callable[[], T]) -> T:
    """``fn()`` on rank 0, then on the other ranks (e.g. loading models that rank 0 may first train
    and cache); just ``fn()`` in one process."""
    world = current()
    if world is None:
        return fn()
    if world.main:
        out = fn()
        barrier()
        return out
    barrier()
    return fn()


def timeout_s() -> float:
    """The collectives' timeout (:data:`TIMEOUT_ENV`, default 1800 s)."""
    try:
        return float(os.environ.get(TIMEOUT_ENV, "1800"))
    except ValueError:
        raise UnoUserError(f"{TIMEOUT_ENV} must be a number of seconds") from None


def start() -> Optional[World]:
    """Join the process group ``torchrun`` or ``launch`` describes in the environment (gloo on
    CPU; with CUDA, ``cpu:gloo,cuda:nccl``); None for one process. A group already set up (by the
    caller) is used as it is."""
    import torch.distributed as dist

    if env_world_size() == 1 or dist.is_initialized():
        return current()
    backend = "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        backend = "cpu:gloo,cuda:nccl"
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s()))
    return current()


def stop(world: Optional[World], started: bool, ok: bool = True) -> None:
    """Leave the group :func:`start` joined: after a barrier when ``ok`` (no rank leaves while
    another still reduces), at once after an error (the other ranks then fail with
    :class:`PeerError`, or are stopped by the launcher); nothing when the caller owns the group or
    for one process."""
    if world is None or not started:
        return
    import torch.distributed as dist

    try:
        if ok:
            barrier()
    finally:
        dist.destroy_process_group()


def exit_now(rc: int) -> None:
    """End this rank's process with ``rc`` after a finished ``--parallel fsdp2`` run, skipping the
    interpreter's teardown.

    Once a DTensor operator ran, torch keeps the gloo group's worker threads alive after
    ``destroy_process_group()``, and now and then ``exit()`` aborts while they run ("terminate
    called without an active exception", SIGABRT; docs/distributed.md, the example's known issue).
    The run's files are complete (written atomically) by then, so the streams and logs are flushed
    and the process leaves with ``os._exit``, which runs no static destructors.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(rc)
