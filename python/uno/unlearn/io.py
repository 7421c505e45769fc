"""Files: atomic writes (temp file in the same folder, then ``os.replace``), safetensors checkpoints.

JSON is strict: every file written here (and the JSON kept in a checkpoint's header) stores a non-finite
float (NaN, ±Inf: "not measured") as ``null``, so ``json.loads(..., parse_constant=reject)`` and other
strict parsers read it. Every safetensors file carries a SHA-256 of its tensors and metadata, checked on
load: a corrupt file is an error that names it, never a silent wrong state.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from uno.unlearn.errors import CheckpointError

PathLike = Union[str, "os.PathLike[str]"]


def atomic_write(path: PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then atomically rename to ``path`` (no half-written file on failure)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def write_text(path: PathLike, text: str) -> None:
    def w(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text)

    atomic_write(path, w)


def strict_json(obj: Any) -> Any:
    """A copy of ``obj`` with every non-finite float replaced by ``None`` (tuples become lists)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    return strict_json(float(obj))  # numpy / torch scalars


def dumps(obj: Any, **kw: Any) -> str:
    """``json.dumps`` of :func:`strict_json` (``null`` for NaN/Inf; never a bare ``NaN``)."""
    return json.dumps(strict_json(obj), allow_nan=False, **kw)


def write_json(path: PathLike, obj: Any) -> None:
    write_text(path, dumps(obj, indent=2, sort_keys=True) + "\n")


#: Metadata key of the checksum (beside ``uno``, the JSON metadata).
CHECKSUM_KEY = "uno_sha256"


def checksum(tensors: dict[str, Tensor], meta_json: str) -> str:
    """SHA-256 over the metadata string and every tensor's name, dtype, shape and bytes (sorted by name)."""
    h = hashlib.sha256(meta_json.encode())
    for k in sorted(tensors):
        t = tensors[k].detach().cpu().contiguous()
        h.update(f"\0{k}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_tensors(
    path: PathLike, tensors: dict[str, Tensor], meta: Optional[dict[str, Any]] = None
) -> None:
    """Atomically save ``tensors`` (contiguous CPU copies) with JSON ``meta`` in the safetensors header."""
    from safetensors.torch import save_file

    data = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    meta_json = dumps(meta or {})
    md = {"uno": meta_json, CHECKSUM_KEY: checksum(data, meta_json)}
    atomic_write(path, lambda tmp: save_file(data, tmp, metadata=md))


def load_tensors(
    path: PathLike, *, require_checksum: bool = False
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Load a safetensors file written by :func:`save_tensors`, verifying its checksum.

    Args:
        path: the file.
        require_checksum: reject a file without a checksum (one not written by :func:`save_tensors`,
            or by a uno older than the checksum); without it such a file loads unverified.

    Returns:
        ``(tensors, meta)``; in ``meta`` a ``null`` stands for a non-finite float (see :func:`strict_json`).

    Raises:
        CheckpointError: missing or malformed file, or a checksum that does not match (a corrupt file).
    """
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p}")
    try:
        with safe_open(str(p), framework="pt") as f:  # type: ignore[no-untyped-call]
            md = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise CheckpointError(f"{p}: not a readable safetensors checkpoint ({e})") from e
    meta_json = md.get("uno", "{}")
    stored = md.get(CHECKSUM_KEY)
    if stored is None and require_checksum:
        raise CheckpointError(
            f"{p}: has no checksum, so it cannot be verified (not written by this uno)"
        )
    if stored is not None and stored != checksum(tensors, meta_json):
        raise CheckpointError(
            f"{p}: checksum mismatch: the file is corrupt (its contents changed after it was written)"
        )
    try:
        meta = json.loads(meta_json)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{p}: malformed uno metadata ({e})") from e
    return tensors, meta


def read_model_kind(path: PathLike) -> Optional[str]:
    """The model kind a :func:`save_model` file records, from its metadata alone (no tensors read,
    no checksum verified); ``None`` for a file that is missing, unreadable or not a uno model file."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:  # type: ignore[no-untyped-call]
            md = f.metadata() or {}
        cfg = json.loads(md.get("uno", "{}")).get("config")
    except Exception:  # any unreadable file: the caller's later load reports it
        return None
    return str(cfg["kind"]) if isinstance(cfg, dict) and "kind" in cfg else None


def save_model(
    path: PathLike, model: nn.Module, extra_meta: Optional[dict[str, Any]] = None
) -> None:
    """Save a model's state dict with its ``config`` (to rebuild it) in the metadata."""
    meta = {"config": getattr(model, "config", {}), **(extra_meta or {})}
    save_tensors(path, dict(model.state_dict()), meta)


def load_model(
    path: PathLike, expect_kind: Optional[Union[str, tuple[str, ...]]] = None
) -> tuple[nn.Module, dict]:
    """Rebuild a model saved by :func:`save_model`.

    Raises:
        CheckpointError: missing/malformed file, wrong model kind, or tensors that do not fit the config.
    """
    from uno.unlearn.models import build

    tensors, meta = load_tensors(path)
    cfg = meta.get("config")
    if not isinstance(cfg, dict) or "kind" not in cfg:
        raise CheckpointError(
            f"{path}: no model config in the checkpoint metadata (not a uno model file)"
        )
    kinds = (expect_kind,) if isinstance(expect_kind, str) else expect_kind
    if kinds is not None and cfg["kind"] not in kinds:
        raise CheckpointError(f"{path}: holds a {cfg['kind']} model, expected {' or '.join(kinds)}")
    try:
        model = build(cfg)
        load_state(model, tensors, str(path))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot rebuild the model ({e})") from e
    return model, meta


def load_state(model: nn.Module, tensors: dict[str, Tensor], where: str = "checkpoint") -> None:
    """``load_state_dict`` with a clear error for missing/unexpected keys or shape mismatches."""
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    bad = [k for k in own if k in tensors and tensors[k].shape != own[k].shape]
    if missing or unexpected or bad:
        parts = []
        if missing:
            parts.append(f"missing {missing[:3]}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:3]}")
        if bad:
            k = bad[0]
            parts.append(
                f"shape of {k}: checkpoint {tuple(tensors[k].shape)} vs model {tuple(own[k].shape)}"
            )
        raise CheckpointError(f"{where} is incompatible with the model: " + "; ".join(parts))
    model.load_state_dict({k: tensors[k] for k in own})


def optimizer_tensors(opt: torch.optim.Optimizer, params: Sequence[Tensor]) -> dict[str, Tensor]:
    """Adam state as flat named tensors (``opt.<i>.<name>``)."""
    out: dict[str, Tensor] = {}
    for i, p in enumerate(params):
        for k, v in opt.state.get(p, {}).items():
            out[f"opt.{i}.{k}"] = v if isinstance(v, Tensor) else torch.tensor(v)
    return out


def load_optimizer_tensors(
    opt: torch.optim.Optimizer, params: Sequence[Tensor], tensors: dict[str, Tensor]
) -> None:
    for i, p in enumerate(params):
        st = {
            k.split(".", 2)[2]: v.clone() for k, v in tensors.items() if k.startswith(f"opt.{i}.")
        }
        if st:
            if "exp_avg" in st and st["exp_avg"].shape != p.shape:
                raise CheckpointError("optimizer state does not fit the model's parameters")
            opt.state[p] = st
