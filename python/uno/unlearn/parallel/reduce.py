"""The reductions of a data-parallel step: gradients summed over the ranks, rows split by rank.

Every rank draws the step's global batches and keeps its rows (:class:`Share`); the losses are sums
over samples, so the global gradient is the sum of the ranks' gradients (:func:`sum_grads`): an
all-reduce of replicated gradients (``--parallel ddp``), or a reduce-scatter into each rank's
FSDP2 shards (``--parallel fsdp2``, :class:`uno.unlearn.parallel.fsdp.Sharded`).
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Optional, Sequence

import torch
from torch import Tensor, nn

from uno.unlearn.parallel.world import World, collective, current

#: The kinds of collectives :data:`traffic` counts.
KINDS = ("all_reduce", "reduce_scatter", "all_gather", "broadcast")


class Traffic:
    """Bytes this process has put through collectives, by kind (for the summary and measurements).

    An all-reduce or broadcast counts its buffer, a reduce-scatter its input (the whole vector), an
    all-gather its output (the whole vector); a ring algorithm moves about ``(N − 1)/N`` of that per
    rank (twice for an all-reduce). The uno ops' float64 partial sums are counted in
    :data:`uno.ops._dist.reduced_bytes`.
    """

    def __init__(self) -> None:
        self.bytes = dict.fromkeys(KINDS, 0)

    def add(self, kind: str, t: Tensor) -> None:
        self.bytes[kind] += t.numel() * t.element_size()

    def snapshot(self) -> dict[str, int]:
        """The counts now, with the uno ops' all-reduces added to ``all_reduce``."""
        from uno.ops import _dist

        out = dict(self.bytes)
        out["all_reduce"] += _dist.reduced_bytes[0]
        return out


#: This process's collectives (:class:`Traffic`).
traffic = Traffic()


def all_reduce_sum(tensors: Sequence[Tensor], scalars: Sequence[float] = ()) -> list[float]:
    """Sum ``tensors`` (in place) and ``scalars`` over the ranks with one all-reduce; returns the
    summed scalars (``scalars`` unchanged in one process, where nothing is reduced).

    The tensors and scalars travel in one flat buffer of the tensors' dtype, so the sum is the
    ranks' partial sums added in the backend's order (the only difference from one process).
    """
    if current() is None or not tensors:
        return [float(s) for s in scalars]
    import torch.distributed as dist

    ref = tensors[0]
    extra = torch.tensor([float(s) for s in scalars], dtype=ref.dtype, device=ref.device)
    flat = torch.cat([t.detach().reshape(-1).to(ref.dtype) for t in tensors] + [extra])
    collective(dist.all_reduce, flat, op=dist.ReduceOp.SUM)
    traffic.add("all_reduce", flat)
    at = 0
    with torch.no_grad():
        for t in tensors:
            t.copy_(flat[at : at + t.numel()].view(t.shape))
            at += t.numel()
    return flat[at:].tolist()


def sum_grads(
    task: Any, vectors: Sequence[list[Tensor]], scalars: Sequence[float] = ()
) -> tuple[list[list[Tensor]], list[float]]:
    """The global ``vectors`` (each a gradient of ``task.params``, this rank's share of a sum over
    samples) and summed ``scalars``, with one collective.

    One process: the vectors themselves. ``--parallel ddp``: summed in place (all-reduce), whole on
    every rank. ``--parallel fsdp2``: new DTensors, this rank's shards of the sums, placed like
    ``task.step_params`` (reduce-scatter).
    """
    sharded = getattr(task, "sharded", None)
    if sharded is not None:
        return sharded.reduce_scatter(vectors, scalars)
    out = all_reduce_sum([t for v in vectors for t in v], scalars)
    return [list(v) for v in vectors], out


def whole(task: Any, vector: list[Tensor]) -> list[Tensor]:
    """``vector`` as whole tensors shaped like ``task.params``: all-gathered from FSDP2 shards
    (``--parallel fsdp2``), else ``vector`` itself."""
    sharded = getattr(task, "sharded", None)
    return vector if sharded is None else sharded.all_gather(vector)


class Share:
    """Keeps this rank's rows of each step's global batches (installed as ``task.share``)."""

    def __init__(self, world: World) -> None:
        self.world = world
        #: the step's global batches by name (for methods that split them otherwise, e.g. in chunks)
        self.full: dict[str, Tensor] = {}
        self.n = 0

    def begin(self, task: Any) -> None:
        """After the task drew the step's global batches: keep this rank's rows of them."""
        n = int(task.batch)
        lo, hi = self.world.rows(n)
        names = ("x_f", "x_r") if hasattr(task, "x_f") else ("z_f", "z_r", "y_r")
        for name in names:
            full = getattr(task, name)
            if len(full) != n:
                raise RuntimeError(f"task.{name} has {len(full)} rows, not the batch's {n}")
            self.full[name] = full
            setattr(task, name, full[lo:hi])
        self.n = n
        if hasattr(task.model, "noise_rows"):
            task.model.noise_rows = (n, lo, hi)

    def end(self, task: Any) -> None:
        """After the step: the model draws its own noise again (evaluation, the held-out ELBO)."""
        if hasattr(task.model, "noise_rows"):
            task.model.noise_rows = None

    def mine(self, t: Tensor) -> Tensor:
        """This rank's rows of ``t``, a tensor of the global batch's ``n`` rows (drawn like it)."""
        if len(t) != self.n:
            raise RuntimeError(f"{len(t)} rows, not the batch's {self.n}")
        lo, hi = self.world.rows(self.n)
        return t[lo:hi]

    def chunks(self, name: str, k: int) -> list[tuple[Tensor, tuple[int, int, int]]]:
        """This rank's rows of each of the ``k`` chunks of the global batch ``name``
        (``Tensor.chunk``'s), with the rows ``(n_j, lo, hi)`` of the chunk they are: a micro-batch
        of the 1-process run, split across the ranks."""
        out = []
        for c in self.full[name].chunk(k):
            lo, hi = self.world.rows(len(c))
            out.append((c[lo:hi], (len(c), lo, hi)))
        return out


def split(task: Any, t: Tensor) -> tuple[Tensor, Optional[tuple[int, int, int]]]:
    """This rank's contiguous rows of ``t`` (replicated rows, e.g. a fixed pool) and where they
    lie, ``(n, lo, hi)`` (:attr:`uno.unlearn.models.VAEBase.noise_rows`); ``(t, None)`` in one
    process."""
    share: Optional[Share] = getattr(task, "share", None)
    if share is None:
        return t, None
    lo, hi = share.world.rows(len(t))
    return t[lo:hi], (len(t), lo, hi)


@contextlib.contextmanager
def noise_rows(model: Any, rows: Optional[tuple[int, int, int]]) -> Iterator[None]:
    """A VAE draws its noise for rows ``rows`` of a larger draw inside the block (nothing for
    ``rows=None`` or a model without noise)."""
    if rows is None or not hasattr(model, "noise_rows"):
        yield
        return
    saved = model.noise_rows
    model.noise_rows = rows
    try:
        yield
    finally:
        model.noise_rows = saved


def shards(task: Any, vector: list[Tensor]) -> list[Tensor]:
    """This rank's FSDP2 shards of whole tensors ``vector`` shaped like ``task.params`` (the same on
    every rank; no communication); ``vector`` itself without FSDP2 or when already sharded."""
    from uno.ops import _dist

    sharded = getattr(task, "sharded", None)
    if sharded is None or not vector or _dist.is_dtensor(vector[0]):
        return vector
    return [sharded.shard_like(t, i) for i, t in enumerate(vector)]


def mine(task: Any, t: Tensor) -> Tensor:
    """This rank's rows of ``t`` (a tensor drawn for the step's global batch); ``t`` in one process."""
    share: Optional[Share] = getattr(task, "share", None)
    return t if share is None else share.mine(t)


def batch_mean(task: Any, t: Tensor) -> Tensor:
    """The mean over the global batch of per-sample values ``t`` (this rank's rows): ``t.mean()``
    in one process, ``t.sum() / batch`` on a rank (the ranks' terms then sum to the mean)."""
    return t.mean() if getattr(task, "share", None) is None else t.sum() / task.batch


def replicate(model: nn.Module) -> None:
    """Every rank starts from rank 0's parameters and buffers (what a DDP wrapper's constructor
    does); nothing in one process."""
    if current() is None:
        return
    import torch.distributed as dist

    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            collective(dist.broadcast, t.data, src=0)
            traffic.add("broadcast", t.data)


def all_finite(tensors: Sequence[Tensor]) -> bool:
    """Whether every element is finite: of the local shards of DTensors, then agreed by every rank
    (one all-reduce of a flag), so that every rank stops at the same step."""
    from uno.ops import _dist

    sharded = any(_dist.is_dtensor(t) for t in tensors)
    ok = all(bool(torch.isfinite(_dist.local(t) if sharded else t).all()) for t in tensors)
    if not sharded or current() is None:
        return ok
    import torch.distributed as dist

    flag = torch.tensor([0.0 if ok else 1.0])
    collective(dist.all_reduce, flag, op=dist.ReduceOp.SUM)
    traffic.add("all_reduce", flag)
    return float(flag) == 0.0
