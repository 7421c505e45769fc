"""``uno bench roofline``: the one command behind docs/kernels.md's roofline table (no timing asserted).

The quick run must write the table (markdown) and its CSV rows for every kernel, and each baseline
must compute what the uno method it is compared with computes.
"""

from __future__ import annotations

import csv

import pytest
import torch

import uno
from uno.bench import roofline

pytest.importorskip("uno._backends.cpu")


def test_quick_run_writes_table_and_csv(tmp_path, capsys):
    assert roofline.main(["--quick", "--rounds", "1", "--out", str(tmp_path)]) == 0
    md = (tmp_path / "roofline.md").read_text()
    with open(tmp_path / "roofline.csv") as f:
        rows = list(csv.DictReader(f))
    kernels = {r["kernel"].split(" (")[0] for r in rows}
    assert {"inner dot_norms", "project_ Basis", "combine", "orthonormalize"} <= kernels
    assert any(k.startswith("ProjectedAdam") for k in kernels)
    for r in rows:
        assert float(r["ms"]) > 0
        if r["kernel"].startswith(("project_", "combine")):
            assert float(r["frac_copy"]) > 0 and float(r["frac_triad"]) > 0
            assert "x" in r["speedups"]
    assert md.count("\n| ") == len(rows) + 1  # the header row and one row per CSV row
    assert "load average" in md
    out = capsys.readouterr().out
    assert "wrote" in out


def test_quick_run_replaces_the_doc_table_and_peak_columns(tmp_path):
    doc = tmp_path / "kernels.md"
    doc.write_text(f"intro\n{roofline.DOC_BEGIN}\nold table\n{roofline.DOC_END}\noutro\n")
    argv = ["--quick", "--rounds", "1", "--out", str(tmp_path), "--doc", str(doc)]
    assert roofline.main(argv) == 0
    text = doc.read_text()
    table = (tmp_path / "roofline.md").read_text()
    assert text == f"intro\n{roofline.DOC_BEGIN}\n{table}{roofline.DOC_END}\noutro\n"
    assert "%peak" in table
    with open(tmp_path / "roofline.csv") as f:
        combine = [r for r in csv.DictReader(f) if r["kernel"].startswith("combine")]
    assert combine and all(float(r["peak_GFMAps"]) > 0 for r in combine)
    assert all(0 < float(r["frac_peak"]) for r in combine)


def test_doc_without_markers_is_refused_before_measuring(tmp_path, capsys):
    doc = tmp_path / "kernels.md"
    doc.write_text("no markers\n")
    with pytest.raises(SystemExit) as e:
        roofline.main(["--quick", "--out", str(tmp_path), "--doc", str(doc)])
    assert e.value.code == 2
    assert doc.read_text() == "no markers\n" and not (tmp_path / "roofline.md").exists()
    assert "roofline:begin" in capsys.readouterr().err


def test_rounds_runs_setup_before_every_call():
    calls = []
    methods = {
        "a": (lambda: calls.append("setup a"), lambda: calls.append("a")),
        "b": (None, lambda: calls.append("b")),
    }
    t = roofline.rounds(methods, 2)
    assert len(t["a"]) == len(t["b"]) == 2
    assert calls == ["setup a", "a", "b"] + ["setup a", "a", "b"] * 2  # warm-up, then A B A B


def test_bad_options_exit_2():
    with pytest.raises(SystemExit) as e:
        roofline.main(["--rounds", "0", "--no-csv"])
    assert e.value.code == 2


def test_combine_baselines_compute_what_uno_computes():
    case = next(iter(roofline._combine_cases(1000, (8,))))
    results = {}
    for name, (_, fn) in case.methods.items():
        fn()
        out = case.methods["uno"][1].args[0][0]  # the shared output buffer
        results[name] = out.clone()
    assert torch.allclose(results["uno"], results["torch f64 mm"], rtol=1e-6, atol=1e-5)
    assert torch.allclose(results["uno"], results["torch f32 mm"], rtol=1e-3, atol=1e-3)


def test_orthonormalize_baseline_spans_the_same_space():
    case = roofline._ortho_case(3)
    basis = case.methods["uno"][1]()
    q = case.methods["torch qr"][1]()
    assert isinstance(basis, uno.Basis) and basis.k == 3
    qb = basis.buffer[:3].double()
    qq = q.T.double()
    assert torch.allclose(qb.T @ (qb @ qq.T), qq.T, atol=1e-4)


def test_peak_probe_keeps_the_fastest_short_run_of_each_call():
    """The FMA peak is each round's fastest of PEAK_SHOTS short runs (a slowed run never counts),
    timed by the probe's clock (a fake one here: nothing is timed)."""
    durations = iter([5, 3, 9, 4, 3, 8, 6, 7, 2, 2, 2, 2, 2, 2, 2, 1])  # two calls' runs
    now = [0.0]

    def clock() -> float:
        return now[0]

    def fn(iters: int, threads: int) -> float:
        assert (iters, threads) == (roofline.PEAK_ITERS, 2)
        now[0] += next(durations)
        return 16.0 * iters * threads

    probe = roofline.PeakProbe(fn, 2, clock=clock)
    assert roofline.PEAK_SHOTS == 8
    probe()
    probe()
    assert probe.best == [3.0, 1.0] and probe.fmas == 16.0 * roofline.PEAK_ITERS * 2


def _record(tmp_path, machine_line):
    doc = tmp_path / "kernels.md"
    doc.write_text(
        f"intro\n{roofline.DOC_BEGIN}\n<!-- uno 0.1.0 on {machine_line}, cpu ISA x86-64-v4 -->\n"
        f"old table\n{roofline.DOC_END}\noutro\n"
    )
    return doc


def test_the_default_doc_is_replaced_only_by_a_run_on_the_same_cpu(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(roofline, "cpu_model", lambda: "Some CPU 9000")
    other = _record(tmp_path, "vm x86_64 2 cpus (Intel Xeon), torch 2.13.0+cpu")
    before = other.read_text()
    argv = ["--quick", "--rounds", "1", "--out", str(tmp_path)]
    assert roofline.main(argv, default_doc=other) == 0
    assert other.read_text() == before  # measured on another CPU: kept
    assert "stays" in capsys.readouterr().out
    assert roofline.record_machine(other) == "vm x86_64 2 cpus (Intel Xeon), torch 2.13.0+cpu"
    assert roofline.main([*argv, "--doc", str(other)], default_doc=other) == 0
    assert other.read_text() != before  # an explicit --doc replaces it whatever CPU it came from
    same = _record(tmp_path, "vm x86_64 2 cpus (Some CPU 9000), torch 2.13.0+cpu")
    monkeypatch.setattr(roofline, "cases", lambda quick: iter(()))  # a full run, measuring nothing
    assert roofline.main([], default_csv=tmp_path / "roofline.csv", default_doc=same) == 0
    assert "old table" not in same.read_text() and "replaced the table" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, why",
    [
        (["--quick"], "--quick"),
        (["--threads", "2"], "--threads 2"),
        (["--rounds", "3"], "--rounds 3"),
        (["--out", "elsewhere"], "--out elsewhere"),
    ],
)
def test_a_partial_run_on_the_same_cpu_keeps_the_record(tmp_path, monkeypatch, capsys, argv, why):
    monkeypatch.setattr(roofline, "cpu_model", lambda: "Some CPU 9000")
    monkeypatch.setattr(roofline, "cases", lambda quick: iter(()))
    monkeypatch.chdir(tmp_path)
    same = _record(tmp_path, "vm x86_64 2 cpus (Some CPU 9000), torch 2.13.0+cpu")
    before = same.read_text()
    assert roofline.main(argv, default_csv=tmp_path / "roofline.csv", default_doc=same) == 0
    assert same.read_text() == before
    out = capsys.readouterr().out
    assert "stays: not a record run" in out and why in out


def test_record_machine_of_a_file_without_a_record_is_empty(tmp_path, monkeypatch):
    assert roofline.record_machine(tmp_path / "missing.md") == ""
    (tmp_path / "plain.md").write_text("no markers\n")
    assert roofline.record_machine(tmp_path / "plain.md") == ""
    monkeypatch.setattr(roofline, "cpu_model", lambda: "")
    assert not roofline.same_cpu("vm (x) ()")  # no model known: never the same CPU
