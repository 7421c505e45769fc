"""`uno.Basis`: an orthonormal set of k vectors over a tensor list, kept in one [capacity, P] buffer."""

from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from uno import _backends
from uno._abi import wide_dtype
from uno._backends._layout import RowBlocks
from uno.ops import _dist, _small
from uno.ops._rows import orthogonalize_new_row
from uno.ops._vectors import VectorLike, as_pieces, check_row_dtype


class Basis:
    """k orthonormal vectors, each spread over pieces of fixed shapes (e.g. a model's parameters).

    The vectors live in one contiguous ``[capacity, P]`` buffer (``P`` = total number of elements);
    row ``j`` is vector ``j`` and piece ``t`` of every vector is the column slice ``[o_t, o_t + n_t)``,
    so per-piece views cost nothing and a Basis is reused across many ``uno.project_`` calls without
    recomputation. Build one with :func:`uno.orthonormalize` or :meth:`Basis.empty` + :meth:`append_`.

    Attributes:
        shapes: the shape of every piece (of its local shard for a distributed basis).
        offsets: start of every piece within a row.
        numel: P, the number of elements of one vector.
        k: the rank (number of orthonormal vectors).
        buffer: the ``[capacity, P]`` storage; only the first ``k`` rows are meaningful.
        dist: None, or for a basis over DTensor vectors (FSDP2 shards) the vectors' distribution
            (:class:`uno.ops._dist.Layout`): the buffer then holds this rank's shards (``P`` local
            elements), the reductions of every op on it are summed over the mesh, and
            :meth:`vector` returns DTensors.
    """

    def __init__(
        self,
        buffer: Tensor,
        k: int,
        shapes: Sequence[torch.Size],
        *,
        rtol: Optional[float] = None,
        backend: Optional[str] = None,
        dist: Optional[_dist.Layout] = None,
    ) -> None:
        if buffer.dim() != 2 or not buffer.is_contiguous():
            raise ValueError(
                f"buffer must be a contiguous 2-D tensor, got shape {tuple(buffer.shape)}"
            )
        self.shapes: Tuple[torch.Size, ...] = tuple(torch.Size(s) for s in shapes)
        sizes = [math.prod(s) for s in self.shapes]
        offsets, o = [], 0
        for n in sizes:
            offsets.append(o)
            o += n
        if buffer.shape[1] != o:
            raise ValueError(f"buffer has {buffer.shape[1]} columns, the shapes need {o}")
        if not 0 <= k <= buffer.shape[0]:
            raise ValueError(f"k={k} outside [0, {buffer.shape[0]}]")
        self.offsets: Tuple[int, ...] = tuple(offsets)
        self.sizes: Tuple[int, ...] = tuple(sizes)
        self.numel = o
        self.buffer = buffer
        self.k = k
        self.rtol = rtol
        self.backend = backend
        self.dist = dist

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def empty(
        cls,
        like: VectorLike,
        capacity: int = 1,
        *,
        dtype: Optional[torch.dtype] = None,
        rtol: Optional[float] = None,
        backend: Optional[str] = None,
    ) -> Basis:
        """An empty basis (k = 0) for vectors shaped like ``like``, with room for ``capacity`` rows.

        ``dtype`` defaults to ``like``'s dtype, or float32 when that is float16/bfloat16 (a half
        precision basis could not be orthonormal beyond 1e-3).
        """
        pieces = as_pieces(like, "like")
        lay = None
        if _dist.is_dtensor(pieces[0]):  # a basis over DTensors: this rank's shards
            pieces, lay = _dist.localize(pieces, "like")
        if not isinstance(capacity, int) or capacity < 0:
            raise ValueError(f"capacity must be a non-negative int, got {capacity!r}")
        dt = dtype or wide_dtype(pieces[0].dtype)
        if dt not in (torch.float32, torch.float64):
            raise TypeError(f"a Basis is stored in float32 or float64, got dtype={dt}")
        numel = sum(p.numel() for p in pieces)
        buf = torch.zeros(max(capacity, 1), numel, dtype=dt, device=pieces[0].device)
        return cls(buf, 0, [p.shape for p in pieces], rtol=rtol, backend=backend, dist=lay)

    # -- views --------------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return self.buffer.dtype

    @property
    def device(self) -> torch.device:
        return self.buffer.device

    @property
    def capacity(self) -> int:
        return self.buffer.shape[0]

    def rows(self) -> List[Tensor]:
        """Per-piece row blocks: ``rows()[t]`` is the ``(k, n_t)`` view of piece t of every vector.

        The views are made once per (buffer, k) and reused (a fresh list each time, so the caller may
        modify it).
        """
        if torch.compiler.is_compiling():  # traced: plain views (the cache reads data pointers)
            q = self.buffer[: self.k]
            return [q[:, o : o + n] for o, n in zip(self.offsets, self.sizes)]
        return list(self._row_blocks())

    def _row_blocks(self) -> RowBlocks:
        """:meth:`rows` with their validated layout (a read-only list for the kernels' adapters; never
        passed into a custom op, whose tracing only knows plain lists)."""
        buf = self.buffer
        key = (self.k, buf.data_ptr(), buf.shape, buf.stride(), buf.device, buf.dtype)
        cached = getattr(self, "_rows_cache", None)
        if cached is None or cached[0] != key:
            q = buf[: self.k]
            views = [q[:, o : o + n] for o, n in zip(self.offsets, self.sizes)]
            lo = buf.data_ptr()
            span = (lo, lo + self.k * buf.stride(0) * buf.element_size())
            cached = (key, RowBlocks.of(views, self.k, span))
            self._rows_cache = cached
        return cached[1].copy()

    def vector(self, j: int) -> List[Tensor]:
        """Vector ``j`` as views shaped like the pieces (DTensors over them for a distributed basis)."""
        if not 0 <= j < self.k:
            raise IndexError(f"vector index {j} out of range for a basis of rank {self.k}")
        row = self.buffer[j]
        out = [row[o : o + n].view(s) for o, n, s in zip(self.offsets, self.sizes, self.shapes)]
        if self.dist is not None:
            lay = self.dist
            return [_dist.as_dtensor(t, lay, i) for i, t in enumerate(out)]
        return out

    @property
    def vectors(self) -> List[List[Tensor]]:
        return [self.vector(j) for j in range(self.k)]

    def __len__(self) -> int:
        return self.k

    def __repr__(self) -> str:
        return (
            f"Basis(k={self.k}, numel={self.numel}, pieces={len(self.shapes)}, dtype={self.dtype}, "
            f"device={self.device}, capacity={self.capacity}"
            + (", distributed" if self.dist is not None else "")
            + ")"
        )

    def clone(self) -> Basis:
        return Basis(
            self.buffer.clone(), self.k, self.shapes, rtol=self.rtol, backend=self.backend,
            dist=self.dist,
        )  # fmt: skip

    # -- growth -------------------------------------------------------------------------------
    def _reserve(self, k: int) -> None:
        if k <= self.capacity:
            return
        new = torch.zeros(
            max(k, 2 * self.capacity), self.numel, dtype=self.dtype, device=self.device
        )
        new[: self.k].copy_(self.buffer[: self.k])
        self.buffer = new

    def append_(self, v: VectorLike, *, rtol: Optional[float] = None) -> bool:
        """Add the direction of ``v`` (re-orthogonalised Gram-Schmidt, in place).

        ``v`` itself is not modified. Returns False (and leaves the basis unchanged) when ``v`` is
        numerically inside the current span by the rank rule (see :mod:`uno.ops._small`).
        """
        pieces = as_pieces(v, "v")
        lay = None
        if self.dist is not None or _dist.is_dtensor(pieces[0]):
            if not _dist.is_dtensor(pieces[0]) or self.dist is None:
                raise TypeError(
                    "v and the basis must both be over DTensors or both over plain tensors, got "
                    + ("a plain v for a distributed basis" if self.dist else "a DTensor v")
                )
            pieces, lay = _dist.localize(pieces, "v")
            _dist.check_same(self.dist, lay, "the basis", "v")
        if [p.shape for p in pieces] != list(self.shapes):
            raise ValueError(
                f"v has pieces of shapes {[tuple(p.shape) for p in pieces]}, the basis expects "
                f"{[tuple(s) for s in self.shapes]}"
            )
        if pieces[0].device != self.device:
            raise ValueError(
                f"expected v and the basis on the same device, got {pieces[0].device} "
                f"and {self.device}"
            )
        check_row_dtype(pieces[0].dtype, self.dtype, "the basis")
        tol = _small.check_rtol(rtol if rtol is not None else self.rtol, pieces[0].dtype)
        be = _dist.reduced(_backends.get(self.backend, self.device), lay)
        self._reserve(self.k + 1)
        row = self.buffer[self.k]
        new = [row[o : o + n] for o, n in zip(self.offsets, self.sizes)]
        for dst, src in zip(new, pieces):
            dst.copy_(src.reshape(-1))
        ok = orthogonalize_new_row(be, new, self.rows(), tol)
        if not ok:
            row.zero_()
            return False
        self.k += 1
        return True
