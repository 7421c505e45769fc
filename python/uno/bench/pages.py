"""``uno bench pages``: the CPU kernels on 4 KiB pages against transparent huge pages (2 MiB).

combine at k = 64 does 4096 multiply-adds per column and moves one 64-byte input line and one
output line per 1024 of them (k float32 inputs and r = k outputs per column), over k + r rows that
lie megabytes apart: on 4 KiB pages every block of columns touches 128 pages, twice the first-level
TLB. Its roofline row (docs/kernels.md) reads 40-53 % of the FMA peak on the 2-core VM class the
docs describe; the same kernel on the same tensors allocated in huge pages read 50-52 %. This benchmark shows that difference on the machine
it runs on, for the rows of ``uno bench roofline`` it names: each variant is measured in its own
interpreter (torch's allocator takes ``THP_MEM_ALLOC_ENABLE=1`` once, at start), the two
alternating, so that a slow minute of a shared machine falls on both. The speed-up is the median
of the per-pair ratios (4 KiB time / huge-page time).

``THP_MEM_ALLOC_ENABLE=1`` is torch's own switch (c10's CPU allocator then asks for huge pages for
allocations of 2 MiB and more, with ``madvise``); it needs transparent huge pages set to
``always`` or ``madvise`` in /sys/kernel/mm/transparent_hugepage/enabled. Whether a child really
got huge pages is read back from /proc/self/smaps_rollup (AnonHugePages) and printed; the 4 KiB
child turns them off for itself (``prctl(PR_SET_THP_DISABLE)``), so the comparison holds where the
system setting is ``always`` too.

    uno bench pages                   # combine k = 64 and project_ k = 1, 1 and 2 threads, 3 pairs
    uno bench pages --quick           # small sizes, 1 thread, 1 pair: a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch

from uno.bench import harness as h
from uno.bench.records import append_csv, columns, format_row, header_lines, meta

#: The kernels this benchmark measures (their roofline rows: combine at k = 64, project_ at k = 1).
KERNELS = ("combine", "project")
THP_SYS = Path("/sys/kernel/mm/transparent_hugepage/enabled")
_MARK = "#uno-pages-row# "

COLUMNS = columns(
    "kernel:kernel:30; k:k:4:d; threads:thr:3:d; ms_4k:ms 4K:9:.2f; ms_huge:ms huge:9:.2f; "
    "speedup:4K/huge:8:.3f; peak_4k:%peak 4K:9:.0f:100; peak_huge:%peak huge:11:.0f:100; "
    "huge_kib:huge KiB:9:d"
)


def thp_mode() -> str:
    """The system's transparent huge page setting ("always", "madvise", "never"), or "absent"."""
    try:
        text = THP_SYS.read_text()
    except OSError:
        return "absent"
    for word in text.split():
        if word.startswith("[") and word.endswith("]"):
            return word[1:-1]
    return "absent"


def anon_huge_kib() -> int:
    """This process's anonymous memory in huge pages, KiB (0 where the kernel does not say)."""
    try:
        for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
            if line.startswith("AnonHugePages:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def disable_thp() -> bool:
    """Keep this process on 4 KiB pages even where the system setting is "always"
    (``prctl(PR_SET_THP_DISABLE)``, Linux 3.15+); False where that is refused."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(41, 1, 0, 0, 0)) == 0  # 41: PR_SET_THP_DISABLE
    except (OSError, AttributeError):
        return False


def _case(kernel: str, k: int, quick: bool):  # -> roofline.Case
    from uno.bench import roofline

    if kernel == "combine":
        return next(roofline._combine_cases(10**4 if quick else 10**6, (k,)))
    return next(roofline._project_cases(10**5 if quick else 10**7, (k,)))


def child(kernel: str, k: int, threads: int, n_rounds: int, quick: bool) -> Dict[str, object]:
    """One measurement in this process: the roofline row of ``kernel`` at ``k``, ``threads``
    threads, ``n_rounds`` interleaved rounds, with the huge pages this process got."""
    from uno.bench import roofline

    torch.set_num_threads(threads)
    case = _case(kernel, k, quick)
    row = roofline.measure(case, n_rounds, threads)
    return dict(
        kernel=case.kernel, ms=row["ms"], frac_peak=row.get("frac_peak"), huge_kib=anon_huge_kib(),
    )  # fmt: skip


def _run_child(args: List[str], huge: bool) -> Dict[str, object]:
    env = dict(os.environ)
    env.pop("THP_MEM_ALLOC_ENABLE", None)
    if huge:
        env["THP_MEM_ALLOC_ENABLE"] = "1"
    cmd = [sys.executable, "-m", "uno.bench", "pages", *args, *([] if huge else ["--small-pages"])]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    for line in res.stdout.splitlines():
        if line.startswith(_MARK):
            return dict(json.loads(line[len(_MARK) :]))
    sys.stderr.write(res.stderr)
    raise RuntimeError(f"uno bench pages: the child {' '.join(args)} exited {res.returncode}")


def measure_pair_series(
    kernel: str, k: int, threads: int, pairs: int, n_rounds: int, quick: bool,
) -> Dict[str, object]:  # fmt: skip
    """``pairs`` alternating (4 KiB, huge) child runs; the table row."""
    args = ["--child", kernel, "--k", str(k), "--threads", str(threads), "--rounds", str(n_rounds)]
    if quick:
        args.append("--quick")
    small: List[Dict[str, object]] = []
    huge: List[Dict[str, object]] = []
    for _ in range(pairs):
        small.append(_run_child(args, huge=False))
        huge.append(_run_child(args, huge=True))

    def med(rows: List[Dict[str, object]], key: str) -> Optional[float]:
        vals = [float(r[key]) for r in rows if r.get(key) is not None]  # type: ignore[arg-type]
        return statistics.median(vals) if vals else None

    ratios = [float(a["ms"]) / float(b["ms"]) for a, b in zip(small, huge)]  # type: ignore[arg-type]
    return dict(
        kernel=small[0]["kernel"], k=k, threads=threads, pairs=pairs, rounds=n_rounds,
        ms_4k=med(small, "ms"), ms_huge=med(huge, "ms"), speedup=statistics.median(ratios),
        peak_4k=med(small, "frac_peak"), peak_huge=med(huge, "frac_peak"),
        huge_kib=int(min(int(r["huge_kib"]) for r in huge)),  # type: ignore[call-overload]
        small_kib=int(max(int(r["huge_kib"]) for r in small)),  # type: ignore[call-overload]
    )  # fmt: skip


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="uno bench pages", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    ap.add_argument("--quick", action="store_true", help="small sizes, 1 thread, 1 pair")
    ap.add_argument("--kernels", nargs="+", choices=KERNELS, default=list(KERNELS))
    ap.add_argument("--pairs", type=int, default=None, help="alternating pairs (default 3; 1)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds per child (5)")
    ap.add_argument("--threads", type=int, nargs="+", default=None, help="default: 1 2 (quick: 1)")
    ap.add_argument("--csv", type=Path, default=Path(h.DEFAULT_CSV_DIR) / "pages.csv")
    ap.add_argument("--no-csv", action="store_true", help="print the table only")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--k", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--small-pages", action="store_true", help=argparse.SUPPRESS)
    return ap


def main(argv: Optional[Sequence[str]] = None, default_csv: Union[str, Path, None] = None) -> int:
    """``uno bench pages [options]``."""
    ap = parser()
    if default_csv is not None:
        ap.set_defaults(csv=Path(default_csv))
    args = ap.parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.rounds < 1 or (args.pairs is not None and args.pairs < 1):
        ap.error("--rounds and --pairs must be >= 1")
    if args.child is not None:  # one measurement, in this process
        if args.child not in KERNELS or args.k is None or not args.threads:
            ap.error("--child needs a kernel, --k and --threads")
        if args.small_pages and not disable_thp():
            print(
                "# PR_SET_THP_DISABLE refused: the 4 KiB child may get huge pages", file=sys.stderr
            )
        row = child(args.child, args.k, args.threads[0], args.rounds, args.quick)
        print(_MARK + json.dumps(row), flush=True)
        return 0
    threads = args.threads if args.threads is not None else ([1] if args.quick else [1, 2])
    if any(t < 1 for t in threads):
        ap.error("--threads must be >= 1")
    pairs = args.pairs if args.pairs is not None else (1 if args.quick else 3)
    mode = thp_mode()
    print(f"# transparent huge pages: {mode} ({THP_SYS}); {pairs} alternating pairs of processes, "
          f"{args.rounds} interleaved rounds each; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")  # fmt: skip
    if mode not in ("always", "madvise"):
        print(f"# huge pages are not available here ({mode}): nothing to compare")
        return 0
    for line in header_lines(COLUMNS):
        print(line)
    rows: List[Tuple[int, Dict[str, object]]] = []
    for th in threads:
        for kernel in args.kernels:
            k = 64 if kernel == "combine" else 1
            try:
                row = measure_pair_series(kernel, k, th, pairs, args.rounds, args.quick)
            except RuntimeError as e:  # a child failed: its stderr is printed above
                print(f"uno bench pages: {e}", file=sys.stderr)
                return 1
            print(format_row(COLUMNS, row), flush=True)
            if not row["huge_kib"]:
                print("#   (the huge-page child got no huge pages: the sizes may be below 2 MiB)")
            if row["small_kib"]:
                print(f"#   (the 4 KiB child had {row['small_kib']} KiB in huge pages)")
            rows.append((th, row))
    if not args.no_csv:
        append_csv(args.csv, [dict(meta(torch.device("cpu"), th), **r) for th, r in rows])
        print(f"# wrote {args.csv}")
    return 0
