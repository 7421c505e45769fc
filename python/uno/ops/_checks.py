"""Data-level checks run inside the custom ops, before any write (inputs stay untouched on error)."""

from __future__ import annotations

from typing import List, Sequence, Tuple

from torch import Tensor


def _span(t: Tensor) -> Tuple[int, int, int]:
    """(storage base address, first byte, one past the last byte) that ``t`` can touch."""
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
    """Raise ValueError when a grad piece overlaps another grad piece or any of ``others``.

    A sweep over byte intervals sorted by start: O((T + T') log(T + T')), cheap enough per step.
    """
    spans: List[Tuple[int, int, int, str]] = []
    for i, g in enumerate(grad):
        sid, lo, hi = _span(g)
        if hi > lo:
            spans.append((sid, lo, hi, f"grad[{i}]"))
    for i, o in enumerate(others):
        sid, lo, hi = _span(o)
        if hi > lo:
            spans.append((sid, lo, hi, f"{other_name}[{i}]"))
    spans.sort()
    sid_prev = None
    end_any, name_any = 0, ""  # furthest end of any interval so far in this storage
    end_grad, name_grad = 0, ""  # furthest end of a grad interval so far in this storage
    for sid, lo, hi, name in spans:
        if sid != sid_prev:
            sid_prev, end_any, end_grad = sid, 0, 0
        is_grad = name.startswith("grad")
        clash = name_any if (is_grad and lo < end_any) else name_grad if lo < end_grad else ""
        if clash:
            raise ValueError(
                f"{clash} and {name} overlap in memory; project_ writes grad in place, so grad must "
                f"not alias itself or the {other_name} (pass a clone)"
            )
        if hi > end_any:
            end_any, name_any = hi, name
        if is_grad and hi > end_grad:
            end_grad, name_grad = hi, name


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
