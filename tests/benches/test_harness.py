"""The package's microbenchmarks (uno.bench): the harness, the baselines' arithmetic, the CLI entry points.

Nothing here checks a timing (the machine is shared): the tests check that every benchmark measures the
work it says (its baselines compute what uno computes), that its rows and CSV are well formed, and that
bad options are refused before anything is written.
"""

from __future__ import annotations

import argparse
import csv
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import uno
from uno import _backends
from uno.bench import harness as h

CPU_KERNELS = "cpu" in _backends.info("cpu").devices


def _ctx(reps: int = 1, **args) -> h.Context:
    return h.Context(torch.device("cpu"), reps, torch.get_num_threads(), argparse.Namespace(**args))


def test_append_csv_extends_an_older_header(tmp_path):
    """Rows with new columns rewrite an older file once with the union header; old cells are kept."""
    path = tmp_path / "r.csv"
    path.write_text("date,method,ms\n2026-01-01,a,1.5\n")
    h.append_csv(path, [dict(date="2026-02-02", method="b", ms=2.0, version="0.1.0")])
    h.append_csv(path, [dict(date="2026-03-03", method="c", ms=3.0, version="0.2.0")])
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["date", "method", "ms", "version"]
    assert [(r["method"], r["ms"], r["version"]) for r in rows] == [
        ("a", "1.5", ""),
        ("b", "2.0", "0.1.0"),
        ("c", "3.0", "0.2.0"),
    ]


def test_append_csv_new_file_and_no_rows(tmp_path):
    path = tmp_path / "sub" / "r.csv"
    h.append_csv(path, [])
    assert not path.exists()
    h.append_csv(path, [dict(a=1, b=2), dict(a=3, c=4)])
    with open(path) as f:
        assert list(csv.DictReader(f)) == [
            dict(a="1", b="2", c=""),
            dict(a="3", b="", c="4"),
        ]


def test_timeit_runs_setup_untimed_and_rejects_bad_reps():
    calls = []
    t = h.timeit(
        lambda: calls.append("f"),
        torch.device("cpu"),
        3,
        min_time=0,
        setup=lambda: calls.append("s"),
    )
    assert t >= 0
    assert calls == ["s", "f"] * 4  # the warm-up, then 3 timed calls, each after its setup
    with pytest.raises(ValueError, match="reps"):
        h.timeit(lambda: None, torch.device("cpu"), 0)


def test_interleaved_runs_rounds_in_order():
    order = []
    out = h.interleaved(
        {"a": lambda: order.append("a"), "b": lambda: order.append("b")}, torch.device("cpu"), 2
    )
    assert order == ["a", "b"] * 3  # a warm-up round, then 2 timed rounds
    assert {k: len(v) for k, v in out.items()} == {"a": 2, "b": 2}
    with pytest.raises(ValueError, match="rounds"):
        h.interleaved({}, torch.device("cpu"), 0)


def test_columns_format_numbers_strings_and_blanks():
    cols = [
        h.Column("m", "method", 6),
        h.Column("n", "P", 7, ",d"),
        h.Column("f", "%", 6, ".1f", 100.0),
    ]
    assert h.header_lines(cols)[0] == "method       P      %"
    assert h.format_row(cols, dict(m="uno", n=12345, f=0.5)) == "uno     12,345   50.0"
    assert h.format_row(cols, dict(m="x", n=1, f=math.nan)) == "x            1"
    assert math.isnan(h.ratio(None, 1.0))  # no baseline measured
    assert h.ratio(2.0, 0.5) == 4.0


def test_project_baselines_do_the_same_projection():
    """(a) naive and (b) qr project the gradient onto the same complement as uno.project_."""
    from uno.bench import project

    gen = torch.Generator().manual_seed(0)
    shapes = [(30, 4), (7,), (0,), (55,)]
    mk = lambda: [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]  # noqa: E731
    g, vectors = mk(), [mk() for _ in range(3)]
    outs = []
    for fn in (project.naive_project, project.qr_project, lambda x, v: uno.project_(x, v)):
        x = [t.clone() for t in g]
        fn(x, vectors)
        outs.append(torch.cat([t.reshape(-1) for t in x]))
    torch.testing.assert_close(outs[0], outs[2])
    torch.testing.assert_close(outs[1], outs[2])


@pytest.mark.skipif(not CPU_KERNELS, reason="the cpu backend is not built here")
def test_project_measure_rows():
    from uno.bench import project

    rows = project.measure(project.Config("convvae", 20_000, 1), _ctx())
    assert [r["method"] for r in rows] == ["copy", "naive", "torch qr", "uno Basis", "uno raw"]
    for r in rows:
        assert r["P"] == rows[0]["P"] and r["k"] == 1 and r["dtype"] == "float32"
    assert rows[0]["frac_copy"] == 1.0 and rows[0]["GBps"] > 0
    naive = rows[1]
    assert math.isnan(naive["ms"]) or naive["speedup_naive"] == pytest.approx(1.0)


def test_optim_naive_projection_matches_project_():
    from uno.bench import optim

    gen = torch.Generator().manual_seed(1)
    shapes = [(20, 3), (11,), (4, 4, 2)]
    g = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
    basis = uno.orthonormalize(
        [[torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes] for _ in range(2)],
        backend="reference",
    )
    a, b = [t.clone() for t in g], [t.clone() for t in g]
    optim.naive_project(a, basis.buffer[: basis.k])
    uno.project_(b, basis)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y)


def test_optim_methods_step_every_parameter():
    """Every timed optimizer method changes the parameters (no method is a silent no-op)."""
    from uno.bench import optim

    gen = torch.Generator().manual_seed(2)
    shapes = [(16, 8), (8,)]
    params = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen)
    basis = uno.orthonormalize(
        [[torch.randn(s, generator=gen) for s in shapes]], backend="reference"
    )
    methods = optim._methods(params, basis)
    assert "uno ProjectedAdam" in methods and "(a) naive+Adam(foreach)" in methods
    for name, fn in methods.items():
        before = [p.detach().clone() for p in params]
        fn()
        assert any(not torch.equal(a, p) for a, p in zip(before, params)), name


def test_per_sample_baseline_gram_matches_uno():
    """The vmap baseline and uno.per_sample.gram compute the same Gram on the bench's model and loss."""
    import uno.per_sample as ps
    from uno.bench import per_sample

    model, batch = per_sample._setup("mnist_vae", 4)
    f = torch.cat([g.flatten(1) for g in per_sample.vmap_grads(model, *batch)], 1)
    torch.testing.assert_close(
        ps.gram(model, per_sample.elbo_per_sample, *batch),
        (f.double() @ f.double().T),
        rtol=1e-4,
        atol=1e-3,
    )


@pytest.mark.skipif(not CPU_KERNELS, reason="the cpu backend is not built here")
def test_combine_bench_quick_from_another_directory(tmp_path):
    """``python -m uno.bench combine --quick`` from any folder: its default CSV lands there (not in the
    package), every row is measured, the kernel's result equals torch's float64 product."""
    import os

    env = dict(os.environ, PYTHONPATH=str(Path(uno.__file__).resolve().parents[1]))
    cmd = [sys.executable, "-m", "uno.bench", "combine", "--quick", "--reps", "1"]
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = tmp_path / h.DEFAULT_CSV_DIR / "combine.csv"
    assert f"appended 6 rows to {h.DEFAULT_CSV_DIR}/combine.csv" in r.stdout
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert {r["op"] for r in rows} == {"combine", "orthonormalize"}
    assert len(rows) == 2 * 2 + 2
    for row in rows:
        assert float(row["uno_ms"]) > 0 and float(row["torch_ms"]) > 0
        assert row["version"] == uno.__version__ and row["threads"] == "1"
        assert row["device"] == "cpu"
        if row["op"] == "combine":
            assert float(row["rel_err"]) < 1e-6


def test_per_sample_bench_in_child_processes(tmp_path):
    """per-sample measures each model in a fresh interpreter and collects its rows (JSON round trip)."""
    from uno.bench import per_sample

    out = tmp_path / "ps.csv"
    argv = ["--quick", "--reps", "1", "--models", "mnist_vae", "--csv", str(out)]
    assert per_sample.main(argv) == 0
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows][-1] == "uno.per_sample.gram"
    assert {r["model"] for r in rows} == {"mnist_vae"} and {r["batch"] for r in rows} == {"16"}
    assert rows[-1]["time_vs_uno"] == "1.0" and int(rows[-1]["params"]) == 632_788


#: ``uno bench`` command lines the harness refuses, and what its message says.
BAD_OPTIONS = {
    "project --reps 0": "--reps must be >= 1",
    "optim --threads 0": "--threads must be >= 1",
    "per-sample --device cuda": "per-sample runs on cpu",
    "combine --device tpu": "combine runs on cpu, cuda",
}


@pytest.mark.parametrize("cmd", sorted(BAD_OPTIONS))
def test_bad_options_exit_2_before_writing(cmd, tmp_path, capsys):
    from uno.bench import run

    argv = cmd.split()
    out = tmp_path / "x.csv"
    with pytest.raises(SystemExit) as e:
        run(argv[0], [*argv[1:], "--csv", str(out)])
    assert e.value.code == 2
    assert BAD_OPTIONS[cmd] in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the message on a machine without CUDA"
)
def test_cuda_device_without_cuda_is_refused(capsys):
    from uno.bench import run

    with pytest.raises(SystemExit):
        run("project", ["--device", "cuda", "--no-csv"])
    assert "torch sees no CUDA device" in capsys.readouterr().err


def test_entry_points_dispatch(capsys):
    from uno import bench, cli

    with pytest.raises(ValueError, match="unknown benchmark 'nope'"):
        bench.run("nope")
    assert bench.main([]) == 2
    assert "usage: python -m uno.bench" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli.main(["bench", "project", "--help"])
    assert e.value.code == 0
    assert "uno bench project" in capsys.readouterr().out


def test_bad_specs_are_refused():
    from uno.bench.shapes import numel, scaled_shapes

    with pytest.raises(ValueError, match="key:title:width"):
        h.columns("ms:ms")
    with pytest.raises(ValueError, match="model must be one of"):
        scaled_shapes("resnet", 1000)
    with pytest.raises(ValueError, match="numel must be >= 1"):
        scaled_shapes("convvae", 0)
    assert abs(numel(scaled_shapes("transformer", 10**6)) - 10**6) < 10**4


def test_machine_names_the_cpu_model(monkeypatch):
    from uno.bench import records

    model = records.cpu_model()
    if Path("/proc/cpuinfo").exists():
        names = [
            line.partition(":")[2].strip()
            for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines()
            if line.partition(":")[0].strip() == "model name"
        ]
        if names:
            assert model == names[0]
    if model:
        assert f"({model})" in records.machine()
    monkeypatch.setattr(records, "cpu_model", lambda: "")  # no model known: no empty brackets
    assert "()" not in records.machine() and records.machine().endswith(
        f"torch {torch.__version__}"
    )
