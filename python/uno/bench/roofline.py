"""``uno bench roofline``: every CPU kernel against the machine's limits, in one table.

For each kernel and k: the bytes per parameter the fused algorithm must move (the model below), the
achieved GB/s, its fraction of a same-run copy (``dst.copy_(src)``, 8 B/param in fp32) and of a
same-run triad (``a = b + s·c``, 12 B/param), and its speed-ups against named baselines, at 1 and 2
threads. Every configuration runs in interleaved rounds (copy, triad, uno, baseline, …, then again):
a slow patch of a shared machine hits every method of a round alike. The table shows medians of the
per-round ratios; ms and GB/s are medians of the uno method's own times.

Bytes per parameter (fp32; k basis vectors; what one call must read and write at least):
  inner (dot_norms)      8: reads a and b
  project_ (Basis)       4·(3 + 2k): pass A reads g and k rows, pass B reads both and writes g
  combine (k → r)        4·(k + r), and r·k multiply-adds per parameter (GFMA/s, % of a float64
                         GEMM, torch.mm on 1024² matrices, and % of the float64 FMA peak,
                         ``uno._C.fma_peak_cpu``: a pure multiply-add loop on as many threads,
                         the fastest of 8 short runs per round; both in the same rounds)
  orthonormalize (k)     4·3k: CholeskyQR2's Gram (k rows), Q₁ = M V (k in, k out); Q₁'s own
                         Gram (another 4k) only when the rounding bound cannot certify Q₁
                         (``uno.ops._small.orthogonality_bound``; rows before 2026-12-03: 4·4k)
  ProjectedAdam (grad)   32 + 8k: pass A reads g and k rows; pass B reads p, g, m, v, k rows, writes
                         p, m, v
Baselines: naive torch (cat + Gram-Schmidt + dots + axpy + copy back; ``uno.bench.project``),
``torch.linalg.qr`` of the concatenated vectors (+ two matmuls), ``project_`` + ``torch.optim.Adam``
(``foreach=True`` and ``fused=True``), float64 ``torch.mm`` (combine's arithmetic in torch), and for
the per-sample Gram of the conv VAE, ``torch.func`` ``vmap(grad)`` + matmul; its row also times one
forward and one backward of the summed loss alone ("fwd+bwd alone", a speed-up below 1): any
per-sample Gram costs at least that, so vmap's speed-up over uno cannot exceed vmap's over it.

How the projection is timed (docs/kernels.md, "Measuring the way callers call"): a fresh
(non-orthogonal) gradient is copied in before every call, untimed, as a backward pass would leave
it; the call itself is timed alone.

    uno bench roofline            # P = 1e7 (combine: 1e6), 1 and 2 threads, < 5 min on an idle 2-core VM
    uno bench roofline --quick    # P = 1e5, 1 thread, 2 rounds: a smoke test (seconds)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from functools import partial
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch

import uno
from uno import _backends
from uno import optim as uoptim
from uno.bench import harness as h
from uno.bench.project import naive_project, qr_project
from uno.bench.records import (
    append_csv,
    columns,
    cpu_model,
    csv_cell,
    format_row,
    header_lines,
    meta,
)
from uno.bench.shapes import MNIST_VAE_SHAPES, numel, random_pieces, scaled_shapes

Call = Callable[[], object]
#: One method of a configuration: (untimed setup run before every call or None, the timed call).
Method = Tuple[Optional[Call], Call]


class Case:
    """One row of the table: a kernel at one k, its uno method first, then its baselines."""

    def __init__(
        self, kernel: str, k: int, p: int, bytes_pp: float, methods: Dict[str, Method],
        fma_pp: float = 0.0,
    ) -> None:  # fmt: skip
        self.kernel, self.k, self.p, self.bytes_pp, self.fma_pp = kernel, k, p, bytes_pp, fma_pp
        self.methods = methods


def rounds(methods: Dict[str, Method], n: int) -> Dict[str, List[float]]:
    """Seconds per call of every method over ``n`` interleaved rounds, after one warm-up each."""
    for setup, fn in methods.values():
        if setup is not None:
            setup()
        fn()
    out: Dict[str, List[float]] = {name: [] for name in methods}
    for _ in range(n):
        for name, (setup, fn) in methods.items():
            if setup is not None:
                setup()
            t0 = time.perf_counter()
            fn()
            out[name].append(time.perf_counter() - t0)
    return out


def _stream(p: int) -> Dict[str, Method]:
    """The same-run references: copy (8 B/param) and triad (12 B/param), fp32."""
    src, b, c = torch.randn(p), torch.randn(p), torch.randn(p)
    dst = torch.empty(p)
    return {
        "copy": (None, lambda: dst.copy_(src)),
        "triad": (None, lambda: torch.add(b, c, alpha=0.5, out=dst)),
    }


def _project_cases(p: int, ks: Sequence[int]) -> Iterator[Case]:
    gen = torch.Generator().manual_seed(0)
    shapes = scaled_shapes("transformer", p)
    n = numel(shapes)
    cpu = torch.device("cpu")
    grads = random_pieces(shapes, torch.float32, cpu, gen)
    g0 = [x.clone() for x in grads]

    def reset() -> None:
        for a, b in zip(grads, g0):
            a.copy_(b)

    for k in ks:
        vecs = [random_pieces(shapes, torch.float32, cpu, gen) for _ in range(k)]
        basis = uno.orthonormalize(vecs)
        methods: Dict[str, Method] = {
            "uno": (reset, partial(uno.project_, grads, basis)),
            "naive": (reset, partial(naive_project, grads, vecs)),
            "torch qr": (reset, partial(qr_project, grads, vecs)),
        }
        yield Case(f"project_ Basis ({len(shapes)} pieces)", k, n, 4 * (3 + 2 * k), methods)
        if k == 1:  # the same P in one piece: what the per-piece costs are
            flat = torch.cat([x.reshape(-1) for x in g0])
            reset1 = partial(flat.copy_, flat.clone())
            b1 = uno.orthonormalize([torch.cat([x.reshape(-1) for x in vecs[0]])])
            methods = {
                "uno": (reset1, partial(uno.project_, flat, b1)),
                "naive": (reset1, partial(naive_project, [flat], [[b1.vector(0)[0]]])),
            }
            yield Case("project_ Basis (1 piece)", 1, n, 4 * 5, methods)


def _inner_case(p: int) -> Case:
    gen = torch.Generator().manual_seed(1)
    shapes = scaled_shapes("transformer", p)
    a = random_pieces(shapes, torch.float32, torch.device("cpu"), gen)
    b = random_pieces(shapes, torch.float32, torch.device("cpu"), gen)

    def naive() -> object:
        ca, cb = torch.cat([x.reshape(-1) for x in a]), torch.cat([x.reshape(-1) for x in b])
        return (ca @ cb, ca @ ca, cb @ cb)

    methods: Dict[str, Method] = {
        "uno": (None, lambda: uno.dot_norms(a, b)),
        "naive": (None, naive),
    }
    return Case(f"inner dot_norms ({len(shapes)} pieces)", 1, numel(shapes), 8, methods)


def _mm64(out: torch.Tensor, m: torch.Tensor, rows: torch.Tensor) -> None:
    out.copy_(m @ rows.double())  # combine's float64 arithmetic, in torch


def _combine_cases(p: int, ks: Sequence[int]) -> Iterator[Case]:
    be = _backends.module("cpu")
    for k in ks:
        g = torch.Generator().manual_seed(k)
        rows = torch.randn(k, p, generator=g)
        m = torch.randn(k, k, generator=g, dtype=torch.float64)
        out = torch.empty(k, p)
        methods: Dict[str, Method] = {
            "uno": (None, partial(be.combine, [out], [rows], m)),
            "torch f64 mm": (None, partial(_mm64, out, m, rows)),
            "torch f32 mm": (None, partial(torch.mm, m.float(), rows, out=out)),
        }
        yield Case("combine (r = k)", k, p, 4 * 2 * k, methods, fma_pp=k * k)


def _ortho_case(k: int) -> Case:
    g = torch.Generator().manual_seed(k)
    vecs = [[torch.randn(s, generator=g) for s in MNIST_VAE_SHAPES] for _ in range(k)]

    def qr() -> object:
        a = torch.stack([torch.cat([p.reshape(-1) for p in v]) for v in vecs], 1)
        return torch.linalg.qr(a).Q

    methods: Dict[str, Method] = {
        "uno": (None, lambda: uno.orthonormalize(vecs)),
        "torch qr": (None, qr),
    }
    n = numel(MNIST_VAE_SHAPES)
    return Case("orthonormalize (separate)", k, n, 4 * 3 * k, methods)


def _optim_case(p: int, k: int) -> Case:
    gen = torch.Generator().manual_seed(2)
    shapes = scaled_shapes("transformer", p)
    cpu = torch.device("cpu")
    params = [torch.nn.Parameter(x) for x in random_pieces(shapes, torch.float32, cpu, gen)]
    grads0 = random_pieces(shapes, torch.float32, cpu, gen)
    basis = uno.orthonormalize([random_pieces(shapes, torch.float32, cpu, gen) for _ in range(k)])

    def set_grads() -> None:
        for q, g in zip(params, grads0):
            if q.grad is None:
                q.grad = g.clone()
            else:
                q.grad.copy_(g)

    def project() -> None:
        uno.project_([q.grad for q in params if q.grad is not None], basis)

    set_grads()
    fused = torch.optim.Adam(params, lr=1e-4, fused=True)
    foreach = torch.optim.Adam(params, lr=1e-4, foreach=True)
    methods: Dict[str, Method] = {
        "uno": (set_grads, uoptim.ProjectedAdam(params, lr=1e-4, basis=basis).step),
        "project_+Adam(fused)": (set_grads, h.chain(project, fused.step)),
        "project_+Adam(foreach)": (set_grads, h.chain(project, foreach.step)),
    }
    return Case(f"ProjectedAdam grad ({len(shapes)} pieces)", k, numel(shapes), 32 + 8 * k, methods)


def _per_sample_case(batch: int) -> Optional[Case]:
    try:
        from uno.bench import per_sample as psb

        model, data = psb._setup("conv_vae", batch)
        got = psb._methods(model, data)
    except Exception as e:  # pragma: no cover - the drivers' models unavailable
        print(f"# per-sample Gram skipped: {e}")
        return None

    def fwd_bwd() -> None:  # one forward and one backward of the summed loss: the Gram's floor
        model.zero_grad(set_to_none=True)
        psb.elbo_per_sample(model, *data).sum().backward()

    methods: Dict[str, Method] = {
        "uno": (None, got["uno.per_sample.gram"]),
        "torch.func vmap+matmul": (None, got["vmap+matmul"]),
        "fwd+bwd alone": (None, fwd_bwd),
    }
    n = sum(q.numel() for q in model.parameters())
    return Case(f"per-sample Gram conv VAE (B={batch})", batch, n, 0, methods)


def cases(quick: bool) -> Iterator[Case]:
    """The table's configurations, built one at a time (a case's tensors are freed before the next)."""
    p = 10**5 if quick else 10**7
    yield _inner_case(p)
    yield from _project_cases(p, (1, 4) if quick else (1, 4, 16))
    yield from _combine_cases(10**4 if quick else 10**6, (8, 16) if quick else (16, 64))
    yield _ortho_case(8)
    yield _optim_case(p, 1)
    ps = _per_sample_case(16 if quick else 128)
    if ps is not None:
        yield ps


GEMM_N = 1024  # the float64 torch.mm of two GEMM_N x GEMM_N matrices: combine's compute reference
#: Steps of uno._C.fma_peak_cpu per short run (16 vector FMAs each at x86-64-v4: ~1.2 ms per run).
PEAK_ITERS = 1 << 19
#: Short runs per round: the round's peak is the fastest of them.
PEAK_SHOTS = 8


class PeakProbe:
    """The float64 FMA peak of ``threads`` threads (``uno._C.fma_peak_cpu``: a pure multiply-add
    loop, no memory), measured so that a shared machine does not lower it: each call (one per
    round, interleaved with the kernels) runs PEAK_SHOTS short loops and keeps the fastest, since
    another process's time slice or a helper thread started late only ever slows a run down. (One
    10 ms loop per round, as before, read a third of one thread's peak at 2 threads beside other
    work.) ``best`` holds each call's fastest time, ``fmas`` the multiply-adds of one short run."""

    def __init__(
        self, fn: Callable[[int, int], float], threads: int,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:  # fmt: skip
        self.fn, self.threads, self.clock = fn, threads, clock
        self.best: List[float] = []
        self.fmas = 0.0

    def __call__(self) -> None:
        times = []
        for _ in range(PEAK_SHOTS):
            t0 = self.clock()
            self.fmas = float(self.fn(PEAK_ITERS, self.threads))
            times.append(self.clock() - t0)
        self.best.append(min(times))


def _fma_peak(threads: int) -> Optional[PeakProbe]:
    """The FMA peak probe of ``threads`` threads, or None for a compiled core without it."""
    from uno import _C

    fn = getattr(_C, "fma_peak_cpu", None)
    if fn is None:
        return None
    return PeakProbe(fn, threads)


def measure(case: Case, n_rounds: int, threads: int) -> Dict[str, object]:
    """One table row: medians over interleaved rounds of ``case`` with the copy and the triad (and,
    for a case with multiply-adds, the float64 GEMM)."""
    methods = dict(_stream(case.p), **case.methods)
    peak = _fma_peak(threads) if case.fma_pp else None
    if case.fma_pp:
        a = torch.randn(GEMM_N, GEMM_N, dtype=torch.float64)
        methods["gemm"] = (None, partial(torch.mm, a, a))
        if peak is not None:
            methods["fma peak"] = (None, peak)
    t = rounds(methods, n_rounds)
    uno_t = t["uno"]
    row: Dict[str, object] = dict(
        kernel=case.kernel, k=case.k, P=case.p, threads=threads, bytes_per_param=case.bytes_pp,
        ms=statistics.median(uno_t) * 1e3, rounds=n_rounds,
    )  # fmt: skip
    if case.bytes_pp:
        row["GBps"] = case.bytes_pp * case.p / statistics.median(uno_t) / 1e9
        row["copy_GBps"] = 8 * case.p / statistics.median(t["copy"]) / 1e9
        # per round: (bytes / t_uno) / (copy bytes / t_copy)
        row["frac_copy"] = statistics.median(
            case.bytes_pp / 8 * c / u for c, u in zip(t["copy"], uno_t)
        )
        row["frac_triad"] = statistics.median(
            case.bytes_pp / 12 * c / u for c, u in zip(t["triad"], uno_t)
        )
    if case.fma_pp:
        row["GFMAps"] = case.fma_pp * case.p / statistics.median(uno_t) / 1e9
        row["gemm_GFMAps"] = GEMM_N**3 / statistics.median(t["gemm"]) / 1e9
        row["frac_gemm"] = statistics.median(
            case.fma_pp * case.p / GEMM_N**3 * g / u for g, u in zip(t["gemm"], uno_t)
        )
        if peak is not None:
            best = peak.best[-n_rounds:]  # each round's fastest short run (not the warm-up's)
            row["peak_GFMAps"] = peak.fmas / statistics.median(best) / 1e9
            row["frac_peak"] = statistics.median(
                case.fma_pp * case.p / peak.fmas * f / u for f, u in zip(best, uno_t)
            )
    speedups = []
    for name in case.methods:
        if name != "uno":
            s = statistics.median(b / u for b, u in zip(t[name], uno_t))
            row[f"vs {name}"] = s
            speedups.append(f"{name} {s:.2f}x")
    row["speedups"] = "; ".join(speedups)
    return row


COLUMNS = columns(
    "kernel:kernel:38; k:k:4:d; threads:thr:3:d; bytes_per_param:B/p:5:.0f; ms:ms:9:.2f; "
    "GBps:GB/s:6:.1f; frac_copy:%copy:6:.0f:100; frac_triad:%triad:6:.0f:100; "
    "GFMAps:GFMA/s:7:.1f; frac_gemm:%gemm:5:.0f:100; peak_GFMAps:peak:5:.0f; "
    "frac_peak:%peak:5:.0f:100; "
    "speedups:speed-up (median per round):40"
)


def _markdown(rows: Sequence[Dict[str, object]], header: Sequence[str]) -> str:
    cols = [c for c in COLUMNS]
    lines = [*(f"<!-- {x} -->" for x in header), ""]
    lines.append("| " + " | ".join(c.title for c in cols) + " |")
    lines.append("|" + "|".join("---" for _ in cols) + "|")
    for r in rows:
        lines.append("| " + " | ".join(c.cell(r).strip() for c in cols) + " |")
    return "\n".join(lines) + "\n"


DOC_BEGIN, DOC_END = "<!-- roofline:begin -->", "<!-- roofline:end -->"


def write_doc_table(doc: Path, table_md: str) -> bool:
    """Replaces what lies between the DOC_BEGIN and DOC_END lines of ``doc`` (docs/kernels.md's table
    of record) by ``table_md``; False (the file untouched) when the markers are missing."""
    text = doc.read_text()
    i, j = text.find(DOC_BEGIN), text.find(DOC_END)
    if i < 0 or j < i:
        return False
    doc.write_text(text[: i + len(DOC_BEGIN)] + "\n" + table_md + text[j:])
    return True


def record_machine(doc: Path) -> str:
    """The machine line of the table of record in ``doc`` ("" when there is none): the first
    ``<!-- uno ... on MACHINE, cpu ISA ... -->`` comment between the markers."""
    text = doc.read_text() if doc.is_file() else ""
    i, j = text.find(DOC_BEGIN), text.find(DOC_END)
    for line in text[i:j].splitlines() if 0 <= i < j else []:
        if line.startswith("<!-- uno ") and " on " in line:
            return line[len("<!-- uno ") :].split(" on ", 1)[1].rsplit(", cpu ISA", 1)[0]
    return ""


def same_cpu(record: str) -> bool:
    """Whether a record's machine line names this machine's CPU model (rows of another CPU must not
    replace a table of record by default: an Intel Xeon and an AMD EPYC VM of one size read very
    differently, docs/kernels.md "On a Zen 4 core")."""
    model = cpu_model()
    return bool(model) and f"({model})" in record


def _partial(args: argparse.Namespace, n_rounds: int, threads: Sequence[int], out: Path) -> str:
    """Why a run cannot stand in for the table of record by default ("" when it can): the record
    is the full sweep (P = 1e7, 1 and 2 threads, at least 7 rounds) written to the default place.
    A smoke test, a one-thread-count rerun or a run sent elsewhere with ``--out`` must not replace
    it silently; ``--doc`` still does, on purpose."""
    why = []
    if args.quick:
        why.append("--quick")
    if sorted(set(threads)) != [1, 2]:
        why.append(f"--threads {' '.join(map(str, threads))}")
    if n_rounds < 7:
        why.append(f"--rounds {n_rounds}")
    if Path(args.out).resolve() != Path(out).resolve():
        why.append(f"--out {args.out}")
    return ", ".join(why)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="uno bench roofline", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    ap.add_argument("--quick", action="store_true", help="P = 1e5, 1 thread, 2 rounds (seconds)")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 7; 2)")
    ap.add_argument("--threads", type=int, nargs="+", default=None, help="default: 1 2 (quick: 1)")
    ap.add_argument("--out", type=Path, default=Path(h.DEFAULT_CSV_DIR), help="directory of "
                    "roofline.md (overwritten) and roofline.csv (appended); default ./uno-bench")  # fmt: skip
    ap.add_argument("--no-csv", action="store_true", help="print the table only")
    ap.add_argument("--doc", type=Path, default=None, help="also replace the table between the "
                    f"'{DOC_BEGIN}' and '{DOC_END}' lines of this file (a source checkout's "
                    "bench/bench_roofline.py: docs/kernels.md)")  # fmt: skip
    return ap


def main(
    argv: Optional[Sequence[str]] = None, default_csv: Union[str, Path, None] = None,
    default_doc: Union[str, Path, None] = None,
) -> int:  # fmt: skip
    """``uno bench roofline [options]`` (``default_csv``: a file whose directory is the default
    ``--out``: the source checkout's bench/results; ``default_doc``: the table of record replaced
    without ``--doc``, and only by a record run (``_partial``) on the CPU model it was measured on;
    ``--doc FILE`` replaces FILE's table whatever CPU and sweep it came from)."""
    ap = parser()
    if default_csv is not None:
        ap.set_defaults(out=Path(default_csv).parent)
    args = ap.parse_args(list(sys.argv[1:] if argv is None else argv))
    n_rounds = args.rounds if args.rounds is not None else (2 if args.quick else 7)
    threads = args.threads if args.threads is not None else ([1] if args.quick else [1, 2])
    if n_rounds < 1 or any(t < 1 for t in threads):
        ap.error("--rounds and --threads must be >= 1")
    if args.doc is None and default_doc is not None and not args.no_csv:
        record = record_machine(Path(default_doc))
        partial = _partial(args, n_rounds, threads, ap.get_default("out"))
        if partial:
            print(f"# the table of record in {default_doc} stays: not a record run ({partial}; "
                  f"--doc {default_doc} replaces it)")  # fmt: skip
        elif same_cpu(record):
            args.doc = Path(default_doc)
        else:
            print(f"# the table of record in {default_doc} stays: it was measured on "
                  f"{record or 'an unnamed machine'}, not on {h.machine()} "
                  f"(--doc {default_doc} replaces it)")  # fmt: skip
    if args.doc is not None and not args.no_csv:  # refuse before the minutes of measuring
        text = args.doc.read_text() if args.doc.is_file() else ""
        if DOC_BEGIN not in text or DOC_END not in text:
            ap.error(f"--doc {args.doc}: no '{DOC_BEGIN}' ... '{DOC_END}' lines to replace")
    load = open("/proc/loadavg").read().split()[:3] if Path("/proc/loadavg").exists() else []
    from uno import _C

    header = [
        f"uno {uno.__version__} on {h.machine()}, cpu ISA {getattr(_C, 'cpu_isa', '?')}",
        f"load average before the run: {' '.join(load)}; {n_rounds} interleaved rounds; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
    ]
    for line in header:
        print(f"# {line}")
    for line in header_lines(COLUMNS):
        print(line)
    rows: List[Dict[str, object]] = []
    before = torch.get_num_threads()
    try:
        for th in threads:
            torch.set_num_threads(th)
            for case in cases(args.quick):
                row = measure(case, n_rounds, th)
                print(format_row(COLUMNS, row), flush=True)
                rows.append(row)
                del case
    finally:
        torch.set_num_threads(before)
    if not args.no_csv:
        args.out.mkdir(parents=True, exist_ok=True)
        table = _markdown(rows, header)
        (args.out / "roofline.md").write_text(table)
        if args.doc is not None and write_doc_table(args.doc, table):
            print(f"# replaced the table of record in {args.doc}")
        stamp = meta(torch.device("cpu"), 0)
        append_csv(
            args.out / "roofline.csv",
            [{**stamp, **{k: csv_cell(v) for k, v in r.items()}} for r in rows],
        )
        print(
            f"# wrote {args.out / 'roofline.md'}, appended {len(rows)} rows to {args.out / 'roofline.csv'}"
        )
    return 0
