"""Data-parallel unlearning: ``uno unlearn --nproc N`` (or the same command under ``torchrun``).

Every rank holds the whole model (replicated parameters, DDP's layout). Each step draws the global
forget and retain batches exactly as one process does (the same generator and seed), and rank ``r``
keeps its contiguous share of their rows (:class:`Share`); a VAE's reparameterisation noise is drawn
for the whole global batch from torch's RNG, as one process draws it, and sliced the same way
(:attr:`uno.unlearn.models.VAEBase.noise_rows`). The losses are sums over samples, so the global
gradient is the sum of the ranks' gradients: the methods' gradient functions
(:func:`uno.unlearn.methods.base.forget_retain_grads`, :func:`uno.unlearn.methods.uno.uno_direction`)
all-reduce ``g_f`` and ``g_r`` (and their loss values) with :func:`all_reduce_sum`. Terms of replicated
inputs (the histogram loss U on the monitor codes, the same on every rank) are taken on rank 0 only
(:func:`counts_replicated`), so they are counted once. Every rank then holds the same global
direction and takes the same optimizer step, so the parameters stay identical without a broadcast.

torch's ``DistributedDataParallel`` wrapper is not used: its gradient hooks fire when ``backward()``
accumulates into ``.grad``, while the methods take ``torch.autograd.grad`` (and ``uno``'s double
backward accumulates with ``inputs=``, where DDP's hooks would start a reduction of their own). What a
DDP wrapper does besides, making every rank start from rank 0's parameters and buffers, is done by
:func:`replicate`. FSDP2 (``--parallel fsdp2``) is refused (see :func:`check`).

Only rank 0 writes files, shows a progress bar and measures FID, the held-out ELBO and f on fresh
codes; every rank measures f on the monitor batch (it decides when a run stops, so every rank stops
at the same step). Every collective is entered by every rank; the process group has a timeout
(:data:`TIMEOUT_ENV`), and :func:`launch` stops the other ranks when one fails.
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, TypeVar

import torch
from torch import Tensor, nn

from uno.unlearn.errors import UnoUserError

#: The methods whose steps go through the reducing gradient functions (and their ``-hat`` variants).
SUPPORTED = ("ascent", "ascent-descent", "surgery", "surgery-ascent", "uno", "uno-s")
#: How the model is laid out across ranks (``--parallel``); only ``ddp`` runs.
MODES = ("ddp", "fsdp2")
#: Seconds a collective may wait before it raises (default 1800: rank 0 may train a missing model).
TIMEOUT_ENV = "UNO_DIST_TIMEOUT_S"
#: Set in the processes :func:`launch` starts, so that they join the group instead of spawning again.
CHILD_ENV = "UNO_NPROC_CHILD"

T = TypeVar("T")

#: The exit status of a rank whose collective failed because another rank stopped (the launcher
#: reports another rank's status before this one: that rank's error is the cause).
PEER_EXIT = 75


class PeerError(RuntimeError):
    """A collective failed: another rank stopped (its own error says why) or did not answer in time."""


def _collective(fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
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


#: Bytes this process has all-reduced in :func:`all_reduce_sum` (for measurements).
reduced_bytes = 0


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
    """``WORLD_SIZE`` from the environment (``torchrun`` and :func:`launch` set it; 1 without)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        raise UnoUserError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer") from None


def check(cfg: Any, nproc: int, mode: str = "ddp") -> None:
    """Refuse, before anything is loaded, what a data-parallel run cannot do (nothing for 1 process).

    Raises:
        UnoUserError: a bad ``--nproc`` / ``--parallel``, or a method, model or option that does not
            run data-parallel.
    """
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise UnoUserError(f"--nproc must be an integer >= 1, got {nproc!r}")
    if mode not in MODES:
        raise UnoUserError(f"--parallel must be one of {', '.join(MODES)}, got {mode!r}")
    if nproc == 1:
        return
    where = f"--nproc {nproc}"
    if mode == "fsdp2":
        raise UnoUserError(
            f"{where} --parallel fsdp2 is not supported by `uno unlearn` yet (the methods take "
            "torch.autograd.grad, which FSDP2's sharded parameters do not receive); use --parallel ddp"
        )
    base = cfg.method[: -len("-hat")] if cfg.method.endswith("-hat") else cfg.method
    if base not in SUPPORTED:
        raise UnoUserError(
            f"{where}: method {cfg.method!r} does not run data-parallel (its step uses per-sample or "
            f"local-batch terms); data-parallel methods: {', '.join(SUPPORTED)} (and their -hat)"
        )
    if cfg.model == "diffusion":
        raise UnoUserError(f"{where}: --model diffusion does not run data-parallel; use vae or gan")
    if cfg.bn_train:
        raise UnoUserError(f"{where}: --bn-train uses each rank's batch statistics; drop it")
    if cfg.batch < nproc:
        raise UnoUserError(f"{where}: --batch {cfg.batch} gives a rank no samples")


def check_run(cfg: Any) -> Optional[World]:
    """This process's world (None: one process), after :func:`check` of ``cfg`` against it."""
    world = current()
    check(cfg, world.size if world else 1)
    return world


def nan(*_: Any) -> float:
    """A measure that was not taken (NaN)."""
    return float("nan")


#: What a rank other than 0 gets instead of the run's measures (FID, ELBO, f on fresh codes).
NOT_MEASURED: dict[str, Any] = dict(fid=nan, elbo=nan, fresh=None, fid2=None)


def summary_fields(nbytes: int, nsteps: int) -> dict[str, Any]:
    """The summary's ``nproc`` and ``allreduce_bytes_per_step`` (per rank; 0 in one process)."""
    world = current()
    return {
        "nproc": world.size if world else 1,
        "allreduce_bytes_per_step": nbytes / nsteps if nsteps else 0.0,
    }


def check_kind(kind: str) -> None:
    """Refuse a loaded model of a kind that does not run data-parallel (a diffusion model file)."""
    world = current()
    if world is not None and kind not in ("vae", "gan"):
        raise UnoUserError(f"--nproc {world.size}: a {kind} model does not run data-parallel")


class Share:
    """Keeps this rank's rows of each step's global batches (installed as ``task.share``)."""

    def __init__(self, world: World) -> None:
        self.world = world

    def begin(self, task: Any) -> None:
        """After the task drew the step's global batches: keep this rank's rows of them."""
        n = int(task.batch)
        lo, hi = self.world.rows(n)
        names = ("x_f", "x_r") if hasattr(task, "x_f") else ("z_f", "z_r", "y_r")
        for name in names:
            full = getattr(task, name)
            if len(full) != n:
                raise RuntimeError(f"task.{name} has {len(full)} rows, not the batch's {n}")
            setattr(task, name, full[lo:hi])
        if hasattr(task.model, "noise_rows"):
            task.model.noise_rows = (n, lo, hi)

    def end(self, task: Any) -> None:
        """After the step: the model draws its own noise again (evaluation, the held-out ELBO)."""
        if hasattr(task.model, "noise_rows"):
            task.model.noise_rows = None


def all_reduce_sum(tensors: Sequence[Tensor], scalars: Sequence[float] = ()) -> list[float]:
    """Sum ``tensors`` (in place) and ``scalars`` over the ranks with one all-reduce; returns the
    summed scalars (``scalars`` unchanged in one process, where nothing is reduced).

    The tensors and scalars travel in one flat buffer of the tensors' dtype, so the sum is the
    ranks' partial sums added in the backend's order (the only difference from one process).
    """
    world = current()
    if world is None or not tensors:
        return [float(s) for s in scalars]
    import torch.distributed as dist

    global reduced_bytes
    ref = tensors[0]
    extra = torch.tensor([float(s) for s in scalars], dtype=ref.dtype, device=ref.device)
    flat = torch.cat([t.detach().reshape(-1).to(ref.dtype) for t in tensors] + [extra])
    _collective(dist.all_reduce, flat, op=dist.ReduceOp.SUM)
    reduced_bytes += flat.numel() * flat.element_size()
    at = 0
    with torch.no_grad():
        for t in tensors:
            t.copy_(flat[at : at + t.numel()].view(t.shape))
            at += t.numel()
    return flat[at:].tolist()


def replicate(model: nn.Module) -> None:
    """Every rank starts from rank 0's parameters and buffers (what a DDP wrapper's constructor
    does); nothing in one process."""
    if current() is None:
        return
    import torch.distributed as dist

    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            _collective(dist.broadcast, t.data, src=0)


def barrier() -> None:
    """Wait for every rank (bounded by the group's timeout); nothing in one process."""
    if current() is not None:
        import torch.distributed as dist

        _collective(dist.barrier)


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
    """Join the process group ``torchrun`` or :func:`launch` describes in the environment (gloo on
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


def launch(argv: Sequence[str], nproc: int, poll_s: float = 0.2) -> int:
    """Run ``uno <argv>`` in ``nproc`` local processes that form one gloo group; returns the exit
    status (0, or the first failing rank's; the other ranks are then stopped).

    The ranks inherit stdout and stderr (only rank 0 prints). Every child is killed if this process
    is interrupted, so none outlives it.
    """
    from uno.bench.dist import free_port

    pkg_root = str(Path(__file__).resolve().parents[2])  # the tree this uno was imported from
    base = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    base.update(WORLD_SIZE=str(nproc), LOCAL_WORLD_SIZE=str(nproc), **{CHILD_ENV: "1"})
    base["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, base.get("PYTHONPATH")) if p)
    procs: list[subprocess.Popen[bytes]] = []
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
    finally:
        _stop_all(procs)


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
