"""Validation of the projected optimizers' arguments, bases and loaded states.

Everything here raises TypeError/ValueError naming the argument and what was seen, before anything is
written.
"""

from __future__ import annotations

import math
from typing import Any, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from uno import _abi
from uno.ops import _dist
from uno.ops._checks import check_disjoint, check_not_in_graph, check_writable

_PLAIN = _dist._PLAIN

PROJECT_MODES = ("grad", "update")


def check_project(project: str) -> str:
    if project not in PROJECT_MODES:
        raise ValueError(f"project must be 'grad' or 'update', got {project!r}")
    return project


state_dtype = _abi.wide_dtype


def _local_pair(p: Tensor, g: Tensor, i: int) -> Tuple[Tensor, Tensor]:
    """The local shards of a DTensor parameter and its gradient, distributed alike (else an error)."""
    if not (_dist.is_dtensor(p) and _dist.is_dtensor(g)):
        raise TypeError(
            f"parameter {i} is {'a DTensor' if _dist.is_dtensor(p) else 'a plain tensor'} but its "
            f"grad is {'a DTensor' if _dist.is_dtensor(g) else 'a plain tensor'}; expected both alike"
        )
    pd: Any = p  # DTensors: their mesh and placements
    gd: Any = g
    pm, gm, pp, gp = pd.device_mesh, gd.device_mesh, tuple(pd.placements), tuple(gd.placements)
    if (pm is not gm and pm != gm) or pp != gp:
        raise ValueError(
            f"grad {i} is placed {gp} on {gm} but parameter {i} is placed {pp} on {pm}; expected "
            "them distributed alike"
        )
    return _dist.local(p), _dist.local(g)


#: What to do about a written tensor that is part of an autograd graph (a non-leaf requiring grad).
NO_GRAD_HINT = "step leaf parameters (or detached tensors), or call it under torch.no_grad()"


def check_param(p: Tensor, g: Tensor, i: int, write_grad: bool = False) -> None:
    if type(p) not in _PLAIN or type(g) not in _PLAIN:  # FSDP2: the local shards are stepped
        p, g = _local_pair(p, g, i)
    _abi.dtype_code(p.dtype, f"parameter {i}")
    if g.is_sparse or p.is_sparse:
        raise TypeError(f"parameter {i}: sparse gradients/parameters are not supported")
    if g.shape != p.shape:
        raise ValueError(f"grad {i} has shape {tuple(g.shape)}, its parameter has {tuple(p.shape)}")
    if g.dtype != p.dtype:
        raise TypeError(f"grad {i} has dtype {g.dtype}, its parameter has {p.dtype}")
    if g.device != p.device:
        raise ValueError(
            f"expected grad {i} and its parameter on the same device, got {g.device} and {p.device}"
        )
    if not p.is_contiguous():
        raise ValueError(
            f"parameter {i} (shape {tuple(p.shape)}) is not contiguous; the fused step updates "
            "parameters in place through flat views"
        )
    if write_grad:  # an expanded grad is only read otherwise (through a contiguous copy)
        check_writable(g, f"grad {i} (write_grad=True)")


def basis_rows(basis: Any, params: Sequence[Tensor], what: str = "basis") -> List[Tensor]:
    """Per-parameter ``(k, n_t)`` row blocks of an orthonormal basis over ``params`` (k may be 0)."""
    from uno.ops.basis import Basis

    if not isinstance(basis, Basis):
        raise TypeError(f"{what} must be a uno.Basis here, got {type(basis).__name__}")
    if basis.dist is not None or any(type(p) not in _PLAIN for p in params):
        _check_dist_basis(basis, params, what)
        params = [_dist.local(p) for p in params]
    shapes = [tuple(p.shape) for p in params]
    if [tuple(s) for s in basis.shapes] != shapes:
        raise ValueError(
            f"{what} was built over pieces of shapes {[tuple(s) for s in basis.shapes]}, but the "
            f"parameters have shapes {shapes} (a basis over other parameters?)"
        )
    for i, p in enumerate(params):
        if basis.device != p.device:
            raise ValueError(
                f"expected the parameters and the {what} on the same device, got {p.device} "
                f"(parameter {i}) and {basis.device}"
            )
        if (p.dtype, basis.dtype) not in _abi.PAIRS:
            raise TypeError(
                f"{what} has dtype {basis.dtype} but parameter {i} has dtype {p.dtype}; expected "
                "the same dtype (or a float32 basis for float16/bfloat16 parameters)"
            )
    if basis.k == 0:
        return []
    return basis.rows()


def _check_dist_basis(basis: Any, params: Sequence[Tensor], what: str) -> None:
    """DTensor parameters need a basis over DTensors distributed as they are (and vice versa)."""
    dist_params = _dist.check_kind(params, "the parameters")
    if basis.dist is None or not dist_params:
        raise TypeError(
            f"the parameters are {'DTensors' if dist_params else 'plain tensors'} but the {what} "
            f"was built over {'DTensors' if basis.dist is not None else 'plain tensors'}; build it "
            "from vectors shaped and placed like the parameters (e.g. uno.orthonormalize of "
            "DTensor vectors)"
        )
    _dist.check_same(_dist.layout_of(params, "the parameters"), basis.dist, "the parameters", what)


def as_basis(basis: Any, params: Sequence[Tensor], backend: Optional[str]) -> Any:
    """A uno.Basis for ``basis`` (a Basis, or raw vectors orthonormalised here), validated."""
    from uno.ops.basis import Basis
    from uno.ops.orthonormalize import orthonormalize

    if basis is None:
        return None
    if not isinstance(basis, Basis):
        if isinstance(basis, Tensor):
            vectors: Any = (
                [[basis]] if len(params) == 1 and basis.shape == params[0].shape else basis
            )
        elif (
            isinstance(basis, (list, tuple)) and basis and all(isinstance(b, Tensor) for b in basis)
        ):
            vectors = [list(basis)] if len(params) > 1 else [[b] for b in basis]
        else:
            vectors = basis
        dt = torch.float32 if params[0].dtype in _abi.HALF_DTYPES else None
        basis = orthonormalize(vectors, dtype=dt, backend=backend)
    basis_rows(basis, params)
    return basis


def check_scalars(grad_scale: Optional[Tensor], found_inf: Optional[Tensor]) -> None:
    for name, t in (("grad_scale", grad_scale), ("found_inf", found_inf)):
        if t is not None and (not isinstance(t, Tensor) or t.numel() != 1):
            raise ValueError(f"{name} must be a one-element tensor, got {t!r}"[:200])


def as_lists(params: Any, grads: Any) -> Tuple[List[Tensor], List[Tensor]]:
    """The functional forms' parameter and gradient lists (a bare Tensor is refused: iterating it
    would step its rows as separate parameters)."""
    for name, v in (("params", params), ("grads", grads)):
        if isinstance(v, Tensor):
            raise TypeError(
                f"{name} must be a sequence of tensors (one per parameter), got a Tensor of shape "
                f"{tuple(v.shape)}; wrap it in a list"
            )
    return list(params), list(grads)


def check_fn_aliasing(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    states: Sequence[Tuple[str, Sequence[Optional[Tensor]]]],
    rows: Sequence[Tensor],
    write_grad: bool,
) -> None:
    """The functional forms write params and states (and grads with write_grad) in place: none of
    them may overlap another tensor of the call; the gradients (read only) may overlap each other."""
    written = [(f"params[{i}]", p) for i, p in enumerate(params)]
    for name, st in states:
        written += [(f"{name}[{i}]", s) for i, s in enumerate(st) if s is not None]
    gs = [(f"grads[{i}]", g) for i, g in enumerate(grads)]
    read = [(f"basis rows of parameter {i}", r) for i, r in enumerate(rows)]
    why = "the step writes parameters and states in place" + (
        " (and grads: write_grad=True)" if write_grad else ""
    )
    check_disjoint(written + gs if write_grad else written, read if write_grad else read + gs, why)


def validate_lists(params: List[Tensor], grads: List[Tensor], write_grad: bool = False) -> None:
    if not params:
        raise ValueError("params is empty; expected at least one tensor")
    if len(grads) != len(params):
        raise ValueError(f"grads has {len(grads)} tensors for {len(params)} parameters")
    for i, (p, g) in enumerate(zip(params, grads)):
        if not isinstance(p, Tensor) or not isinstance(g, Tensor):
            raise TypeError(f"params[{i}] and grads[{i}] must be tensors")
        check_param(p, g, i, write_grad)
    # the functional forms only: an optimizer's step() runs under no_grad, where this is moot
    step = "the projected optimizer step"
    check_not_in_graph(enumerate(params), "parameter {}", step, NO_GRAD_HINT, leaves=False)
    if write_grad:
        check_not_in_graph(
            enumerate(grads), "grad {} (write_grad=True)", step, NO_GRAD_HINT, leaves=False
        )


def validate_states(
    st: Sequence[Optional[Tensor]], params: Sequence[Tensor], name: str, allow_none: bool = False
) -> None:
    if len(st) != len(params):
        raise ValueError(f"{name} has {len(st)} tensors for {len(params)} parameters")
    for i, (s, p) in enumerate(zip(st, params)):
        if s is None and allow_none:
            continue
        if not isinstance(s, Tensor):
            raise TypeError(f"{name}[{i}] must be a tensor, got {type(s).__name__}")
        if type(s) not in _PLAIN or type(p) not in _PLAIN:  # DTensors: compare the local shards
            if _dist.is_dtensor(s) != _dist.is_dtensor(p):
                raise TypeError(f"{name}[{i}] and its parameter must both be DTensors or neither")
            s, p = _dist.local(s), _dist.local(p)
        if s.shape != p.shape or s.device != p.device or not s.is_contiguous():
            raise ValueError(
                f"{name}[{i}] must be a contiguous tensor of shape {tuple(p.shape)} on {p.device}, "
                f"got shape {tuple(s.shape)} on {s.device}"
            )
        if s.dtype not in (p.dtype, state_dtype(p.dtype)):
            raise TypeError(f"{name}[{i}] has dtype {s.dtype}, its parameter {p.dtype}")
    check_not_in_graph(
        enumerate(st), name + "[{}]", "the projected optimizer step", NO_GRAD_HINT, leaves=False
    )


def real_number(name: str, value: Any, what: str, low: Optional[float] = 0.0) -> float:
    """``value`` as a float: a real number (or one-element tensor), finite and ``>= low``."""
    if isinstance(value, Tensor) and value.numel() == 1 and value.dtype.is_floating_point:
        v = float(value)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        v = float(value)
    else:
        raise TypeError(f"Invalid {what}: {name} must be a real number, got {value!r}"[:200])
    if not math.isfinite(v) or (low is not None and v < low):
        bound = "a finite number" + ("" if low is None else f" >= {low:g}")
        raise ValueError(f"Invalid {what}: {name}={v!r}; expected {bound}")
    return v


def check_basis_apart(b: Any, written: List[Tuple[str, Tensor]]) -> None:
    """Raise ValueError when a tensor the step writes in place overlaps the basis buffer."""
    if b.k > 0:
        check_disjoint(written, [("the basis", b.buffer[: b.k])], "the step writes it in place")


def fix_state(s: Tensor, p: Tensor, what: str = "state") -> Tensor:
    """A loaded state in the kernels' layout: contiguous, on p's device, float32 for half params."""
    if not isinstance(s, Tensor) or s.shape != p.shape:
        raise ValueError(
            f"{what} has shape {tuple(getattr(s, 'shape', ()))} ({type(s).__name__}), its parameter "
            f"{tuple(p.shape)} (a state_dict of another model?)"
        )
    if type(s) not in _PLAIN or type(p) not in _PLAIN:
        if _dist.is_dtensor(s) != _dist.is_dtensor(p):
            raise TypeError(
                f"{what} is {'a DTensor' if _dist.is_dtensor(s) else 'a plain tensor'} but its "
                f"parameter is {'a DTensor' if _dist.is_dtensor(p) else 'a plain tensor'} (for "
                "FSDP2 load the optimizer state with torch.distributed.checkpoint)"
            )
        return s  # made alike by the optimizer (zeros_like of the DTensor parameter)
    want = state_dtype(p.dtype)
    if s.dtype not in (p.dtype, want) or s.device != p.device or not s.is_contiguous():
        s = s.to(device=p.device, dtype=want if s.dtype not in (p.dtype, want) else s.dtype)
        s = s.contiguous()
    if p.dtype in _abi.HALF_DTYPES and s.dtype != torch.float32:
        s = s.float()  # torch keeps half states; ours are float32
    return s


def version_of(t: Tensor) -> Optional[int]:
    """``t``'s version counter (bumped by every in-place write), None where it is not tracked."""
    try:
        return int(t._version)
    except RuntimeError:  # an inference tensor
        return None
