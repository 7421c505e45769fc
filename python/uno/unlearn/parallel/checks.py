"""What a data-parallel run refuses, checked before anything is loaded (``uno: error: ...``)."""

from __future__ import annotations

from typing import Any, Optional

from uno.unlearn.errors import UnoUserError
from uno.unlearn.parallel.world import World, current

#: How the model is laid out across ranks (``--parallel``).
MODES = ("ddp", "fsdp2")
_METHODS = (
    "ascent", "ascent-descent", "surgery", "surgery-ascent", "uno", "uno-s", "retain", "kick",
    "salun", "fu", "uno-subspace",
)  # fmt: skip
#: The methods (and their ``-hat`` variants) that run data-parallel, by layout. Their gradients
#: are sums over samples, split by rank and summed (:func:`uno.unlearn.parallel.sum_grads`).
SUPPORTED: dict[str, tuple[str, ...]] = {
    "ddp": _METHODS,
    "fsdp2": _METHODS,
}
#: Why a method does not run data-parallel (in the refusal's message).
WHY_NOT: dict[str, str] = {
    "uno-subspace-ps": "its basis needs the Gram of every pair of per-sample retain gradients "
    "across ranks (a global per-sample Gram is not implemented)",
    "fill": "its neighbour draws and noise are per forget row of the rank's batch",
}


def base_name(method: str) -> str:
    """The method without its ``-hat`` suffix."""
    return method[: -len("-hat")] if method.endswith("-hat") else method


def _default_of(cfg: Any) -> str:
    """`` (the default of a gan model)`` when ``cfg.method`` is its model's default (``--method
    auto``), so that a refusal says where the method came from; else empty."""
    from uno.unlearn.methods.defaults import DEFAULTS, model_kind

    kind = model_kind(cfg.model)
    return f" (the default of a {kind} model)" if DEFAULTS.get(kind) == cfg.method else ""


def check(cfg: Any, nproc: int, mode: str = "ddp") -> None:
    """Refuse, before anything is loaded, what a data-parallel run cannot do (nothing for 1 process).

    Raises:
        UnoUserError: a bad ``--nproc`` / ``--parallel``, or a method, model or option that does not
            run data-parallel in ``mode``.
    """
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise UnoUserError(f"--nproc must be an integer >= 1, got {nproc!r}")
    if mode not in MODES:
        raise UnoUserError(f"--parallel must be one of {', '.join(MODES)}, got {mode!r}")
    if nproc == 1:
        return
    where = f"--nproc {nproc} --parallel {mode}"
    base = base_name(cfg.method)
    if base not in SUPPORTED[mode]:
        why = WHY_NOT.get(base, "its step uses per-sample or local-batch terms")
        raise UnoUserError(
            f"{where}: method {cfg.method!r}{_default_of(cfg)} does not run data-parallel ({why}); "
            f"pass --method with one of {', '.join(SUPPORTED[mode])} (or their -hat)"
        )
    if cfg.model == "diffusion":
        raise UnoUserError(f"{where}: --model diffusion does not run data-parallel; use vae or gan")
    if cfg.bn_train:
        raise UnoUserError(f"{where}: --bn-train uses each rank's batch statistics; drop it")
    if cfg.batch < nproc:
        raise UnoUserError(f"{where}: --batch {cfg.batch} gives a rank no samples")


def check_run(cfg: Any, mode: str = "ddp") -> Optional[World]:
    """This process's world (None: one process), after :func:`check` of ``cfg`` against it."""
    world = current()
    check(cfg, world.size if world else 1, mode)
    return world


def check_kind(kind: str) -> None:
    """Refuse a loaded model of a kind that does not run data-parallel (a diffusion model file)."""
    world = current()
    if world is not None and kind not in ("vae", "gan"):
        raise UnoUserError(f"--nproc {world.size}: a {kind} model does not run data-parallel")
