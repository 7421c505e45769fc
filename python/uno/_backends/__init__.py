"""The backend registry: which implementations of the kernel primitives exist here, and which runs.

A backend is one module, ``uno._backends.<name>`` (``reference``, ``cpu``, ``cuda``, ``triton``), that
exposes every primitive of docs/kernels.md: ``inner``, ``project``, ``combine``, ``optim_step`` and
``ghost_gram``, with the arguments and results of the spec, :mod:`uno.reference`. :func:`get` is the
one call an op makes: it resolves the backend for a device and returns its module; everything below
it receives that module.

Resolution order for an op call: explicit ``backend=`` argument → ``UNO_BACKEND`` environment variable →
the per-device default (CPU tensors: ``cpu`` when the compiled core is importable, else ``reference``;
CUDA tensors: ``cuda`` when built with nvcc, else ``triton``, else ``reference``). An explicitly requested
backend that cannot run raises a ``RuntimeError`` that lists what is available and why the others are not.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from types import ModuleType
from typing import Callable, Dict, Optional

import torch

NAMES = ("reference", "cpu", "cuda", "triton")


@dataclass(frozen=True)
class BackendInfo:
    """Availability of one backend: ``available`` per device type and a reason when not."""

    name: str
    devices: tuple[str, ...]
    available: bool
    reason: str


def _probe_reference() -> tuple[tuple[str, ...], str]:
    return ("cpu", "cuda"), ""


def _probe_cpu() -> tuple[tuple[str, ...], str]:
    try:
        from uno import _C
    except ImportError as e:  # pragma: no cover - depends on the build
        return (), f"the compiled core uno._C is not importable ({e})"
    missing = [f for f in ("inner_cpu", "project_cpu", "combine_cpu") if not hasattr(_C, f)]
    if missing:
        return (), f"uno._C lacks the CPU kernels {', '.join(missing)} (an incomplete build?)"
    return ("cpu",), ""


def _probe_cuda() -> tuple[tuple[str, ...], str]:
    try:
        from uno import _C
    except ImportError as e:  # pragma: no cover
        return (), f"the compiled core uno._C is not importable ({e})"
    if not getattr(_C, "with_cuda", False):
        return (), "uno._C was built without CUDA kernels (no nvcc at build time, or UNO_CUDA=OFF)"
    missing = [f for f in ("inner_cuda", "project_cuda", "combine_cuda") if not hasattr(_C, f)]
    if missing:
        return (), f"uno._C lacks the CUDA kernels {', '.join(missing)} (an incomplete build?)"
    if not torch.cuda.is_available():
        return (), "torch sees no CUDA device"
    return ("cuda",), ""


def _probe_triton() -> tuple[tuple[str, ...], str]:
    try:
        importlib.import_module("triton")
    except ImportError as e:
        return (), f"triton is not installed ({e}); pip install 'uno-kernels[triton]'"
    if os.environ.get("TRITON_INTERPRET") == "1":
        # The interpreter runs Triton kernels on CPU tensors (tests on machines without a GPU).
        return ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",), ""
    if not torch.cuda.is_available():
        return (), "triton needs a CUDA device (or TRITON_INTERPRET=1 for the CPU interpreter)"
    return ("cuda",), ""


_PROBES: Dict[str, Callable[[], tuple[tuple[str, ...], str]]] = {
    "reference": _probe_reference,
    "cpu": _probe_cpu,
    "cuda": _probe_cuda,
    "triton": _probe_triton,
}
_INFO_CACHE: Dict[str, BackendInfo] = {}


def info(name: str) -> BackendInfo:
    """Availability of backend ``name`` (cached; the Triton probe reads TRITON_INTERPRET once)."""
    if name not in _INFO_CACHE:
        devices, reason = _PROBES[name]()
        _INFO_CACHE[name] = BackendInfo(name, devices, bool(devices), reason)
    return _INFO_CACHE[name]


def cpu_isa_note() -> str:
    """The CPU kernels' ISA level as :func:`backends` reports it (``_C.cpu_isa*``, chosen at import).

    ``"ISA x86-64-v3 (the best of x86-64-v2, x86-64-v3, x86-64-v4 this CPU supports)"``,
    ``"ISA x86-64-v2 (forced by UNO_CPU_ISA)"``, or ``"error: <why>"`` when ``UNO_CPU_ISA`` names a
    level that cannot run (every CPU op then raises that ValueError).
    """
    from uno import _C

    err = getattr(_C, "cpu_isa_error", None)
    if err is None:  # pragma: no cover - a core built before the ISA dispatch
        return "ISA unknown (an older compiled core)"
    if err:
        return f"error: {err}"
    if _C.cpu_isa_forced:
        return f"ISA {_C.cpu_isa} (forced by UNO_CPU_ISA)"
    return f"ISA {_C.cpu_isa} (the best of {', '.join(_C.cpu_isa_built)} this CPU supports)"


def backends() -> Dict[str, str]:
    """Report every backend: ``"available (cpu, cuda)"`` or ``"unavailable: <why>"``.

    The ``cpu`` entry adds the ISA level its kernels run at (:func:`cpu_isa_note`).
    """
    out = {}
    for n in NAMES:
        i = info(n)
        out[n] = (
            f"available ({', '.join(i.devices)})" if i.available else f"unavailable: {i.reason}"
        )
        if n == "cpu" and i.available:
            out[n] += f"; {cpu_isa_note()}"
    return out


def _default_for(device_type: str) -> str:
    if device_type == "cuda":
        for n in ("cuda", "triton"):
            if "cuda" in info(n).devices:
                return n
        return "reference"
    if device_type == "cpu" and "cpu" in info("cpu").devices:
        return "cpu"
    return "reference"


def resolve(backend: Optional[str], device: torch.device) -> str:
    """Pick the backend for tensors on ``device`` (see the module docstring for the order)."""
    source = "backend="
    if backend is None:
        env = os.environ.get("UNO_BACKEND")
        if env:
            backend, source = env, "UNO_BACKEND="
    if backend is None:
        return _default_for(device.type)
    if not isinstance(backend, str) or backend not in NAMES:
        raise ValueError(
            f"unknown backend {source}{backend!r}; expected one of {', '.join(NAMES)} "
            f"(available here: {', '.join(n for n in NAMES if info(n).available)})"
        )
    i = info(backend)
    if device.type not in i.devices:
        why = (
            i.reason
            or f"it does not run on {device.type} tensors (it runs on: {', '.join(i.devices)})"
        )
        avail = [n for n in NAMES if device.type in info(n).devices]
        raise RuntimeError(
            f"backend {source}{backend!r} cannot run on {device.type} tensors here: {why}. "
            f"Available for {device.type}: {', '.join(avail)}"
        )
    return backend


_MODULES: Dict[str, ModuleType] = {}


def module(name: str) -> ModuleType:
    """The module of backend ``name`` (exposes the five primitives; no availability check)."""
    m = _MODULES.get(name)
    if m is None:
        if name not in NAMES:
            raise ValueError(f"unknown backend {name!r}; expected one of {', '.join(NAMES)}")
        m = _MODULES[name] = importlib.import_module(f"uno._backends.{name}")
    return m


def get(backend: Optional[str], device: torch.device) -> ModuleType:
    """The module of the backend that runs on ``device``: :func:`resolve`, then :func:`module`."""
    return module(resolve(backend, device))
