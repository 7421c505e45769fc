"""k separate vectors as row sets without stacking them: a table of per-row pointers.

A set of k raw vectors given piece by piece (``[[a0, a1, ...], [b0, b1, ...], ...]``) has no
``(k, n_t)`` layout in memory: row j of piece t is vector j's own tensor. :class:`RowTable` keeps the
pieces where they are and gives the kernels one pointer per (piece, row) (docs/kernels.md, "row
tables"); backends that read such a table (``ROW_TABLES = True``: cpu) never copy the vectors, the
others get :meth:`RowTable.stacked`, the ``(k, n_t)`` blocks made once.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor


class RowTable(list):
    """The pieces of k vectors, as a read-only list in piece-major order (item ``t * k + j`` is
    piece t of vector j, contiguous, in its own shape), with the layout the kernels read.

    The kernels read only the pointers and sizes, so no 1-D view is made per piece (each costs about
    a microsecond: 112 of them for 8 vectors of a 14-tensor model); :meth:`piece` and
    :meth:`stacked` make them when a code path needs one.

    Attributes:
        k: the number of vectors (rows).
        ns: the ``T`` piece sizes.
        ptrs: ``T * k`` data pointers, ``ptrs[t * k + j]`` the start of piece t of vector j.
        vectors: ``vectors[j][t]``, piece t of vector j (contiguous, shaped as given).
    """

    k: int
    ns: List[int]
    ptrs: List[int]
    vectors: List[List[Tensor]]
    _stacked: Optional[List[Tensor]]

    @classmethod
    def of(
        cls, vectors: Sequence[Sequence[Tensor]], shapes: Sequence[torch.Size], what: str
    ) -> RowTable:
        """The table of ``vectors`` (k sequences of tensors shaped ``shapes``); ValueError naming
        ``what`` for a wrong piece count or shape. Non-contiguous pieces are made contiguous (the
        only copy); dtypes and devices are the caller's to check."""
        flat: List[List[Tensor]] = []
        for j, v in enumerate(vectors):
            if len(v) != len(shapes):
                raise ValueError(
                    f"{what}[{j}] has {len(v)} tensors, expected {len(shapes)} (one per grad piece)"
                )
            row = list(v)
            for t, (p, shape) in enumerate(zip(row, shapes)):
                if p.shape != shape:
                    raise ValueError(
                        f"{what}[{j}][{t}] has shape {tuple(p.shape)}, expected {tuple(shape)}"
                    )
                if not p.is_contiguous():
                    row[t] = p.contiguous()
            flat.append(row)
        k, n_pieces = len(flat), len(shapes)
        out = cls(flat[j][t] for t in range(n_pieces) for j in range(k))
        out.k, out.vectors, out._stacked = k, flat, None
        out.ns = [int(p.numel()) for p in flat[0]] if flat else []
        out.ptrs = [int(p.data_ptr()) for p in out]
        return out

    def piece(self, t: int, j: int) -> Tensor:
        """The 1-D view of piece ``t`` of vector ``j``."""
        return self.vectors[j][t].reshape(-1)

    def named(self, what: str) -> List[Tuple[str, Tensor]]:
        """``(name, piece)`` pairs, named ``what[j][t]`` (for the overlap checks' messages)."""
        return [
            (f"{what}[{j}][{t}]", p) for j, v in enumerate(self.vectors) for t, p in enumerate(v)
        ]

    def stacked(self) -> List[Tensor]:
        """The ``(k, n_t)`` row blocks (a copy of the vectors, made once), for backends and code paths
        without row tables (the custom ops' schema takes plain tensor lists)."""
        if self._stacked is None:
            self._stacked = [
                torch.stack([v[t].reshape(-1) for v in self.vectors]) for t in range(len(self.ns))
            ]
        return self._stacked

    def detached(self) -> RowTable:
        """The same table over detached pieces."""
        return RowTable.of(
            [[p.detach() for p in v] for v in self.vectors], [p.shape for p in self.vectors[0]], ""
        )

    def _read_only(self, *a: object, **kw: object) -> None:
        raise TypeError("RowTable is read-only (its pointers are cached); copy it with list(rows)")

    __setitem__ = __delitem__ = __iadd__ = __imul__ = _read_only  # type: ignore[assignment]
    append = extend = insert = pop = remove = clear = sort = reverse = _read_only  # type: ignore[assignment]
