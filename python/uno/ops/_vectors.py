"""Turning the user's vectors into the ops' canonical form, with structural validation.

A *vector* is a Tensor or a sequence of Tensors (for example ``[p.grad for p in model.parameters()]``).
The kernels see a vector as ``T`` 1-D pieces and a set of k vectors as ``T`` row blocks of shape
``(k, n_t)`` (see docs/kernels.md). Everything here looks at shapes, dtypes and devices only (no data), so
it traces under ``torch.compile``; checks that need the data run inside the custom ops.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Union, cast

import torch
from torch import Tensor

from uno._abi import FLOAT_DTYPES, FLOAT_NAMES, PAIRS
from uno._backends._rowtable import RowTable
from uno.ops import _dist

VectorLike = Union[Tensor, Sequence[Tensor]]
_PLAIN = _dist._PLAIN


def as_pieces(v: object, name: str) -> List[Tensor]:
    """Return the pieces of vector ``v`` as a list (one element for a Tensor), validated.

    Raises:
        TypeError: ``v`` is not a Tensor or a sequence of Tensors, or has a non-floating dtype.
        ValueError: ``v`` is an empty sequence, or its pieces differ in dtype or device.
    """
    if isinstance(v, Tensor):
        pieces = [v]
    elif isinstance(v, (list, tuple)):
        if len(v) == 0:
            raise ValueError(f"{name} is an empty sequence; expected at least one tensor")
        for i, p in enumerate(v):
            if not isinstance(p, Tensor):
                raise TypeError(
                    f"{name}[{i}] must be a torch.Tensor, got {type(p).__name__}"
                    + (" (a parameter without .grad?)" if p is None else "")
                )
        pieces = list(v)
    else:
        raise TypeError(f"{name} must be a Tensor or a sequence of Tensors, got {type(v).__name__}")
    dtype, device = pieces[0].dtype, pieces[0].device
    subclass = False
    for i, p in enumerate(pieces):
        subclass = subclass or type(p) not in _PLAIN
        if p.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{name}[{i}] has dtype {p.dtype}; expected {FLOAT_NAMES}")
        if p.dtype != dtype:
            raise ValueError(f"{name} mixes dtypes: {name}[0] is {dtype}, {name}[{i}] is {p.dtype}")
        if p.device != device:
            raise ValueError(
                f"{name} spans devices: {name}[0] is on {device}, {name}[{i}] is on {p.device}"
            )
    if subclass:  # DTensor pieces (uno.ops._dist) may not mix with plain ones
        _dist.check_kind(pieces, name)
    return pieces


def check_row_dtype(x_dtype: torch.dtype, row_dtype: torch.dtype, what: str) -> None:
    """Rows must have x's dtype, or be float32 when x is float16/bfloat16."""
    if (x_dtype, row_dtype) in PAIRS:
        return
    raise TypeError(
        f"{what} has dtype {row_dtype} but grad has dtype {x_dtype}; expected the same dtype "
        "(or float32 vectors for float16/bfloat16 grads)"
    )


def check_same_device(a: torch.device, b: torch.device, what: str) -> None:
    if a != b:
        raise ValueError(f"expected grad and {what} on the same device, got {a} and {b}")


def check_basis_for(
    basis: Any, grad: Sequence[Tensor], what: str = "basis", lay: Optional[_dist.Layout] = None
) -> None:
    """A :class:`uno.Basis` fits a vector with pieces ``grad``: same shapes, device, allowed dtype.

    ``grad`` are local tensors and ``lay`` their distribution when the vector is made of DTensors;
    the basis must then have been built over DTensors distributed alike (``basis.dist``).
    """
    if basis.dist is not None or lay is not None:
        if basis.dist is None or lay is None:
            raise TypeError(
                f"{what} was built over "
                + (
                    "plain tensors but grad is made of DTensors"
                    if lay
                    else "DTensors but grad is not"
                )
                + "; build the basis from vectors of the same kind (uno.orthonormalize, Basis.empty)"
            )
        _dist.check_same(lay, basis.dist, "grad", what)
    shapes = [g.shape for g in grad]
    if list(basis.shapes) != shapes:
        raise ValueError(
            f"{what} was built for pieces of shapes {[tuple(s) for s in basis.shapes]}, "
            f"but grad has {[tuple(s) for s in shapes]}"
        )
    check_same_device(grad[0].device, basis.device, what)
    check_row_dtype(grad[0].dtype, basis.dtype, what)


def vector_list(basis: object, n_pieces: int, what: str) -> List[List[Any]]:
    """Raw vectors given as a sequence (a list of tensors, or a sequence of such lists) as a list of
    vectors, each a list of its pieces, for a grad of ``n_pieces`` pieces."""
    if not isinstance(basis, (list, tuple)) or len(basis) == 0:
        if isinstance(basis, (list, tuple)):
            raise ValueError(f"{what} is an empty sequence; expected at least one vector")
        raise TypeError(
            f"{what} must be a Tensor, a sequence of Tensors, a sequence of vectors or a uno.Basis, "
            f"got {type(basis).__name__}"
        )
    for j, b in enumerate(basis):
        if not isinstance(b, (Tensor, list, tuple)):
            raise TypeError(
                f"{what}[{j}] must be a Tensor or a sequence of Tensors, got {type(b).__name__}"
                + (" (a parameter without .grad?)" if b is None else "")
            )
    if all(isinstance(b, Tensor) for b in basis):
        # With a one-piece grad every tensor is a whole vector (k = len(basis)); with a multi-piece
        # grad a list of tensors is one vector given piece by piece.
        return [[b] for b in basis] if n_pieces == 1 else [list(basis)]
    if all(isinstance(b, (list, tuple)) for b in basis):
        return [list(b) for b in basis]
    raise TypeError(
        f"{what} mixes tensors and sequences; give one vector (tensors shaped like grad's pieces) "
        "or a sequence of such vectors"
    )


def rows_for(
    basis: object,
    grad: Sequence[Tensor],
    what: str = "basis",
    *,
    table: bool = False,
    checked: bool = False,
) -> tuple[List[Tensor], bool]:
    """Canonical row blocks of raw vectors ``basis`` for a vector with pieces ``grad`` (a
    :class:`uno.Basis` is the caller's to handle: its rows are ``basis.rows()``).

    Returns:
        ``(rows, False)``: ``rows[t]`` of shape ``(k, grad[t].numel())``; False says the rows are raw
        (not known to be orthonormal). With ``table``, k >= 2 vectors given piece by piece come as a
        :class:`~uno._backends._rowtable.RowTable` (no copy; :mod:`uno.ops._rows` reads it).
        ``checked``: ``basis`` is a list of vectors that :func:`as_pieces` already returned.
    """
    shapes = [g.shape for g in grad]
    if isinstance(basis, Tensor):
        if len(grad) != 1:
            raise ValueError(
                f"{what} is a single Tensor but grad has {len(grad)} pieces; give the basis as a "
                "list of tensors shaped like grad (or a sequence of such lists, or a uno.Basis)"
            )
        g = grad[0]
        check_same_device(g.device, basis.device, what)
        as_pieces(basis, what)  # dtype check
        check_row_dtype(g.dtype, basis.dtype, what)
        if basis.shape == g.shape:
            return [basis.reshape(1, -1)], False
        if basis.dim() == g.dim() + 1 and basis.shape[1:] == g.shape:
            return [basis.reshape(basis.shape[0], -1)], False
        raise ValueError(
            f"{what} has shape {tuple(basis.shape)}; expected grad's shape {tuple(g.shape)} "
            f"(one vector) or (k, *{tuple(g.shape)}) (k vectors)"
        )

    vectors = cast(List[List[Any]], basis) if checked else vector_list(basis, len(grad), what)
    pieces0 = vectors[0] if checked else as_pieces(vectors[0], f"{what}[0]")
    for j, v in enumerate(vectors):
        pv = v if checked else as_pieces(v, f"{what}[{j}]")
        if pv[0].dtype != pieces0[0].dtype:
            raise ValueError(f"{what} mixes dtypes: {pieces0[0].dtype} and {pv[0].dtype}")
        check_same_device(grad[0].device, pv[0].device, what)
    check_row_dtype(grad[0].dtype, pieces0[0].dtype, what)
    if len(vectors) == 1:
        v = vectors[0]
        if len(v) != len(grad):
            raise ValueError(
                f"{what} has {len(v)} tensors, expected {len(grad)} (one per grad piece)"
            )
        for t, (b, s) in enumerate(zip(v, shapes)):
            if b.shape != s:
                raise ValueError(f"{what}[{t}] has shape {tuple(b.shape)}, expected {tuple(s)}")
        return [b.reshape(1, -1) for b in v], False
    if table and not torch.compiler.is_compiling():  # traced: plain blocks (a table reads pointers)
        return RowTable.of(vectors, shapes, what), False  # the pieces stay apart in memory
    return stack_rows(vectors, shapes, what), False


def stack_rows(vectors: Sequence[Sequence[Tensor]], shapes: Sequence[torch.Size], what: str):
    """Piece t of every vector stacked into a (k, n_t) block (a copy), for the backends and code paths
    without row tables (torch.compile, the custom ops' schema)."""
    rows = []
    for t, shape in enumerate(shapes):
        block = []
        for j, v in enumerate(vectors):
            if len(v) != len(shapes):
                raise ValueError(
                    f"{what}[{j}] has {len(v)} tensors, expected {len(shapes)} (one per grad piece)"
                )
            if v[t].shape != shape:
                raise ValueError(
                    f"{what}[{j}][{t}] has shape {tuple(v[t].shape)}, expected {tuple(shape)}"
                )
            block.append(v[t].reshape(-1))
        rows.append(torch.stack(block))
    return rows


def local_vectors(vectors: object, lay: _dist.Layout, what: str) -> List[List[Tensor]]:
    """Raw vectors made of DTensors distributed as ``lay`` (a grad's layout), as lists of their local
    pieces (for :func:`rows_for` with the grad's local pieces)."""
    n = len(lay.shapes)
    if isinstance(vectors, Tensor):
        if n != 1:
            raise ValueError(
                f"{what} is a single Tensor but grad has {n} pieces; give the basis as a list of "
                "tensors shaped like grad (or a sequence of such lists, or a uno.Basis)"
            )
        vectors = [vectors]
    vecs = [as_pieces(v, f"{what}[{j}]") for j, v in enumerate(vector_list(vectors, n, what))]
    return _dist.localize_like(vecs, lay, what)
