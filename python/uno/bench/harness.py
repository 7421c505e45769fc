"""The shared microbenchmark harness: timing, the same-run copy bandwidth, the table, the CSV, the CLI.

Every benchmark module (``project``, ``optim``, ``per_sample``, ``combine``) describes itself with one
:class:`Bench`: its frozen-dataclass configurations, a ``measure`` function that times one configuration
and returns its rows, and the :class:`Column` list of its printed table. :func:`main` does the rest the
same way for all of them: the options (``--device``, ``--quick``, ``--threads``, ``--reps``, ``--csv``),
the header lines (machine, versions, threads, backends), the table, and the CSV rows (each stamped with
date, machine, versions, device and threads by :func:`meta`). The CSV and table helpers live in
:mod:`uno.bench.records` and are re-exported here.

Timing rules (why they are what they are):

* one warm-up call first (allocations, lazy imports, kernel selection are not measured);
* the **median** of the calls, not the mean: a shared machine produces long outliers;
* on CUDA the device is synchronised before and after each timed call, so a row times the work, not
  the launch;
* a STREAM-like copy (``dst.copy_(src)``, read + write of P elements) is timed in the same run: a
  memory-bound kernel is judged by its fraction of that bandwidth, which stays meaningful on a
  machine whose absolute bandwidth is unknown or contended.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch

from uno.bench.records import (
    Column,
    append_csv,
    columns,
    csv_cell,
    format_row,
    header_lines,
    machine,
    meta,
)

__all__ = [
    "Bench",
    "Column",
    "Context",
    "append_csv",
    "chain",
    "columns",
    "copy_seconds",
    "csv_cell",
    "dtype_name",
    "elem_size",
    "format_row",
    "gbps",
    "header_lines",
    "interleaved",
    "machine",
    "main",
    "meta",
    "parser",
    "ratio",
    "sync",
    "timeit",
]

#: Where the rows go when neither ``--csv`` nor the calling script names a file: the current
#: directory, never the installed package.
DEFAULT_CSV_DIR = "uno-bench"
#: The marker line a child process (``Bench.isolate``) prints its rows after.
_CHILD_MARK = "#uno-bench-rows# "


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on CPU, whose ops return when done)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timeit(
    fn: Callable[[], object],
    device: torch.device,
    reps: int,
    *,
    min_time: float = 0.2,
    max_calls: int = 100,
    setup: Optional[Callable[[], object]] = None,
) -> float:
    """Median seconds per call of ``fn``, after one warm-up call.

    Args:
        fn: the call to time.
        device: synchronised around every timed call when it is a CUDA device.
        reps: at least this many timed calls.
        min_time: keep calling until this many seconds have passed (at most ``max_calls`` calls), so
            that fast calls get a steadier median.
        max_calls: the most timed calls when ``min_time`` asks for more.
        setup: run before every call, untimed (e.g. writing fresh gradients that the call consumes).
    """
    if reps < 1:
        raise ValueError(f"reps must be >= 1, got {reps}")
    if setup is not None:
        setup()
    fn()
    sync(device)
    times: List[float] = []
    start = time.perf_counter()
    while len(times) < reps or (time.perf_counter() - start < min_time and len(times) < max_calls):
        if setup is not None:
            setup()
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved(
    methods: Mapping[str, Callable[[], object]], device: torch.device, rounds: int
) -> Dict[str, List[float]]:
    """Seconds of each call of each method over ``rounds`` rounds of A B C …, after one warm-up each.

    A round runs every method once, so a slow patch of a shared machine hits all methods alike
    instead of one method's whole series; compare methods by their per-round ratios or medians.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    for fn in methods.values():
        fn()
    sync(device)
    out: Dict[str, List[float]] = {name: [] for name in methods}
    for _ in range(rounds):
        for name, fn in methods.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            out[name].append(time.perf_counter() - t0)
    return out


def chain(*calls: Callable[[], object]) -> Callable[[], None]:
    """One call that makes ``calls`` in order (e.g. a reset, then the timed operation)."""

    def run() -> None:
        for call in calls:
            call()

    return run


def copy_seconds(numel: int, dtype: torch.dtype, device: torch.device, reps: int) -> float:
    """Median seconds of a STREAM-like copy of ``numel`` elements (moves ``2 * numel`` elements)."""
    src = torch.empty(numel, dtype=dtype, device=device).normal_()
    dst = torch.empty_like(src)
    return timeit(lambda: dst.copy_(src), device, reps)


def gbps(nbytes: float, seconds: float) -> float:
    """Bandwidth in GB/s (1e9 bytes per second) of ``nbytes`` moved in ``seconds``."""
    return nbytes / max(seconds, 1e-12) / 1e9


def ratio(baseline: Optional[float], t: float) -> float:
    """Speed-up of a call taking ``t`` over a baseline taking ``baseline`` seconds (NaN when absent)."""
    if baseline is None or not math.isfinite(baseline):
        return math.nan
    return baseline / max(t, 1e-12)


def elem_size(dtype: torch.dtype) -> int:
    """Bytes per element of a floating dtype."""
    return torch.finfo(dtype).bits // 8


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True)
class Context:
    """What every configuration of one invocation is measured with."""

    device: torch.device
    reps: int
    threads: int
    args: argparse.Namespace


Rows = List[Dict[str, Any]]


@dataclass(frozen=True)
class Bench:
    """A benchmark as :func:`main` runs it.

    Attributes:
        name: the subcommand (``uno bench NAME``) and the default CSV's stem.
        doc: the description printed by ``--help`` (the module docstring).
        columns: the printed table.
        configs: the configurations of a run, from the parsed options (``args.quick`` &c.).
        measure: times one configuration, returns its rows (the table's keys and any more for the CSV).
        config_type: the frozen dataclass of the configurations (rebuilt from JSON in a child process).
        notes: header lines printed after the machine line (what the baselines are).
        options: the benchmark's own options, ``(flag, add_argument keywords)`` pairs.
        reps: the default of ``--reps``.
        threads: the default of ``--threads`` (``None``: torch's).
        isolate: measure each configuration in a fresh interpreter (a previous configuration's large
            allocations would slow the next one down).
        devices: the devices the benchmark supports.
    """

    name: str
    doc: str
    columns: Sequence[Column]
    configs: Callable[[argparse.Namespace], Sequence[Any]]
    measure: Callable[[Any, Context], Rows]
    config_type: type
    notes: Sequence[str] = ()
    options: Sequence[Tuple[str, Dict[str, Any]]] = ()
    reps: int = 5
    threads: Optional[int] = None
    isolate: bool = False
    devices: Sequence[str] = ("cpu", "cuda")


def parser(bench: Bench, default_csv: Union[str, Path, None] = None) -> argparse.ArgumentParser:
    """The options every benchmark takes, plus its own."""
    ap = argparse.ArgumentParser(
        prog=f"uno bench {bench.name}",
        description=bench.doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--device", default="cpu", help=f"one of {', '.join(bench.devices)}")
    ap.add_argument("--quick", action="store_true", help="a small sweep (a smoke test)")
    ap.add_argument("--reps", type=int, default=bench.reps, help="timed calls per row (at least)")
    ap.add_argument(
        "--threads",
        type=int,
        default=bench.threads,
        help="torch CPU threads (default: %s)" % (bench.threads or "torch's"),
    )
    csv_default = (
        Path(default_csv)
        if default_csv
        else Path(DEFAULT_CSV_DIR) / f"{bench.name.replace('-', '_')}.csv"
    )
    ap.add_argument(
        "--csv",
        type=Path,
        default=csv_default,
        help=f"append the rows to this CSV file (default: {csv_default})",
    )
    ap.add_argument("--no-csv", action="store_true", help="print the table only")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)  # one config, JSON (isolate)
    for flag, kw in bench.options:
        ap.add_argument(flag, **kw)
    return ap


def _check_args(ap: argparse.ArgumentParser, bench: Bench, args: argparse.Namespace) -> None:
    try:
        device = torch.device(args.device)
    except RuntimeError:
        ap.error(f"--device: {bench.name} runs on {', '.join(bench.devices)}, got {args.device!r}")
    if device.type not in bench.devices:
        ap.error(f"--device: {bench.name} runs on {', '.join(bench.devices)}, got {args.device!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error(f"--device {args.device}: torch sees no CUDA device here")
    if args.reps < 1:
        ap.error(f"--reps must be >= 1, got {args.reps}")
    if args.threads is not None and args.threads < 1:
        ap.error(f"--threads must be >= 1, got {args.threads}")


def _measure_in_child(bench: Bench, cfg: Any, argv: Sequence[str]) -> Rows:
    """Measure ``cfg`` in a fresh interpreter running this benchmark with ``--child``."""
    payload = json.dumps(dataclasses.asdict(cfg), default=str)
    cmd = [sys.executable, "-m", "uno.bench", bench.name, *argv, "--child", payload]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    rows: Rows = []
    for line in res.stdout.splitlines():
        if line.startswith(_CHILD_MARK):
            rows = json.loads(line[len(_CHILD_MARK) :])
        elif line.strip():
            print(line)
    if res.returncode != 0:
        sys.stderr.write(res.stderr)
        raise RuntimeError(f"uno bench {bench.name}: the child for {cfg} exited {res.returncode}")
    return rows


def _config_from_json(bench: Bench, text: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(bench.config_type)}
    raw = json.loads(text)
    kw = {}
    for k, v in raw.items():
        if k not in fields:
            raise ValueError(f"--child: unknown field {k!r} of {bench.config_type.__name__}")
        if isinstance(v, str) and v.startswith("torch."):  # a dtype written by json default=str
            v = getattr(torch, v.removeprefix("torch."))
        kw[k] = v
    return bench.config_type(**kw)


def main(
    bench: Bench,
    argv: Optional[Sequence[str]] = None,
    default_csv: Union[str, Path, None] = None,
) -> int:
    """Run ``bench``: parse ``argv``, print the header and the table, append the CSV rows.

    Args:
        bench: the benchmark.
        argv: its options (default: ``sys.argv[1:]``).
        default_csv: the CSV file used when ``--csv`` is not given (the bench/ scripts pass
            bench/results/NAME.csv); otherwise ``./uno-bench/NAME.csv``.

    Returns:
        0 (bad options exit with argparse's status 2).
    """
    import uno

    argv = list(sys.argv[1:] if argv is None else argv)
    ap = parser(bench, default_csv)
    args = ap.parse_args(argv)
    _check_args(ap, bench, args)
    if args.threads:
        torch.set_num_threads(args.threads)
    ctx = Context(torch.device(args.device), args.reps, torch.get_num_threads(), args)
    if args.child is not None:
        child_rows = bench.measure(_config_from_json(bench, args.child), ctx)
        print(_CHILD_MARK + json.dumps(child_rows, default=str))
        return 0
    print(f"# uno {uno.__version__} on {machine()}, device {ctx.device}, {ctx.threads} threads")
    print(f"# backends: {uno.backends()}")
    for note in bench.notes:
        print(f"# {note}")
    for line in header_lines(bench.columns):
        print(line)
    stamp = meta(ctx.device, ctx.threads)
    rows: Rows = []
    for cfg in bench.configs(args):
        got = _measure_in_child(bench, cfg, argv) if bench.isolate else bench.measure(cfg, ctx)
        for row in got:
            print(format_row(bench.columns, row), flush=True)
            rows.append({**stamp, **{k: csv_cell(v) for k, v in row.items()}})
    if not args.no_csv:
        append_csv(args.csv, rows)
        print(f"# appended {len(rows)} rows to {args.csv}")
    return 0
