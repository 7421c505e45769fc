"""What a benchmark run writes: the CSV rows (stamped with when, where, which versions) and the table.

Part of the harness (:mod:`uno.bench.harness` re-exports every name here).
"""

from __future__ import annotations

import csv
import datetime as dt
import math
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence

import torch


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else ``platform.processor()``), or "".

    Rows measured on different CPUs of one machine class (an Intel Xeon and an AMD EPYC VM have both
    served as "2-core VM") must be told apart: the same kernel reads very differently on them.
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor()


def machine() -> str:
    """Host, architecture, core count, CPU model and torch version, in one CSV cell."""
    model = cpu_model()
    cpu = f" ({model})" if model else ""
    return (
        f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus{cpu}, "
        f"torch {torch.__version__}"
    )


def meta(device: torch.device, threads: int) -> Dict[str, Any]:
    """The columns every CSV row starts with: when, where, which versions, how many threads."""
    import uno

    return dict(
        date=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        machine=machine(),
        version=uno.__version__,
        torch=torch.__version__,
        device=str(device),
        threads=threads,
    )


def append_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Append ``rows`` to the CSV at ``path`` (created with a header if absent).

    A file written by an older version of a bench may lack some of the new rows' columns: it is then
    rewritten once with its header extended (old rows get empty cells), so that every row of one file
    is read back under the right column names.
    """
    if not rows:
        return
    fields = list(dict.fromkeys(k for r in rows for k in r))
    path.parent.mkdir(parents=True, exist_ok=True)
    old: List[Dict[str, str]] = []
    header: List[str] = []
    if path.exists() and path.stat().st_size > 0:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            header = list(reader.fieldnames or [])
            if any(k not in header for k in fields):
                old = list(reader)
    missing = [k for k in fields if k not in header]
    if header and not missing:
        with open(path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=header, extrasaction="ignore").writerows(rows)
        return
    header = header + missing
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header)
        w.writeheader()
        w.writerows(old)
        w.writerows(rows)


@dataclass(frozen=True)
class Column:
    """One column of a printed table: the row key, its title, its width and its format.

    ``fmt`` is a format spec for numbers (``".3f"``); ``scale`` multiplies the value first (a fraction
    printed as a percentage). Missing values and NaN print as blanks.
    """

    key: str
    title: str
    width: int
    fmt: str = ""
    scale: float = 1.0

    def cell(self, row: Mapping[str, Any]) -> str:
        v = row.get(self.key)
        if v is None or (isinstance(v, float) and not math.isfinite(v)):
            return " " * self.width
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            v = v * self.scale if self.scale != 1.0 else v  # keeps ints ints for the "d" format
            return f"{v:>{self.width}{self.fmt}}"
        return f"{v!s:<{self.width}}"


def columns(spec: str) -> List[Column]:
    """Columns from a compact spec: ``"key:title:width[:fmt[:scale]]"`` entries separated by ``;``.

    >>> [c.title for c in columns("ms:ms:9:.3f; frac_copy:%copy:6:.1f:100")]
    ['ms', '%copy']
    """
    out = []
    for entry in filter(None, (e.strip() for e in spec.split(";"))):
        parts = entry.split(":")
        if not 3 <= len(parts) <= 5:
            raise ValueError(f"column spec must be key:title:width[:fmt[:scale]], got {entry!r}")
        key, title, width = parts[:3]
        fmt = parts[3] if len(parts) > 3 else ""
        scale = float(parts[4]) if len(parts) > 4 else 1.0
        out.append(Column(key, title, int(width), fmt, scale))
    return out


def header_lines(columns: Sequence[Column]) -> List[str]:
    """The title line and the rule under it."""
    titles = " ".join(
        f"{c.title:<{c.width}}" if not c.fmt else f"{c.title:>{c.width}}" for c in columns
    )
    return [titles, "-" * len(titles)]


def format_row(columns: Sequence[Column], row: Mapping[str, Any]) -> str:
    return " ".join(c.cell(row) for c in columns).rstrip()


def csv_cell(v: Any) -> Any:
    """Floats to 6 significant digits (the CSV stays readable); NaN as an empty cell."""
    if isinstance(v, float):
        return "" if not math.isfinite(v) else float(f"{v:.6g}")
    return v
