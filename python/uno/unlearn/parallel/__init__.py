"""Data-parallel unlearning: ``uno unlearn --nproc N`` (or the same command under ``torchrun``).

Each step draws the global forget and retain batches exactly as one process does (the same
generator and seed), and rank ``r`` keeps its contiguous share of their rows (:class:`Share`); a
VAE's reparameterisation noise is drawn for the whole global batch from torch's RNG, as one process
draws it, and sliced the same way (:attr:`uno.unlearn.models.VAEBase.noise_rows`). The losses are
sums over samples, so the global gradient is the sum of the ranks' gradients: the methods' gradient
functions sum ``g_f`` and ``g_r`` (and their loss values) with :func:`sum_grads`. Terms of
replicated inputs (the histogram loss U on the monitor codes, the same on every rank) are taken on
rank 0 only (:func:`counts_replicated`), so they are counted once.

Two layouts (``--parallel``):

* ``ddp`` (default): every rank holds the whole model; :func:`sum_grads` all-reduces, every rank then
  holds the same global direction and takes the same optimizer step. torch's
  ``DistributedDataParallel`` wrapper is not used: its gradient hooks fire when ``backward()``
  accumulates into ``.grad``, while the methods take ``torch.autograd.grad`` (and ``uno``'s double
  backward accumulates with ``inputs=``). What a DDP wrapper does besides, making every rank start
  from rank 0's parameters and buffers, is done by :func:`replicate`.
* ``fsdp2``: the parameters are sharded with ``fully_shard`` (:mod:`uno.unlearn.parallel.fsdp`);
  :func:`sum_grads` reduce-scatters into each rank's shards and the projections and
  ``ProjectedAdam`` run on the DTensor shards.

Only rank 0 writes files, shows a progress bar and measures FID, the held-out ELBO and f on fresh
codes (:mod:`uno.unlearn.parallel.rank0`); every rank measures f on the monitor batch (it decides
when a run stops, so every rank stops at the same step). Every collective is entered by every rank;
the process group has a timeout (:data:`TIMEOUT_ENV`), and :func:`launch` stops the other ranks
when one fails or when it is interrupted.
"""

from __future__ import annotations

from typing import Any, Optional

from uno.unlearn.parallel.checks import MODES, SUPPORTED, check, check_kind, check_run
from uno.unlearn.parallel.launch import launch
from uno.unlearn.parallel.rank0 import (
    NOT_MEASURED,
    measures,
    nan,
    progress_bar,
    summary_fields,
    write_outputs,
)
from uno.unlearn.parallel.reduce import (
    Share,
    all_finite,
    all_reduce_sum,
    batch_mean,
    mine,
    noise_rows,
    replicate,
    shards,
    split,
    sum_grads,
    traffic,
    whole,
)
from uno.unlearn.parallel.world import (
    CHILD_ENV,
    PEER_EXIT,
    TIMEOUT_ENV,
    PeerError,
    World,
    barrier,
    counts_replicated,
    current,
    env_world_size,
    exit_now,
    main_first,
    start,
    stop,
    timeout_s,
)

__all__ = [
    "CHILD_ENV", "MODES", "NOT_MEASURED", "PEER_EXIT", "SUPPORTED", "TIMEOUT_ENV", "PeerError",
    "Share", "World", "all_finite", "all_reduce_sum", "barrier", "batch_mean", "check",
    "check_kind", "check_run", "counts_replicated", "current", "env_world_size", "exit_now",
    "launch", "main_first", "measures", "mine", "nan", "noise_rows", "progress_bar", "replicate",
    "shard", "shards", "split", "start", "stop", "sum_grads", "summary_fields", "timeout_s",
    "traffic", "whole", "write_outputs",
]  # fmt: skip


def shard(task: Any, world: Optional[World], mode: str) -> None:
    """Lay the task's model out for ``mode``: with ``fsdp2`` on several ranks, shard it
    (:class:`uno.unlearn.parallel.fsdp.Sharded`, installed as ``task.sharded``): gradients are then
    taken of the unsharded ``task.params`` and the optimizer steps the shards,
    ``task.step_params``. Nothing otherwise (``task.step_params`` is ``task.params``)."""
    task.step_params = task.params
    task.sharded = None
    if world is None or mode != "fsdp2":
        return
    from uno.unlearn.parallel.fsdp import Sharded

    task.sharded = Sharded(task.model, world)
    task.params, task.step_params = task.sharded.full, task.sharded.params
