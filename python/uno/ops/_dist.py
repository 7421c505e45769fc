"""DTensor vectors (FSDP2 shards, replicated pieces): local shards, one ``all_reduce`` per pass.

A vector whose pieces are ``torch.distributed.tensor.DTensor`` s (FSDP2's ``Shard(0)`` parameters and
gradients, uneven shards included, or ``Replicate()`` pieces) is handled by running the ops' algorithms
(:mod:`uno.ops._rows`, the optimizers' passes) on every rank's local tensors with a backend whose
reductions are summed over the mesh (:class:`Reduced`): each ``inner`` / ``project`` result (the k
coefficients, ``‖x‖²`` and, for raw vectors, the packed Gram triangle: float64 partial sums of the
local elements) is all-reduced once, so every rank sees the same numbers and takes the same branch
(rank rule, early exits, second pass), and every rank writes only its own shard. No gradient or basis
element ever crosses the network.

What counts where: the elements of a ``Shard(d)`` piece (any d; also FSDP2's strided shards) are
split between ranks, so each rank adds its own; the elements of a ``Replicate()`` piece are on every
rank, so only the rank at coordinate 0 of the mesh dimensions it is replicated over adds them (the
others still write their copy, identically). ``Partial`` pieces (a pending reduction) are refused.

Nothing here is imported on the plain-tensor path: :func:`is_dtensor` costs one ``type`` lookup for a
plain tensor.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any, List, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch.nn import Parameter

_PLAIN = (Tensor, Parameter)
_DTENSOR: List[Any] = []  # the DTensor class once imported ([None] where torch has no distributed)


def _dtensor_cls() -> Any:
    if not _DTENSOR:
        cls: Any = None
        try:
            from torch.distributed.tensor import DTensor as cls
        except ImportError:  # a torch build without distributed support
            pass
        _DTENSOR.append(cls)
    return _DTENSOR[0]


def is_dtensor(t: object) -> bool:
    """True for a DTensor (one type lookup for a plain tensor)."""
    if type(t) in _PLAIN:
        return False
    cls = _dtensor_cls()
    return cls is not None and isinstance(t, cls)


def local(t: Tensor) -> Tensor:
    """The local tensor of a DTensor (the very tensor it stores: writes reach the DTensor), else t."""
    return t._local_tensor if is_dtensor(t) else t  # type: ignore[attr-defined]


def check_kind(pieces: Sequence[Tensor], name: str) -> bool:
    """True when every piece is a DTensor, False when none is; TypeError when they mix."""
    first = is_dtensor(pieces[0])
    for i, p in enumerate(pieces):
        if (type(p) not in _PLAIN and is_dtensor(p)) != first:
            kinds = ("DTensor", "a plain Tensor") if first else ("a plain Tensor", "DTensor")
            raise TypeError(
                f"{name} mixes DTensor and plain tensor pieces: {name}[0] is {kinds[0]}, "
                f"{name}[{i}] is {kinds[1]}; give every piece as a DTensor (FSDP2 parameters and "
                "gradients) or none"
            )
    return first


# -- the layout of a distributed vector ---------------------------------------------------------------
@dataclass(frozen=True)
class Layout:
    """How a vector's pieces are distributed: one mesh, a placement tuple and a global shape per piece.

    Attributes:
        mesh: the DeviceMesh of every piece.
        placements: per piece, its placements (one per mesh dimension).
        shapes: per piece, its global shape.
        strides: per piece, its global stride (to rebuild DTensors with ``DTensor.from_local``).
        counted: per piece, whether this rank's elements count in the reductions (False for the
            copies of a replicated piece on ranks other than coordinate 0 of its replicated dims).
    """

    mesh: Any
    placements: Tuple[Tuple[Any, ...], ...]
    shapes: Tuple[torch.Size, ...]
    strides: Tuple[Tuple[int, ...], ...]
    counted: Tuple[bool, ...]

    @property
    def group(self) -> Any:
        """The process group the partial sums are all-reduced over (every rank of the mesh; looked
        up on use, never stored: see :func:`group_of`)."""
        return group_of(self.mesh)

    def describe(self, t: int) -> str:
        return f"{tuple(self.shapes[t])} placed {self.placements[t]}"


def group_of(mesh: Any) -> Any:
    """The process group a mesh's partial sums are all-reduced over (not cached: holding a process
    group past ``destroy_process_group`` makes its late destruction abort the interpreter)."""
    if mesh.ndim == 1:
        return mesh.get_group()
    import torch.distributed as dist

    if mesh.size() != dist.get_world_size():
        raise ValueError(
            f"a {mesh.ndim}-D DeviceMesh of {mesh.size()} ranks inside a world of "
            f"{dist.get_world_size()} ranks is not supported (uno reduces over one process "
            "group: use a 1-D mesh, or a mesh over every rank)"
        )
    return None  # the default group: every rank of the mesh


def _counted(mesh: Any, placements: Tuple[Any, ...], name: str) -> bool:
    from torch.distributed.tensor import Replicate, Shard

    coord = None
    for d, pl in enumerate(placements):
        if isinstance(pl, Shard):
            continue
        if isinstance(pl, Replicate):
            coord = mesh.get_coordinate() if coord is None else coord
            if coord is None:
                raise ValueError(f"{name}: this rank is not part of the DTensor's mesh")
            if coord[d] != 0:
                return False
            continue
        raise ValueError(
            f"{name} has placement {pl} on mesh dim {d}; uno takes Shard and Replicate pieces "
            "only (a Partial DTensor is a pending reduction: redistribute it first)"
        )
    return True


def layout_of(pieces: Sequence[Tensor], name: str) -> Layout:
    """The :class:`Layout` of DTensor pieces; ValueError when they live on different meshes."""
    mesh = pieces[0].device_mesh  # type: ignore[attr-defined]
    placements, shapes, strides, counted = [], [], [], []
    for i, p in enumerate(pieces):
        m = p.device_mesh  # type: ignore[attr-defined]
        if m is not mesh and m != mesh:
            raise ValueError(
                f"{name} has pieces on different device meshes: {name}[0] on {mesh}, {name}[{i}] "
                f"on {m}; every piece must live on one mesh"
            )
        pl = tuple(p.placements)  # type: ignore[attr-defined]
        placements.append(pl)
        shapes.append(p.shape)
        strides.append(tuple(p.stride()))
        counted.append(_counted(mesh, pl, f"{name}[{i}]"))
    group_of(mesh)  # an unsupported mesh is refused here
    return Layout(mesh, tuple(placements), tuple(shapes), tuple(strides), tuple(counted))


def localize(pieces: Sequence[Tensor], name: str) -> Tuple[List[Tensor], Layout]:
    """The local tensors of DTensor pieces and their layout."""
    return [local(p) for p in pieces], layout_of(pieces, name)


def check_same(a: Layout, b: Layout, a_name: str, b_name: str) -> None:
    """ValueError unless ``b`` distributes its pieces as ``a`` does (mesh, placements, shapes)."""
    if a.mesh is not b.mesh and a.mesh != b.mesh:
        raise ValueError(
            f"{a_name} and {b_name} live on different device meshes ({a.mesh} and {b.mesh})"
        )
    if len(a.shapes) != len(b.shapes):
        raise ValueError(
            f"{b_name} has {len(b.shapes)} pieces, {a_name} has {len(a.shapes)} (one per piece)"
        )
    for t in range(len(a.shapes)):
        if a.shapes[t] != b.shapes[t] or a.placements[t] != b.placements[t]:
            raise ValueError(
                f"{b_name} piece {t} is {b.describe(t)} but {a_name} piece {t} is "
                f"{a.describe(t)}; the pieces must be distributed alike (same global shapes and "
                "placements)"
            )


def localize_like(
    vectors: Sequence[Sequence[Tensor]], lay: Layout, name: str
) -> List[List[Tensor]]:
    """Local pieces of k DTensor vectors, each checked to be distributed as ``lay``."""
    out = []
    for j, v in enumerate(vectors):
        if not check_kind(v, f"{name}[{j}]"):
            raise TypeError(
                f"{name}[{j}] is made of plain tensors but the vectors it goes with are DTensors; "
                "give DTensors distributed like them"
            )
        loc, vl = localize(v, f"{name}[{j}]")
        check_same(lay, vl, "grad" if name != "vectors" else "vectors[0]", f"{name}[{j}]")
        out.append(loc)
    return out


def as_dtensor(t: Tensor, lay: Layout, i: int) -> Tensor:
    """A DTensor over local tensor ``t`` (shares its memory) placed like piece ``i`` of ``lay``."""
    return _dtensor_cls().from_local(  # type: ignore[no-any-return]
        t, lay.mesh, lay.placements[i], run_check=False, shape=lay.shapes[i], stride=lay.strides[i]
    )


# -- the reductions -----------------------------------------------------------------------------------
#: Bytes this process has all-reduced in :func:`all_reduce` (for the drivers' traffic counts).
reduced_bytes = [0]


def all_reduce(out: Tensor, group: Any) -> Tensor:
    """Sum ``out`` (float64 partial sums) over ``group`` in place: the one collective of a pass.

    Every rank receives the same bits, so every decision taken from ``out`` is the same everywhere.
    """
    import torch.distributed as dist

    dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
    reduced_bytes[0] += out.numel() * out.element_size()
    return out


class Reduced:
    """A backend module whose reductions are global: ``inner`` and ``project`` all-reduce their
    float64 results once; ``combine`` (no reduction) runs as it is.

    ``uncounted`` pieces (replicated copies another rank counts) are left out of this rank's partial
    sums; ``project`` still writes them (every rank subtracts the same reduced coefficients).
    """

    #: The sums run over every rank's elements: :func:`uno.ops._rows.orthonormalize_rows` cannot
    #: bound their rounding by the local element count, so it measures Q₁'s Gram instead.
    GLOBAL_SUMS = True

    def __init__(self, be: ModuleType, lay: Layout) -> None:
        self._be = be
        self._group = lay.group
        self.NAME = be.NAME
        self.combine = be.combine
        self._keep = [t for t, c in enumerate(lay.counted) if c]
        self._skip = [t for t, c in enumerate(lay.counted) if not c]

    def inner(
        self, x: Optional[Sequence[Tensor]], rows: Sequence[Tensor], with_gram: bool
    ) -> Tensor:
        """The ``inner`` primitive over the mesh: 8·(k + 1) bytes all-reduced, 8·(k + 1 +
        k(k+1)/2) with the Gram, 8·k(k+1)/2 for the Gram alone (``x is None``)."""
        if not self._skip:
            out = self._be.inner(x, rows, with_gram)
        elif self._keep:
            keep = self._keep
            xs = None if x is None else [x[t] for t in keep]
            out = self._be.inner(xs, [rows[t] for t in keep], with_gram)
        else:  # every piece is another rank's to count
            k = int(rows[0].shape[0])
            width = k + 1 + (k * (k + 1) // 2 if with_gram else 0)
            out = torch.zeros(width, dtype=torch.float64, device=rows[0].device)
        if x is None:  # the first k + 1 entries are zeros on every rank: only the Gram travels
            all_reduce(out[int(rows[0].shape[0]) + 1 :], self._group)
            return out
        return all_reduce(out, self._group)

    def project(self, x: Sequence[Tensor], rows: Sequence[Tensor], y: Tensor) -> Tensor:
        """The ``project`` primitive, its measurement of the new x summed: 8·(k + 1) bytes."""
        if not self._skip:
            out = self._be.project(x, rows, y)
        else:
            skip = self._skip
            self._be.project(
                [x[t] for t in skip], [rows[t] for t in skip], y
            )  # written, not counted
            if self._keep:
                keep = self._keep
                out = self._be.project([x[t] for t in keep], [rows[t] for t in keep], y)
            else:
                out = torch.zeros(int(rows[0].shape[0]) + 1, dtype=torch.float64, device=y.device)
        return all_reduce(out, self._group)


def reduced(be: ModuleType, lay: Optional[Layout]) -> Any:
    """``be`` itself for plain tensors, :class:`Reduced` over it for a distributed layout."""
    return be if lay is None else Reduced(be, lay)


def counts_here(p: Tensor) -> bool:
    """Whether this rank's elements of DTensor ``p`` count in reductions (see the module docstring)."""
    return _counted(p.device_mesh, tuple(p.placements), "parameter")  # type: ignore[attr-defined]
