"""The run folder: what a run writes besides its figures, what a resume reads back, and the checks on both.

``config.json`` (the configuration; a resume must match it except :data:`RESUME_FREE`), ``original.safetensors``
(the model before unlearning), ``ckpt.safetensors`` (model, optimizer and method tensors, with the step,
the log rows and the step-0 summary as metadata) and ``log.csv``. Every file is written atomically and
every safetensors file is checksummed (:mod:`uno.unlearn.io`).
"""

from __future__ import annotations

import csv
import io as _io
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from uno.unlearn import io, preflight
from uno.unlearn.config import RunConfig
from uno.unlearn.errors import CheckpointError, UnoUserError

log = logging.getLogger("uno.unlearn")

#: Fields that may differ between a run and its resume.
RESUME_FREE = {"steps", "ckpt_every", "quiet"}


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


def nan_for_null(d: dict[str, Any]) -> dict[str, Any]:
    """Undo :func:`io.strict_json` on a row or summary: ``None`` back to NaN (every value is a number)."""
    return {k: float("nan") if v is None else v for k, v in d.items()}


def config_json(cfg: RunConfig) -> dict[str, Any]:
    return asdict(cfg)


def _check_resume(stored: dict[str, Any], cfg: RunConfig) -> None:
    now = config_json(cfg)
    diff = [k for k in now if k not in RESUME_FREE and stored.get(k) != now[k]]
    if diff:
        k = diff[0]
        raise CheckpointError(
            f"cannot resume: the run folder was made with {k}={stored.get(k)!r}, now {k}={now[k]!r}"
        )


def rows_csv(rows: list[dict[str, Any]]) -> str:
    buf = _io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return buf.getvalue()


def write_checkpoint(
    out_dir: Path, step: int, tensors: dict[str, torch.Tensor], rows: list[dict[str, Any]],
    summary0: dict[str, Any],
) -> None:  # fmt: skip
    """``ckpt.safetensors`` (tensors; step, rows and the step-0 summary as metadata), then ``log.csv``."""
    io.save_tensors(
        out_dir / "ckpt.safetensors", tensors, {"step": step, "rows": rows, "summary0": summary0}
    )
    io.write_text(out_dir / "log.csv", rows_csv(rows))


def write_start(out_dir: Path, cfg: RunConfig, model: torch.nn.Module) -> None:
    """A fresh run's ``config.json`` and ``original.safetensors``."""
    io.write_json(out_dir / "config.json", config_json(cfg))
    io.save_tensors(
        out_dir / "original.safetensors",
        dict(model.state_dict()),
        {"config": getattr(model, "config", {})},
    )
