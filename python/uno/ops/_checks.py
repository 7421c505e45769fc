"""Data-level checks run inside the custom ops, before any write (inputs stay untouched on error)."""

from __future__ import annotations

from typing import Iterable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from uno.ops import _dist


def _span(t: Tensor) -> Tuple[int, int, int]:
    """(storage base address, first byte, one past the last byte) that ``t`` can touch."""
    if type(t) not in _dist._PLAIN:
        t = _dist.local(t)  # a DTensor: the memory of its local shard
    n = t.numel()
    if n == 0:
        return (0, 0, 0)
    esz = t.element_size()
    lo = t.data_ptr()
    if t.is_contiguous():
        hi = lo + n * esz
    else:
        hi = lo + esz * (1 + sum((s - 1) * st for s, st in zip(t.shape, t.stride()) if s > 0))
    # The storage's base address without materialising the storage object (a per-piece cost).
    return (lo - int(t.storage_offset()) * esz, lo, hi)


def check_no_overlap(grad: Sequence[Tensor], others: Sequence[Tensor], other_name: str) -> None:
    """Raise ValueError when a grad piece overlaps another grad piece or any of ``others``."""
    check_disjoint(
        [(f"grad[{i}]", g) for i, g in enumerate(grad)],
        [(f"{other_name}[{i}]", o) for i, o in enumerate(others)],
        f"project_ writes grad in place, so grad must not alias itself or the {other_name}",
    )


def check_disjoint(
    written: Sequence[Tuple[str, Tensor]], read: Sequence[Tuple[str, Tensor]], why: str
) -> None:
    """Raise ValueError when a ``written`` tensor overlaps another written one or a ``read`` one
    (read tensors may overlap each other). Entries are ``(name, tensor)``; ``why`` ends the message.

    A sweep over byte intervals sorted by start: O((T + T') log(T + T')), cheap enough per step.
    """
    spans: List[Tuple[int, int, int, bool, str]] = []
    for is_written, named in ((True, written), (False, read)):
        for name, t in named:
            sid, lo, hi = _span(t)
            if hi > lo:
                spans.append((sid, lo, hi, is_written, name))
    spans.sort()
    sid_prev = None
    end_any, name_any = 0, ""  # furthest end of any interval so far in this storage
    end_w, name_w = 0, ""  # furthest end of a written interval so far in this storage
    for sid, lo, hi, is_written, name in spans:
        if sid != sid_prev:
            sid_prev, end_any, end_w = sid, 0, 0
        clash = name_any if (is_written and lo < end_any) else name_w if lo < end_w else ""
        if clash:
            raise ValueError(f"{clash} and {name} overlap in memory; {why} (pass a clone)")
        if hi > end_any:
            end_any, name_any = hi, name
        if is_written and hi > end_w:
            end_w, name_w = hi, name


def check_no_overlap_span(
    ptrs: Sequence[int], ns: Sequence[int], esz: int, span: Tuple[int, int], other_name: str
) -> None:
    """:func:`check_no_overlap` for contiguous grad pieces (data pointers ``ptrs``, ``ns`` elements of
    ``esz`` bytes) against ONE byte range (a Basis buffer).

    Address intervals alone decide: live allocations never share addresses, so no storage grouping is
    needed (and memory shared by two storages, e.g. ``torch.from_numpy`` twice, is still caught).
    """
    spans: List[Tuple[int, int, str]] = []
    for i, (lo, n) in enumerate(zip(ptrs, ns)):
        if n:
            spans.append((lo, lo + n * esz, f"grad[{i}]"))
    if span[1] > span[0]:
        spans.append((span[0], span[1], other_name))
    spans.sort()
    end, name_end = 0, ""
    for lo, hi, name in spans:
        if lo < end:
            raise ValueError(
                f"{name_end} and {name} overlap in memory; project_ writes grad in place, so grad "
                f"must not alias itself or the {other_name} (pass a clone)"
            )
        if hi > end:
            end, name_end = hi, name


def check_writable(t: Tensor, name: str) -> None:
    """Raise ValueError when ``t`` (written in place) has internal overlap, e.g. an expanded
    (stride-0) tensor such as ``torch.ones(1).expand(64)`` or the ``p.grad`` autograd leaves for the
    ``sum()`` of a broadcast. Contiguous tensors never overlap, so the usual case costs one flag read.
    """
    if t.is_contiguous() or t.numel() <= 1:
        return
    if torch._debug_has_internal_overlap(t) == 1:  # 1: overlap for sure (2: too hard to tell)
        raise ValueError(
            f"{name} (shape {tuple(t.shape)}, strides {tuple(t.stride())}) is an expanded or "
            "self-overlapping view: expanded/overlapping memory cannot be written in place; pass a "
            "contiguous copy (e.g. .contiguous())"
        )


def check_not_in_graph(
    items: Iterable[Tuple[int, Optional[Tensor]]], label: str, op: str, hint: str,
    leaves: bool = True,
) -> None:  # fmt: skip
    """Raise RuntimeError when grad mode is on and a tensor that ``op`` writes in place requires grad.

    uno's ops have no autograd formulas, so autograd does not record their writes: a backward through
    a written non-leaf would silently miss the write. Leaves that require grad (parameters) are
    refused too unless ``leaves`` is False: ``uno.project_`` refuses them as torch's in-place ops do
    ("a leaf Variable that requires grad is being used in an in-place operation": a parameter passed
    where its gradient belongs), the optimizer steps write them, as they are meant to. ``items``
    are (index, tensor) pairs, named ``label.format(index)`` in the error; they are only iterated in
    grad mode: under ``torch.no_grad()`` the check costs one flag read, else one per tensor.
    """
    if not torch.is_grad_enabled():
        return
    for i, t in items:
        if t is not None and t.requires_grad and (leaves or not t.is_leaf):
            name = label.format(i)
            what = "requires grad" if t.is_leaf else "is part of an autograd graph"
            raise RuntimeError(
                f"{op} writes {name} in place, but {name} {what} and grad mode is on: uno's ops "
                f"are not differentiable, so autograd would not see the write; {hint}"
            )
