"""The run loop: one method on one model, with metrics, logs, PNGs and resumable checkpoints.

Output folder (``out``):
    config.json         the run's configuration (a resume must match it)
    original.safetensors  the model before unlearning (the frozen original of ``fu``/GAN runs)
    ckpt.safetensors    last good state: model, Adam state, method state, log rows (atomic)
    log.csv, log.json   one row per step; the summary (steps/time to forget, FID, ELBO, ...)
    before.png, after.png, curve.png
Every file is written atomically (temp file + ``os.replace``): an interrupted run leaves no half file.
Every option and the output folder are checked before any model or data is loaded (bad input raises
:class:`~uno.unlearn.errors.UnoUserError` and writes nothing). ``log.json`` writes a value that was not
measured (NaN) as ``null``; ``log.csv`` keeps Python's ``nan`` (what pandas and numpy read as NaN).
Checkpoints carry a checksum, verified when a run resumes.
"""

from __future__ import annotations

import copy
import csv
import io as _io
import json
import logging
import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch import nn

from uno.unlearn import io, methods, metrics, plots, preflight
from uno.unlearn.data import ImageData, load_celeba, load_mnist, resolve_targets
from uno.unlearn.errors import CheckpointError, NonFiniteError, UnoUserError
from uno.unlearn.models import sample_images
from uno.unlearn.tasks import GANTask, Task, VAETask

log = logging.getLogger("uno.unlearn")

#: Fields that may differ between a run and its resume.
_RESUME_FREE = {"steps", "ckpt_every", "quiet"}


@dataclass
class RunConfig:
    """Configuration of one unlearning run (CLI flags map 1:1)."""

    model: str = "vae"  # "vae", "gan" or a path to a saved model
    method: str = "uno"
    forget: list[str] = field(default_factory=lambda: ["1"])
    steps: int = 100
    tau: float = 0.02
    seed: int = 0
    lr: float = 1e-3
    lam: float = 1e3
    w_u: float = 1e3  # histogram-loss weight of the -hat variants
    batch: int = 128
    n_monitor: int = 512
    bn_train: bool = False
    ckpt_every: int = 10
    stop_on_forget: bool = False
    judge: Optional[str] = None  # path; default: the cached MLP judge
    data: Optional[str] = None  # data root; default: the embedded MNIST digits
    dataset: str = "mnist"  # "mnist" or "celeba" (torchvision layout under --data; 64×64)
    fid_n: Optional[int] = None  # number of images for FID (None = all real retain images)
    k: int = 8  # uno-subspace: retain micro-batches
    w_c: float = 0.0  # GAN retain loss: critic weight
    w_j: float = 1.0  # GAN retain loss: weight of the judge term (keep each retain latent's class)
    critic: Optional[str] = None  # GAN: critic path (default: the cached one for --model gan)
    vae_epochs: Optional[int] = None
    judge_epochs: Optional[int] = None
    gan_steps: Optional[int] = None
    quiet: bool = False

    def validate(self) -> None:
        """Check every option (named by its ``uno unlearn`` flag) without loading anything.

        Raises:
            UnoUserError: the first bad option, with the value seen.
        """
        methods.create(self.method, **self.method_kwargs())  # unknown method: lists the known ones
        if not isinstance(self.forget, (list, tuple)) or not self.forget:
            raise UnoUserError(f"--forget needs at least one class, got {self.forget!r}")
        ints: list[tuple[str, Any, int]] = [
            ("--steps", self.steps, 0),
            ("--batch", self.batch, 1),
            ("--monitor", self.n_monitor, 1),
            ("--ckpt-every", self.ckpt_every, 1),
            ("--k", self.k, 1),
        ]
        for flag, v, low in ints:
            preflight.int_at_least(flag, v, low)
        optional: list[tuple[str, Any, int]] = [
            ("--fid-n", self.fid_n, 2),  # a covariance needs two samples
            ("vae_epochs", self.vae_epochs, 1),
            ("judge_epochs", self.judge_epochs, 1),
            ("gan_steps", self.gan_steps, 1),
        ]
        for flag, v, low in optional:
            preflight.int_at_least(flag, v, low, optional=True)
        preflight.seed("--seed", self.seed)
        preflight.real("--tau", self.tau, low=0.0, high=1.0, low_open=True)
        preflight.real("--lr", self.lr, low=0.0, low_open=True)
        weights: list[tuple[str, Any]] = [
            ("--lam", self.lam),
            ("--w-u", self.w_u),
            ("--w-c", self.w_c),
            ("--w-j", self.w_j),
        ]
        for flag, w in weights:
            preflight.real(flag, w, low=0.0)
        if self.dataset not in ("mnist", "celeba"):
            raise UnoUserError(f"unknown dataset {self.dataset!r}; choose mnist or celeba")
        if self.model not in ("vae", "gan") and not Path(self.model).expanduser().is_file():
            raise UnoUserError(
                f"unknown model {self.model!r}: not 'vae', 'gan' or an existing file"
            )
        preflight.existing_file("--judge", self.judge)
        preflight.existing_file("--critic", self.critic)
        preflight.existing_path("--data", self.data)

    def method_kwargs(self) -> dict[str, Any]:
        base = self.method.removesuffix("-hat")
        kw: dict[str, Any] = {}
        if base in ("uno", "uno-s"):
            kw["lam"] = self.lam
        if base == "uno-subspace":
            kw["k"] = self.k
        return kw


@dataclass
class Loaded:
    """Models a run needs (pass them in to skip loading/training)."""

    model: nn.Module
    judge: nn.Module
    critic: Optional[nn.Module] = None
    kind: str = "vae"  # "vae" or "gan"


def load_models(cfg: RunConfig) -> Loaded:
    """Resolve ``cfg.model`` / ``cfg.judge`` to models (cache, or train on the embedded data)."""
    from uno.unlearn.train import get_or_train

    critic = None
    if cfg.model == "vae":
        model, _ = get_or_train("vae", data_root=cfg.data, quiet=cfg.quiet, epochs=cfg.vae_epochs)
        kind = "vae"
    elif cfg.model == "gan":
        (model, critic), _ = get_or_train(
            "gan", data_root=cfg.data, quiet=cfg.quiet, steps=cfg.gan_steps
        )
        kind = "gan"
    else:
        p = Path(cfg.model).expanduser()
        if not p.exists():
            raise UnoUserError(f"unknown model {cfg.model!r}: not 'vae', 'gan' or an existing file")
        model, _ = io.load_model(p, ("mnist_vae", "conv_vae", "dcgan_g"))
        kind = "gan" if model.config["kind"] == "dcgan_g" else "vae"  # type: ignore[index]
    if cfg.critic is not None:
        critic, _ = io.load_model(cfg.critic, "dcgan_d")
    if cfg.judge is not None:
        judge, _ = io.load_model(cfg.judge, ("mlp_judge", "cnn_judge"))
    else:
        judge, _ = get_or_train(
            "judge", data_root=cfg.data, quiet=cfg.quiet, epochs=cfg.judge_epochs
        )
    return Loaded(model, judge, critic, kind)


def load_data(cfg: RunConfig) -> tuple[ImageData, ImageData]:
    """``(train, heldout)`` for ``cfg.dataset`` (``mnist``: embedded or ``cfg.data``; ``celeba``: ``cfg.data``)."""
    if cfg.dataset == "mnist":
        return load_mnist(cfg.data)
    if cfg.dataset == "celeba":
        if cfg.data is None:
            raise UnoUserError(
                "--dataset celeba needs --data PATH (torchvision's CelebA folder layout)"
            )
        if cfg.model in ("vae", "gan") or cfg.judge is None:
            raise UnoUserError("--dataset celeba needs --model FILE (a conv VAE) and --judge FILE")
        return load_celeba(cfg.data, size=64)
    raise UnoUserError(f"unknown dataset {cfg.dataset!r}; choose mnist or celeba")


@dataclass
class SavedRun:
    """A run folder's verified state, read before anything is loaded (see :func:`check_run_folder`)."""

    tensors: dict[str, torch.Tensor]  # ckpt.safetensors
    meta: dict[str, Any]  # its metadata: step, rows, summary0
    original: dict[str, torch.Tensor]  # original.safetensors


def check_run_folder(cfg: RunConfig, out: Optional[str], resume: bool) -> Optional[SavedRun]:
    """Check the output folder before a run loads anything; for a resume, read and verify its state.

    Raises:
        UnoUserError: ``out`` is a file or not writable; it already holds a run (and not ``resume``); the
            run to resume is missing, corrupt, made with another configuration, or already past
            ``cfg.steps``.
    """
    preflight.out_dir("--out", out)
    if out is None:
        if resume:
            raise CheckpointError("nothing to resume: no output folder given")
        return None
    out_dir = Path(out).expanduser()
    ckpt = out_dir / "ckpt.safetensors"
    if not resume:
        if ckpt.exists():
            raise UnoUserError(
                f"{out_dir} already holds a run; pass --resume to continue it or choose another --out"
            )
        return None
    if not (out_dir / "config.json").is_file():
        raise CheckpointError(f"nothing to resume in {out_dir}: no config.json")
    try:
        stored = json.loads((out_dir / "config.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{out_dir}/config.json is malformed ({e})") from e
    if not isinstance(stored, dict):
        raise CheckpointError(f"{out_dir}/config.json is malformed (not a JSON object)")
    _check_resume(stored, cfg)
    if not ckpt.exists():
        raise CheckpointError(
            f"nothing to resume in {out_dir}: the run stopped before its first checkpoint; "
            "start it again without --resume"
        )
    tensors, meta = io.load_tensors(ckpt, require_checksum=True)
    if not all(k in meta for k in ("step", "rows", "summary0")):
        raise CheckpointError(f"{ckpt}: not a run checkpoint (no step, rows or summary0)")
    step = int(meta["step"])
    if step > cfg.steps:
        done = (out_dir / "log.json").is_file() and meta["rows"][-1]["step"] == step
        state = (
            f"finished at step {step} (its summary is in log.json)" if done else f"at step {step}"
        )
        raise UnoUserError(
            f"nothing to do: the run in {out_dir} is already {state}, past --steps {cfg.steps}; "
            f"pass --steps {step} or more to continue it"
        )
    if step == cfg.steps:
        log.warning(
            "the run in %s is already at step %d: nothing to do, summarizing it", out_dir, step
        )
    original, _ = io.load_tensors(out_dir / "original.safetensors", require_checksum=True)
    return SavedRun(tensors, meta, original)


def _nan_for_null(d: dict[str, Any]) -> dict[str, Any]:
    """Undo :func:`io.strict_json` on a row or summary: ``None`` back to NaN (every value is a number)."""
    return {k: float("nan") if v is None else v for k, v in d.items()}


def _config_json(cfg: RunConfig) -> dict[str, Any]:
    return asdict(cfg)


def _check_resume(stored: dict[str, Any], cfg: RunConfig) -> None:
    now = _config_json(cfg)
    diff = [k for k in now if k not in _RESUME_FREE and stored.get(k) != now[k]]
    if diff:
        k = diff[0]
        raise CheckpointError(
            f"cannot resume: the run folder was made with {k}={stored.get(k)!r}, now {k}={now[k]!r}"
        )


def _rows_csv(rows: list[dict[str, Any]]) -> str:
    buf = _io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return buf.getvalue()


def _finite(tensors: Sequence[torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def unlearn(
    cfg: RunConfig,
    out: Optional[str] = None,
    *,
    resume: bool = False,
    loaded: Optional[Loaded] = None,
    data: Optional[tuple[ImageData, ImageData]] = None,
    stop_after: Optional[int] = None,
    write_pngs: bool = True,
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
        NonFiniteError: NaN/Inf in a step; the last good checkpoint is kept.
    """
    cfg.validate()
    out_dir = Path(out).expanduser() if out is not None else None
    ckpt_path = out_dir / "ckpt.safetensors" if out_dir is not None else None
    saved = check_run_folder(cfg, out, resume)

    train, heldout = data if data is not None else load_data(cfg)
    targets = resolve_targets(train, cfg.forget)
    loaded = loaded if loaded is not None else load_models(cfg)
    model, judge = loaded.model, loaded.judge
    if saved is not None:
        assert out_dir is not None
        io.load_state(model, saved.original, str(out_dir / "original.safetensors"))
    original = copy.deepcopy(model).eval()
    for p in original.parameters():
        p.requires_grad_(False)
    model.requires_grad_(True)
    if getattr(judge, "n_classes", 10) not in (1, len(train.names)):
        raise UnoUserError(
            f"the judge has {judge.n_classes} outputs; the data has {len(train.names)} classes"
        )

    hat = cfg.method.endswith("-hat")
    w_u = cfg.w_u if hat else 0.0
    common: dict[str, Any] = dict(
        batch=cfg.batch, n_monitor=cfg.n_monitor, w_u=w_u, seed=cfg.seed, bn_train=cfg.bn_train
    )
    task: Task
    if loaded.kind == "gan":
        task = GANTask(
            model,
            judge,
            targets,
            original=original,
            critic=loaded.critic,
            w_c=cfg.w_c,
            w_j=cfg.w_j,
            **common,
        )
    else:
        task = VAETask(model, judge, train, targets, original=original, **common)
    method = methods.create(cfg.method, **cfg.method_kwargs())
    opt = torch.optim.Adam(task.params, lr=cfg.lr)
    device = task.params[0].device
    retain_real = train.x[~train.forget_mask(targets)]
    fid = metrics.ClassifierFID(judge, retain_real, model.latent_dim, n=cfg.fid_n)  # type: ignore[arg-type]
    elbo = (
        (lambda: task.retain_elbo(heldout)) if isinstance(task, VAETask) else (lambda: float("nan"))
    )
    grid_z = task.z_monitor[:64]

    task.begin_step(
        0
    )  # BatchNorm modes as during the steps (frozen statistics stay frozen in setup)
    method.setup(task)
    task.end_step()
    rows: list[dict[str, Any]] = []
    summary0: dict[str, Any]
    start = 0
    if saved is not None:
        assert ckpt_path is not None
        tensors, meta = saved.tensors, saved.meta
        io.load_state(
            model, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, str(ckpt_path)
        )
        io.load_optimizer_tensors(opt, task.params, tensors)
        method.load_state_dict({k[7:]: v for k, v in tensors.items() if k.startswith("method.")})
        rows = [_nan_for_null(r) for r in meta["rows"]]
        summary0 = _nan_for_null(meta["summary0"])
        start = int(meta["step"])
    else:
        summary0 = {"f0": task.forget_fraction(), "fid_before": fid(model), "elbo_before": elbo()}
        rows = [_row(0, summary0["f0"], methods.StepInfo(), 0.0, float("nan"))]
        if out_dir is not None:
            io.write_json(out_dir / "config.json", _config_json(cfg))
            io.save_tensors(
                out_dir / "original.safetensors",
                dict(model.state_dict()),
                {"config": getattr(model, "config", {})},
            )
            if write_pngs:
                plots.save_grid(out_dir / "before.png", sample_images(model, grid_z))

    last_ckpt = [start if saved is not None else None]  # the step the checkpoint on disk holds

    def checkpoint(step: int) -> None:
        if ckpt_path is None:
            return
        t = {f"model.{k}": v for k, v in model.state_dict().items()}
        t.update(io.optimizer_tensors(opt, task.params))
        t.update({f"method.{k}": v for k, v in method.state_dict().items()})
        io.save_tensors(ckpt_path, t, {"step": step, "rows": rows, "summary0": summary0})
        last_ckpt[0] = step
        io.write_text(ckpt_path.parent / "log.csv", _rows_csv(rows))

    if start == 0:
        checkpoint(0)
    fractions = [r["f"] for r in rows]
    reached = metrics.steps_to_forget(fractions, cfg.tau)
    fid_at_forget = rows[reached]["fid"] if reached is not None else None
    bar = _bar(cfg, start)
    stopped = "budget"
    for step in range(start + 1, cfg.steps + 1):
        if cfg.stop_on_forget and reached is not None:
            stopped = "forgotten"
            break
        mem = metrics.PeakMemory(device)
        metrics.sync(device)
        with mem:
            t0 = time.perf_counter()
            task.begin_step(step)
            d, info = method.direction(task, step)
            if not _finite(d) or not math.isfinite(
                info.loss_r if not math.isnan(info.loss_r) else 0.0
            ):
                _nonfinite(step, last_ckpt[0], out_dir)
            for p, g in zip(task.params, d):
                p.grad = g
            opt.step()
            metrics.sync(device)
            dt = time.perf_counter() - t0
        task.end_step()
        for p in task.params:
            p.grad = None
        # -- monitoring (not timed, the same for every method) --
        if not _finite(task.params):
            _nonfinite(step, last_ckpt[0], out_dir)
        if not method.measures_cos2:
            task.begin_step(step)  # same batches as the step, for cos² only
            info.cos2 = _cos2_now(task)
            task.end_step()
        f = task.forget_fraction()
        row = _row(step, f, info, dt, mem.value)
        if reached is None and f < cfg.tau:
            reached = step
            fid_at_forget = fid(model)
            row["fid"] = fid_at_forget
        rows.append(row)
        # refresh=False: the bar redraws at its own rate (every 30 s off a terminal), not every step.
        bar.set_postfix(f=f"{f:.3f}", cos2=f"{info.cos2:.2g}", refresh=False)
        bar.update(1)
        if step % cfg.ckpt_every == 0 or step == cfg.steps:
            checkpoint(step)
        if stop_after is not None and step >= stop_after:
            checkpoint(step)
            bar.close()
            return {"interrupted_at": step}
    bar.close()
    last = rows[-1]["step"]
    checkpoint(last)
    summary = _summary(cfg, rows, summary0, reached, fid_at_forget, stopped)
    summary["fid_after"] = fid(model)
    summary["elbo_after"] = elbo()
    summary["n_params"] = sum(p.numel() for p in task.params)
    if out_dir is not None:
        io.write_json(
            out_dir / "log.json", {"summary": summary, "config": _config_json(cfg), "rows": rows}
        )
        if write_pngs:
            plots.save_grid(out_dir / "after.png", sample_images(model, grid_z))
            plots.save_curves(
                out_dir / "curve.png",
                {cfg.method: [[r["f"] for r in rows]]},
                cfg.tau,
                title=f"{cfg.method}: forget {','.join(cfg.forget)}",
            )
    return summary


def _bar(cfg: RunConfig, start: int) -> Any:
    from uno.unlearn.train import progress

    return progress(total=cfg.steps, initial=start, quiet=cfg.quiet, desc=cfg.method)


def _row(step: int, f: float, info: methods.StepInfo, dt: float, mem: float) -> dict[str, Any]:
    return {
        "step": step,
        "f": f,
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


def _nonfinite(step: int, last_ckpt: Optional[int], out_dir: Optional[Path]) -> None:
    # Every checkpoint this run wrote was checked finite before and checksummed when written; a resumed
    # one was verified against its checksum when loaded. Say which step it holds, never more.
    where = ""
    if out_dir is not None and last_ckpt is not None:
        where = (
            f"; the last checkpoint (step {last_ckpt}, finite and checksummed) is "
            f"{out_dir / 'ckpt.safetensors'}"
        )
    raise NonFiniteError(f"non-finite values (NaN/Inf) at step {step}: run stopped{where}")


def _summary(
    cfg: RunConfig,
    rows: list[dict[str, Any]],
    s0: dict[str, Any],
    reached: Optional[int],
    fid_at_forget: Optional[float],
    stopped: str,
) -> dict[str, Any]:
    dts = [r["dt"] for r in rows[1:]]
    fr = [r["f"] for r in rows]
    return {
        "method": cfg.method,
        "seed": cfg.seed,
        "steps_run": rows[-1]["step"],
        "stopped": stopped,
        "f0": s0["f0"],
        "f_final": fr[-1],
        "f_after_5": fr[5] if len(fr) > 5 else None,
        "steps_to_forget": reached,
        "reached": reached is not None,
        "time_to_forget_s": metrics.time_to_forget(dts, reached),
        "per_step_s": (sum(dts) / len(dts)) if dts else float("nan"),
        "per_step_median_s": statistics.median(dts) if dts else float("nan"),
        "fid_before": s0["fid_before"],
        "fid_at_forget": fid_at_forget,
        "elbo_before": s0["elbo_before"],
        "cos2_mean": _nanmean([r["cos2"] for r in rows[1:]]),
        "peak_mem_bytes": max(
            (r["peak_mem"] for r in rows[1:] if not math.isnan(r["peak_mem"])), default=float("nan")
        ),
        "zero_norm_steps": sum(r["zero_norm"] for r in rows),
    }


def _nanmean(v: list[float]) -> float:
    w = [x for x in v if not math.isnan(x)]
    return sum(w) / len(w) if w else float("nan")
