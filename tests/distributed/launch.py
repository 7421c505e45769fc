"""Run a function on 2 gloo ranks in spawned processes, bounded in time, and collect its results.

Every wait is bounded: the process group has a timeout (a collective that never completes raises),
the join has a deadline, and any process still alive when the launcher returns (or fails) is killed,
so no process outlives its test (:func:`uno.bench.dist.spawn`, which ``uno bench dist`` uses too).
"""

from __future__ import annotations

import datetime
import importlib
import json
import os
import tempfile
from typing import Any, Callable, Dict, List

import torch
import torch.distributed as dist

from uno.bench.dist import free_port, spawn

COLLECTIVE_TIMEOUT_S = 45.0  # a collective waiting longer than this raises in the worker


def _entry(rank: int, world: int, port: int, target: str, out_dir: str) -> None:
    torch.set_num_threads(1)  # two ranks share a small machine
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S),
    )
    try:
        module, name = target.rsplit(".", 1)
        fn: Callable[[int, int], Dict[str, Any]] = getattr(importlib.import_module(module), name)
        result = fn(rank, world)
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(result, f)
        dist.barrier()  # both ranks are done before the group goes
    finally:
        dist.destroy_process_group()


def run_ranks(target: str, world: int = 2, timeout_s: float = 240.0) -> List[Dict[str, Any]]:
    """Run ``target`` (``"module.function"``, called as ``function(rank, world)`` after the gloo
    group is up) on ``world`` spawned ranks; returns each rank's JSON result, in rank order.

    Raises:
        TimeoutError: the ranks did not finish within ``timeout_s`` (they are killed).
        torch.multiprocessing.ProcessRaisedException: a rank raised (the others are terminated).
    """
    with tempfile.TemporaryDirectory() as out_dir:
        spawn(_entry, (world, free_port(), target, out_dir), world, timeout_s, target)
        out = []
        for r in range(world):
            with open(os.path.join(out_dir, f"rank{r}.json")) as f:
                out.append(json.load(f))
        return out


def scenario(ranks: List[Dict[str, Any]], name: str) -> List[Dict[str, Any]]:
    """Scenario ``name``'s results, one per rank; fails the test with the traceback of a rank that
    raised."""
    import pytest

    out = [r[name] for r in ranks]
    for rank, res in enumerate(out):
        if "error" in res:
            pytest.fail(f"scenario {name} raised on rank {rank}:\n{res['error']}")
    return out
