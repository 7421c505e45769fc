"""The run loop: one method on one model, with metrics, logs, PNGs and resumable checkpoints.

Output folder (``out``):
    config.json         the run's configuration (a resume must match it)
    original.safetensors  the model before unlearning (the frozen original of ``fu``/GAN runs)
    ckpt.safetensors    last state: model, Adam state (torch.optim.Adam's or ProjectedAdam's, one
                        layout), method state, log rows (atomic, checksummed)
    log.csv, log.json   one row per step; the summary (steps/time to forget, FID, ELBO, ...)
                        (each row: f on the monitor batch, and on the fresh codes by judges 1 and 2,
                        ``f_fresh``/``f_fresh2``; :mod:`~uno.unlearn.evaluation`)
    before.png, after.png, curve.png
Every file is written atomically (temp file + ``os.replace``): an interrupted run leaves no half file.
Every option and the output folder are checked before any model or data is loaded (bad input raises
:class:`~uno.unlearn.errors.UnoUserError` and writes nothing). ``log.json`` writes a value that was not
measured (NaN) as ``null``; ``log.csv`` keeps Python's ``nan`` (what pandas and numpy read as NaN).
Checkpoints carry a checksum, verified when a run resumes.

A run is three phases: :func:`prepare` (check, load, build the task and the method, restore or start the
state), :func:`loop` (the steps, monitoring, checkpoints) and :func:`summarize` (the summary, ``log.json``,
the figures); :func:`unlearn` chains them. The folder's files and checks are in :mod:`~uno.unlearn.run_folder`,
the configuration in :mod:`~uno.unlearn.config`.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence, TypedDict

import torch
from torch import Tensor, nn

from uno.unlearn import evaluation, io, methods, metrics, parallel, plots
from uno.unlearn.config import RunConfig
from uno.unlearn.data import ImageData, resolve_targets
from uno.unlearn.errors import NonFiniteError, UnoUserError
from uno.unlearn.loading import Loaded, load_data, load_models
from uno.unlearn.models import sample_images
from uno.unlearn.run_folder import (
    SavedRun,
    check_run_folder,
    config_json,
    nan_for_null,
    write_checkpoint,
    write_start,
)
from uno.unlearn.tasks import GANTask, Task, VAETask

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "Loaded",
    "Run",
    "RunConfig",
    "RunInputs",
    "check_run_folder",
    "load_data",
    "load_models",
]
__all__ += ["loop"]
__all__ += ["prepare", "summarize", "unlearn"]


@dataclass
class Run:
    """A prepared run: what its steps share (built by :func:`prepare`, advanced by :func:`loop`)."""

    cfg: RunConfig
    out_dir: Optional[Path]  # None: no files, no checkpoints
    model: nn.Module
    task: Task
    method: methods.Method
    opt: torch.optim.Optimizer
    fid: Callable[[nn.Module], float]
    elbo: Callable[[], float]  # the held-out retain ELBO (NaN for a GAN)
    grid_z: Tensor  # the latents of the before/after grids
    fresh: Optional[evaluation.FreshForget]  # f on fresh codes, judges 1 and 2 (method.md §4b)
    fid2: Optional[Callable[[nn.Module], float]] = None  # FID on judge 2's features (or none)
    rows: list[dict[str, Any]] = field(default_factory=list)  # one per step done, from step 0
    summary0: dict[str, Any] = field(default_factory=dict)  # f0, fid_before, elbo_before
    start: int = 0  # the step the run starts after (0, or the checkpoint's)
    write_pngs: bool = True
    last_ckpt: Optional[int] = None  # the step the checkpoint on disk holds

    def fresh_now(self) -> tuple[float, float]:
        """f of judges 1 and 2 on the ``cfg.fresh_count()`` fresh codes (NaN when that is 0)."""
        return self.fresh.pair(self.model) if self.fresh else (float("nan"), float("nan"))

    def checkpoint(self, step: int) -> None:
        """Write the state after ``step`` (nothing without an output folder). FSDP2 shards are
        gathered whole on every rank (a collective) and rank 0 writes the 1-process layout."""
        sharded = self.task.sharded
        if self.out_dir is None and sharded is None:
            return
        state = sharded.model_state() if sharded is not None else self.model.state_dict()
        t = {f"model.{k}": v for k, v in state.items()}
        t.update(io.optimizer_tensors(self.opt, self.task.step_params))
        t.update({f"method.{k}": v for k, v in self.method.state_dict().items()})
        t = sharded.full_state(t) if sharded is not None else t
        if self.out_dir is None:
            return
        write_checkpoint(self.out_dir, step, t, self.rows, self.summary0)
        self.last_ckpt = step


@dataclass
class Progress:
    """Where :func:`loop` left a run."""

    reached: Optional[int]  # the first step with f < tau (None: not reached)
    fid_at_forget: Optional[float]
    stopped: str  # "budget" or "forgotten"
    interrupted_at: Optional[int] = None  # set when ``stop_after`` stopped it
    reduced: tuple[dict[str, int], int] = ({}, 0)  # (bytes by collective, steps) in this loop


class RunInputs(TypedDict, total=False):
    """What a run is given besides its configuration (the keyword arguments of :func:`unlearn`)."""

    resume: bool  # default False
    loaded: Optional[Loaded]
    data: Optional[tuple[ImageData, ImageData]]
    write_pngs: bool  # default True
    parallel: str  # the layout on several ranks: "ddp" (default) or "fsdp2" (docs/distributed.md)


def unlearn(
    cfg: RunConfig,
    out: Optional[str] = None,
    *,
    stop_after: Optional[int] = None,
    **inputs: Unpack[RunInputs],
) -> dict[str, Any]:
    """Run one method and return its summary (also written to ``out/log.json``).

    Args:
        cfg: the run configuration.
        out: output folder (``None``: no files, no checkpoints).
        resume: continue from ``out/ckpt.safetensors`` (same configuration, same result).
        loaded: models to use instead of loading/training them.
        data: ``(train, heldout)`` to use instead of reading ``cfg.data``.
        stop_after: stop (as if interrupted) after this many steps, after checkpointing — for tests.
        write_pngs: write the PNG outputs.

    Raises:
        UnoUserError: bad input (the CLI turns it into a message and a non-zero exit).
        NonFiniteError: NaN/Inf in a step; the checkpoint on disk is the last finite step's.
    """
    run = prepare(cfg, out, **inputs)
    progress = loop(run, stop_after=stop_after)
    if progress.interrupted_at is not None:
        return {"interrupted_at": progress.interrupted_at}
    return summarize(run, progress)


def prepare(cfg: RunConfig, out: Optional[str] = None, **inputs: Unpack[RunInputs]) -> Run:
    """Check everything, load the data and models, build the task and method, restore or start the state.

    A fresh run writes ``config.json``, ``original.safetensors``, ``before.png`` and the step-0 checkpoint;
    a resume reads the verified checkpoint instead. Arguments as in :func:`unlearn`.
    """
    cfg.validate()
    # data-parallel (uno.unlearn.parallel): every rank computes, rank 0 writes and measures
    mode = inputs.get("parallel", "ddp")
    world = parallel.check_run(cfg, mode)
    main = world is None or world.main
    out_dir = Path(out).expanduser() if out is not None else None
    saved = check_run_folder(cfg, out, inputs.get("resume", False))
    parallel.barrier()  # every rank has checked the folder before rank 0 writes into it
    data, loaded = inputs.get("data"), inputs.get("loaded")
    train, heldout = data if data is not None else load_data(cfg)
    targets = resolve_targets(train, cfg.forget)
    if loaded is None:  # rank 0 first: it trains and caches a missing model, the others read it
        loaded = parallel.main_first(lambda: load_models(cfg))
    parallel.check_kind(loaded.kind)
    model = loaded.model
    parallel.replicate(model)  # rank 0's weights everywhere (a resume then loads the same state)
    if saved is not None:
        assert out_dir is not None
        io.load_state(model, saved.original, str(out_dir / "original.safetensors"))
    task = _build_task(cfg, loaded, train, targets)
    task.share = parallel.Share(world) if world is not None else None
    parallel.shard(task, world, mode)  # fsdp2: task.params unsharded, task.step_params shards
    method = methods.from_config(cfg)
    run = Run(
        cfg=cfg,
        out_dir=out_dir if main else None,
        model=model,
        task=task,
        method=method,
        opt=method.optimizer(task.step_params, cfg.lr),  # uno.optim.ProjectedAdam for a projection
        grid_z=task.z_monitor[:64],
        write_pngs=inputs.get("write_pngs", True),
        **parallel.measures(cfg, loaded, task, train, heldout),  # rank 0's (NaN elsewhere)
    )
    # BatchNorm modes as during the steps (frozen statistics stay frozen in setup)
    task.begin_step(0)
    run.method.setup(task)
    task.end_step()
    if saved is not None:
        _restore(run, saved)
    else:
        _start(run)
        run.checkpoint(0)
    return run


def _build_task(cfg: RunConfig, loaded: Loaded, train: ImageData, targets: Sequence[int]) -> Task:
    """The task of ``loaded.kind`` around the model, with a frozen copy of it as the original."""
    model, judge = loaded.model, loaded.judge
    original = copy.deepcopy(model).eval()
    for p in original.parameters():
        p.requires_grad_(False)
    model.requires_grad_(True)
    if getattr(judge, "n_classes", 10) not in (1, len(train.names)):
        raise UnoUserError(
            f"the judge has {judge.n_classes} outputs; the data has {len(train.names)} classes"
        )
    w_u = cfg.w_u if cfg.method.endswith("-hat") else 0.0
    common: dict[str, Any] = dict(
        batch=cfg.batch, n_monitor=cfg.n_monitor, w_u=w_u, seed=cfg.seed, bn_train=cfg.bn_train
    )
    if loaded.kind == "diffusion":
        from uno.unlearn.diffusion.task import DiffusionTask

        return DiffusionTask(
            model, judge, train, targets, original=original, fid_n=cfg.fid_n,
            judge2=loaded.judge2, **common,
        )  # fmt: skip
    if loaded.kind == "gan":
        return GANTask(
            model, judge, targets, original=original, critic=loaded.critic, w_c=cfg.w_c,
            w_j=cfg.w_j, **common,
        )  # fmt: skip
    return VAETask(model, judge, train, targets, original=original, **common)


def _restore(run: Run, saved: SavedRun) -> None:
    """Load a verified checkpoint into the prepared run."""
    t = saved.tensors
    where = str(run.out_dir / "ckpt.safetensors") if run.out_dir is not None else "checkpoint"
    model_state = {k[6:]: v for k, v in t.items() if k.startswith("model.")}
    if run.task.sharded is not None:  # the whole (1-process) state, as this rank's shards
        run.task.sharded.restore(model_state, t, run.opt, where)
    else:
        io.load_state(run.model, model_state, where)
        io.load_optimizer_tensors(run.opt, run.task.params, t)
    run.method.load_state_dict({k[7:]: v for k, v in t.items() if k.startswith("method.")})
    run.rows = [nan_for_null(r) for r in saved.meta["rows"]]
    run.summary0 = nan_for_null(saved.meta["summary0"])
    run.start = run.last_ckpt = int(saved.meta["step"])


def _start(run: Run) -> None:
    """Measure step 0 and write a fresh run's first files."""
    f0 = run.task.forget_fraction()
    run.summary0 = {"f0": f0, "fid_before": run.fid(run.model), "elbo_before": run.elbo()}
    run.summary0["fid2_before"] = run.fid2(run.model) if run.fid2 else float("nan")
    run.rows = [_row(0, f0, methods.StepInfo(), 0.0, float("nan"), run.fresh_now())]
    run.rows[0]["fid"] = run.summary0["fid_before"]  # measured: the FID at forget when f0 < tau
    if run.out_dir is not None:
        # fsdp2: the model's state is sharded; its frozen copy (taken before) is the same state
        write_start(
            run.out_dir, run.cfg, run.task.frozen_original() if run.task.sharded else run.model
        )
        if run.write_pngs:
            plots.save_grid(run.out_dir / "before.png", sample_images(run.model, run.grid_z))


def loop(run: Run, *, stop_after: Optional[int] = None) -> Progress:
    """The steps after ``run.start`` up to ``cfg.steps`` (or the first forgotten step with
    ``stop_on_forget``; or ``stop_after``, checkpointed, as if interrupted).

    Raises:
        NonFiniteError: a direction or the parameters are not finite.
    """
    cfg = run.cfg
    reached = metrics.steps_to_forget([r["f"] for r in run.rows], cfg.tau)
    progress = Progress(
        reached, run.rows[reached]["fid"] if reached is not None else None, "budget"
    )
    bar = parallel.progress_bar(cfg, run.start)  # rank 0's only
    bytes0, steps0 = parallel.traffic.snapshot(), len(run.rows)
    try:
        for step in range(run.start + 1, cfg.steps + 1):
            if cfg.stop_on_forget and progress.reached is not None:
                progress.stopped = "forgotten"
                break
            row = _step(run, step)
            if progress.reached is None and row["f"] < cfg.tau:
                progress.reached = step
                progress.fid_at_forget = row["fid"] = run.fid(run.model)
            run.rows.append(row)
            # refresh=False: the bar redraws at its own rate (every 30 s off a terminal), not every step.
            bar.set_postfix(f=f"{row['f']:.3f}", cos2=f"{row['cos2']:.2g}", refresh=False)
            bar.update(1)
            if step % cfg.ckpt_every == 0 or step == cfg.steps:
                run.checkpoint(step)
            if stop_after is not None and step >= stop_after:
                run.checkpoint(step)
                progress.interrupted_at = step
                break
    finally:
        bar.close()
    comm = {k: v - bytes0[k] for k, v in parallel.traffic.snapshot().items()}
    progress.reduced = (comm, len(run.rows) - steps0)
    return progress


def _step(run: Run, step: int) -> dict[str, Any]:
    """One timed update, then the untimed monitoring; returns the step's log row."""
    task, device = run.task, run.task.params[0].device
    mem = metrics.PeakMemory(device)
    metrics.sync(device)
    with mem:
        t0 = time.perf_counter()
        task.begin_step(step)
        d, info = run.method.direction(task, step)
        if not _finite(d) or not math.isfinite(info.loss_r if not math.isnan(info.loss_r) else 0.0):
            _nonfinite(step, run)
        for p, g in zip(task.step_params, d):  # fsdp2: the shards (d is sharded)
            p.grad = g
        run.method.step(run.opt)  # projected off the step's basis by a projection method
        if task.sharded is not None:
            task.sharded.refresh()  # the stepped shards into the unsharded parameters
        metrics.sync(device)
        dt = time.perf_counter() - t0
    task.end_step()
    for p in task.step_params:
        p.grad = None
    # -- monitoring (not timed, the same for every method) --
    if not _finite(task.params):
        _nonfinite(step, run)
    if not run.method.measures_cos2:
        task.begin_step(step)  # same batches as the step, for cos² only
        info.cos2 = _cos2_now(task)
        task.end_step()
    return _row(step, task.forget_fraction(), info, dt, mem.value, run.fresh_now())


def summarize(run: Run, progress: Progress) -> dict[str, Any]:
    """The final checkpoint, the summary (returned, and in ``log.json``) and the after/curve figures."""
    cfg, rows = run.cfg, run.rows
    run.checkpoint(rows[-1]["step"])
    summary = metrics.run_summary(cfg, rows, run.summary0, progress)
    summary["fid_after"] = run.fid(run.model)
    summary["elbo_after"] = run.elbo()
    summary["fid2_after"] = run.fid2(run.model) if run.fid2 else None
    summary["n_params"] = sum(p.numel() for p in run.task.params)
    summary.update(parallel.summary_fields(*progress.reduced))
    if run.out_dir is not None:  # rank 0 (or the one process)
        parallel.write_outputs(run, summary, config_json(cfg))
    return summary


def _finite(tensors: Sequence[torch.Tensor]) -> bool:
    return parallel.all_finite(tensors)  # DTensor shards: agreed by every rank


def _row(
    step: int, f: float, info: methods.StepInfo, dt: float, mem: float, fresh: tuple[float, float]
) -> dict[str, Any]:
    return {
        "step": step,
        "f": f,
        "f_fresh": fresh[0],
        "f_fresh2": fresh[1],
        "cos2": info.cos2,
        "loss_f": info.loss_f,
        "loss_r": info.loss_r,
        "dt": dt,
        "peak_mem": mem,
        "zero_norm": int(info.zero_norm),
        "fid": float("nan"),
    }


def _cos2_now(task: Task) -> float:
    from uno.unlearn.methods.base import forget_retain_grads

    return forget_retain_grads(task)[2].cos2


def _nonfinite(step: int, run: Run) -> None:
    # Every checkpoint this run wrote was checked finite before and checksummed when written; a resumed
    # one was verified against its checksum when loaded. Say which step it holds, never more.
    where = ""
    if run.out_dir is not None and run.last_ckpt is not None:
        where = (
            f"; the last checkpoint (step {run.last_ckpt}, finite and checksummed) is "
            f"{run.out_dir / 'ckpt.safetensors'}"
        )
    raise NonFiniteError(f"non-finite values (NaN/Inf) at step {step}: run stopped{where}")
