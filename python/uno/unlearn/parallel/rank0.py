"""What only rank 0 does in a data-parallel run: measure (FID, the held-out ELBO, f on fresh codes)
and report; the other ranks get :data:`NOT_MEASURED`. (The run loop's hooks, out of
:mod:`uno.unlearn.run`.)"""

from __future__ import annotations

from typing import Any

from uno.unlearn.parallel.world import current


def nan(*_: Any) -> float:
    """A measure that was not taken (NaN)."""
    return float("nan")


#: What a rank other than 0 gets instead of the run's measures (FID, ELBO, f on fresh codes).
NOT_MEASURED: dict[str, Any] = dict(fid=nan, elbo=nan, fresh=None, fid2=None)


def measures(cfg: Any, loaded: Any, task: Any, train: Any, heldout: Any) -> dict[str, Any]:
    """FID (judges 1 and 2), the held-out ELBO and f on fresh codes: what rank 0 (or the one
    process) measures; :data:`NOT_MEASURED` on the other ranks."""
    if current() is not None and not current().main:  # type: ignore[union-attr]
        return dict(NOT_MEASURED)
    from uno.unlearn import evaluation, metrics
    from uno.unlearn.tasks import VAETask

    judge, targets, zdim = loaded.judge, task.targets, loaded.model.latent_dim
    retain_real = train.x[~train.forget_mask(targets)]  # FID's real images
    return dict(
        fid=getattr(task, "classifier_fid", None)  # the diffusion task's: retain classes only
        or metrics.ClassifierFID(judge, retain_real, zdim, n=cfg.fid_n),
        elbo=(lambda: task.retain_elbo(heldout)) if isinstance(task, VAETask) else nan,
        fresh=evaluation.for_run([judge, loaded.judge2], targets, task.zdim, cfg.fresh_count()),
        fid2=getattr(task, "classifier_fid2", None)  # the diffusion task's: retain classes only
        or metrics.optional_fid(loaded.judge2, retain_real, zdim, cfg.fid_n),
    )


def summary_fields(comm: dict[str, int], nsteps: int) -> dict[str, Any]:
    """The summary's ``nproc`` and ``allreduce_bytes_per_step`` (0 in one process) and, on several
    ranks only (a 1-process summary keeps its columns), ``comm_bytes_per_step``: bytes per step
    and rank by kind of collective (:class:`uno.unlearn.parallel.reduce.Traffic`)."""
    world = current()
    per = {k: (v / nsteps if nsteps else 0.0) for k, v in comm.items()}
    out: dict[str, Any] = {
        "nproc": world.size if world else 1,
        "allreduce_bytes_per_step": per.get("all_reduce", 0.0),
    }
    if world is not None:
        out["comm_bytes_per_step"] = per
    return out


def write_outputs(run: Any, summary: dict[str, Any], config: dict[str, Any]) -> None:
    """Rank 0's ``log.json`` and (with ``run.write_pngs``) ``after.png`` and ``curve.png``."""
    from uno.unlearn import io, plots
    from uno.unlearn.models import sample_images

    cfg, rows = run.cfg, run.rows
    io.write_json(run.out_dir / "log.json", {"summary": summary, "config": config, "rows": rows})
    if run.write_pngs:
        plots.save_grid(run.out_dir / "after.png", sample_images(run.model, run.grid_z))
        plots.save_curves(
            run.out_dir / "curve.png",
            {cfg.method: [[r["f"] for r in rows]]},
            cfg.tau,
            title=f"{cfg.method}: forget {','.join(cfg.forget)}",
        )


def progress_bar(cfg: Any, start: int) -> Any:
    """The run's progress bar: rank 0's (quiet on the other ranks, one bar for the run)."""
    from uno.unlearn.train import progress

    world = current()
    quiet = cfg.quiet or (world is not None and not world.main)
    return progress(total=cfg.steps, initial=start, quiet=quiet, desc=cfg.method)
