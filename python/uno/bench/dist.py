"""Communication of a distributed projection: ``uno.project_`` on FSDP2-style shards vs gathering.

Every configuration runs on ``--world`` CPU ranks (gloo, spawned processes, a free local port). The
gradient and a k-vector orthonormal basis are spread over a realistic parameter list (the
transformer shapes of :mod:`uno.bench.shapes`, scaled to P), every piece ``Shard(0)`` (uneven where a
first dimension is odd), as FSDP2 keeps them. Rows:

  * uno:   ``uno.project_(grad, basis)`` on the DTensor pieces: each rank reduces its shard in float64
           and one ``all_reduce`` of k + 1 numbers runs per pass (two passes):
           ``bytes`` = 2 · 8 · (k + 1) per rank, whatever P;
  * local: the same call on this rank's shards with a plain (non-distributed) basis: the computation
           alone, no communication (it is not the global projection; the difference to ``uno`` is
           what the two all_reduces cost);
  * naive: what a user without uno's reductions does: all-gather the gradient and the basis shards
           (one packed ``all_gather_into_tensor`` of (1 + k) · P_local elements per rank, shards
           padded to equal size), reassemble the full vectors, project them with ``uno.project_``,
           and copy the rank's shard back: ``bytes`` = the gathered buffer, about (1 + k) · P
           elements per rank.

Times are the median over the ranks' calls (the slowest rank's median), each call starting from the
same gradient (reset untimed); each rank runs ``--threads`` / world torch threads. Two ranks on a shared machine compete for its cores and memory
bandwidth: compare rows of one run, not across machines.

    uno bench dist --quick          # P = 1e5, k in {1, 4}: a smoke test
    uno bench dist                  # P in {1e6, 1e7}, k in {1, 16}
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

import uno
from uno.bench import harness as h
from uno.bench.shapes import numel, random_pieces, scaled_shapes


@dataclass(frozen=True)
class Config:
    numel: int  # target P; the transformer shape list is scaled to it
    k: int
    world: int = 2
    dtype: torch.dtype = torch.float32


def _sharded(full: Sequence[Tensor], mesh: Any) -> List[Tensor]:
    from torch.distributed.tensor import Shard, distribute_tensor

    return [distribute_tensor(t, mesh, [Shard(0)], src_data_rank=None) for t in full]


def naive_project(grad: Sequence[Tensor], basis: uno.Basis) -> int:
    """The baseline: all-gather the gradient's and the basis's shards, project the full vectors,
    keep this rank's shard. ``grad``: DTensor pieces (``Shard(0)``); ``basis``: a distributed Basis
    over them. Returns the bytes all-gathered (the output buffer, per rank)."""
    import torch.distributed as dist

    assert basis.dist is not None
    lay, k = basis.dist, basis.k
    world, rank = dist.get_world_size(lay.group), dist.get_rank(lay.group)
    sizes, offsets = _plan(lay.shapes, world)  # [rank][piece] elements and offsets of the shards
    loc = [g.to_local() for g in grad]  # type: ignore[attr-defined]
    width = [(1 + k) * sum(row) for row in sizes]
    size = max(width)  # shards differ in size with uneven shards: pad to the largest
    n_loc = sum(sizes[rank])
    send = torch.zeros(size, dtype=loc[0].dtype)
    send[:n_loc] = torch.cat([t.reshape(-1) for t in loc])
    send[n_loc : width[rank]] = basis.buffer[:k].reshape(-1)
    recv = torch.empty(world * size, dtype=send.dtype)
    # all_gather_single is torch >= 2.13's name of all_gather_into_tensor
    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    gather(recv, send, group=lay.group)
    # reassemble: per rank [its grad shards | its k basis rows], piece-major, into full vectors
    parts = recv.view(world, size)
    full_g, full_q = [], []
    for t, shape in enumerate(lay.shapes):
        gs, qs = [], []
        for r in range(world):
            n_r, o, n = sum(sizes[r]), offsets[r][t], sizes[r][t]
            gs.append(parts[r, o : o + n])
            qs.append(parts[r, n_r : width[r]].view(k, n_r)[:, o : o + n])
        full_g.append(torch.cat(gs).view(shape))
        full_q.append(torch.cat(qs, 1))
    q = uno.Basis(torch.cat(full_q, 1).contiguous(), k, lay.shapes)
    uno.project_(full_g, q)
    for t, (g, f) in enumerate(zip(loc, full_g)):
        o = sum(sizes[r][t] for r in range(rank))  # where this rank's chunk starts in the piece
        g.view(-1).copy_(f.view(-1)[o : o + g.numel()])
    return int(recv.numel() * recv.element_size())


_PLANS: Dict[Tuple[Any, int], Tuple[List[List[int]], List[List[int]]]] = {}


def _plan(shapes: Sequence[torch.Size], world: int) -> Tuple[List[List[int]], List[List[int]]]:
    """Per rank and piece: the elements of its ``Shard(0)`` chunk (torch.chunk's split) and the
    chunk's offset in the rank's packed shards (computed once per shape list)."""
    key = (tuple(shapes), world)
    if key not in _PLANS:
        sizes: List[List[int]] = []
        for r in range(world):
            row = []
            for s in shapes:
                per = -(-s[0] // world)
                row.append(max(0, min(per, s[0] - per * r)) * (s.numel() // max(s[0], 1)))
            sizes.append(row)
        offsets = [[sum(row[:t]) for t in range(len(row))] for row in sizes]
        _PLANS[key] = (sizes, offsets)
    return _PLANS[key]


def _rank_main(
    rank: int, world: int, port: int, cfg_json: str, reps: int, threads: int, out: str
) -> None:
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    raw = json.loads(cfg_json)
    cfg = Config(raw["numel"], raw["k"], raw["world"], getattr(torch, raw["dtype"]))
    torch.set_num_threads(threads)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=300),
    )
    try:
        row = _measure_rank(cfg, reps, init_device_mesh("cpu", (world,)))
        gathered: List[Any] = [None] * world
        dist.all_gather_object(gathered, row)
        if rank == 0:
            slowest = {
                key: max(r[key] for r in gathered) for key in ("uno_ms", "local_ms", "naive_ms")
            }
            with open(out, "w") as f:
                json.dump({**row, **slowest}, f)
        dist.barrier()  # every rank is done before the group goes
    finally:
        dist.destroy_process_group()


def _measure_rank(cfg: Config, reps: int, mesh: Any) -> Dict[str, Any]:
    import torch.distributed as dist

    cpu = torch.device("cpu")
    shapes = scaled_shapes("transformer", cfg.numel)
    gen = torch.Generator().manual_seed(0)
    full = random_pieces(shapes, cfg.dtype, cpu, gen)
    vecs = [random_pieces(shapes, cfg.dtype, cpu, gen) for _ in range(cfg.k)]
    grad = _sharded(full, mesh)
    basis = uno.orthonormalize([_sharded(v, mesh) for v in vecs])
    del vecs
    loc = [g.to_local() for g in grad]  # type: ignore[attr-defined]
    start = [t.clone() for t in loc]
    local_basis = uno.Basis(basis.buffer, basis.k, basis.shapes)  # the shards, no reductions

    def reset() -> None:
        for t, s in zip(loc, start):
            t.copy_(s)

    sent: List[int] = []
    saved = dist.all_reduce

    def counted(t: Tensor, *a: Any, **kw: Any) -> Any:
        sent.append(t.numel() * t.element_size())
        return saved(t, *a, **kw)

    setattr(dist, "all_reduce", counted)  # count one call's bytes  # noqa: B010
    try:
        reset()
        uno.project_(grad, basis)
    finally:
        setattr(dist, "all_reduce", saved)  # noqa: B010
    got = [t.clone() for t in loc]
    reset()
    gathered = naive_project(grad, basis)
    err = max((float((a - b).abs().max()) for a, b in zip(got, loc) if a.numel()), default=0.0)
    scale = max((float(t.abs().max()) for t in got if t.numel()), default=0.0)
    t_uno = h.timeit(lambda: uno.project_(grad, basis), cpu, reps, min_time=0, setup=reset)
    t_loc = h.timeit(lambda: uno.project_(loc, local_basis), cpu, reps, min_time=0, setup=reset)
    t_naive = h.timeit(lambda: naive_project(grad, basis), cpu, reps, min_time=0, setup=reset)
    return dict(
        P=numel(shapes),
        pieces=len(shapes),
        k=cfg.k,
        world=cfg.world,
        dtype=h.dtype_name(cfg.dtype),
        uno_bytes=sum(sent),
        uno_allreduces=len(sent),
        naive_bytes=gathered,
        uno_ms=t_uno * 1e3,
        local_ms=t_loc * 1e3,
        naive_ms=t_naive * 1e3,
        rel_diff=err / (scale or 1.0),
    )


def free_port() -> int:
    """A local TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn(fn: Callable[..., None], args: Tuple[Any, ...], nprocs: int, timeout_s: float, what: str):
    """Run ``fn(rank, *args)`` in ``nprocs`` spawned processes and wait at most ``timeout_s``.

    Every process still alive when this returns or raises is killed, so none outlives the call.

    Raises:
        TimeoutError: the processes did not finish in time.
        torch.multiprocessing.ProcessRaisedException: a process raised (the others are terminated).
    """
    import torch.multiprocessing as mp

    pc = mp.start_processes(fn, args=args, nprocs=nprocs, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout_s
    try:
        while not pc.join(timeout=max(0.1, min(5.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{what} did not finish in {timeout_s} s")
    finally:
        for p in pc.processes:
            if p.is_alive():
                p.kill()
            p.join(10)


def measure(cfg: Config, ctx: h.Context, timeout_s: float = 1800.0) -> h.Rows:
    """Spawn ``cfg.world`` gloo ranks that measure ``cfg``; returns rank 0's row (slowest times)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "row.json")
        payload = json.dumps({**asdict(cfg), "dtype": h.dtype_name(cfg.dtype)})
        threads = max(1, ctx.threads // cfg.world)  # the ranks share the machine's threads
        args = (cfg.world, free_port(), payload, ctx.reps, threads, out)
        spawn(_rank_main, args, cfg.world, timeout_s, f"uno bench dist: {cfg}")
        with open(out) as f:
            row = json.load(f)
    row["vs_naive"] = h.ratio(row["naive_ms"], row["uno_ms"])
    row["bytes_ratio"] = row["naive_bytes"] / max(row["uno_bytes"], 1)
    return [row]


def configs(args: argparse.Namespace) -> List[Config]:
    sizes = [100_000] if args.quick else [1_000_000, 10_000_000]
    ks = [1, 4] if args.quick else [1, 16]
    return [Config(p, k, args.world) for p in sizes for k in ks]


COLUMNS = h.columns(
    "P:P:9:d; k:k:3:d; world:ranks:5:d; uno_allreduces:#AR:4:d; uno_bytes:uno B:7:d; "
    "naive_bytes:naive B:11:d; bytes_ratio:B ratio:10:.0f; uno_ms:uno ms:9:.2f; "
    "local_ms:local ms:9:.2f; naive_ms:naive ms:9:.2f; vs_naive:vs naive:8:.2f; "
    "rel_diff:rel diff:8:.1e"
)
NOTE = (
    "uno: project_ on Shard(0) DTensors (all_reduce of k+1 float64 per pass); local: the same on "
    "the shards without communication; naive: all-gather grad + basis, project, keep the shard"
)

BENCH = h.Bench(
    "dist",
    __doc__ or "",
    COLUMNS,
    configs,
    measure,
    Config,
    notes=[NOTE],
    options=[("--world", dict(type=int, default=2, help="number of CPU ranks (gloo)"))],
    reps=5,
    devices=("cpu",),
)


def main(argv: Optional[Sequence[str]] = None, default_csv: Union[str, Path, None] = None) -> int:
    """``uno bench dist [options]`` (``default_csv``: the CSV when ``--csv`` is not given)."""
    return h.main(BENCH, argv, default_csv)
