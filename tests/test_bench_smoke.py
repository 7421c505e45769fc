"""Smoke tests of the bench scripts: the comparison table (bench/unlearning_table.py) on a reduced form,
and the step-cost bench (bench/bench_uno_step.py) on fresh models.

Two methods, one seed, a few steps, the quick pretraining budget, models cached in a temporary folder,
run through the ``uno bench table`` subcommand (which loads bench/unlearning_table.py by path from the
source checkout). The full table is a bench command, not part of CI.
"""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _load(name: str = "unlearning_table"):
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def table_mod():
    return _load()


def test_not_reached_flag(table_mod):
    """Runs that never reach τ are counted and never averaged in as their last step."""
    base = dict(
        per_step_median_s=0.01,
        fid_after=30.0,
        elbo_after=-180.0,
        f_after_5=0.1,
        cos2_mean=0.05,
        peak_mem_bytes=1e6,
    )
    runs = [
        dict(
            base,
            method="a",
            reached=True,
            steps_to_forget=3,
            time_to_forget_s=0.03,
            fid_at_forget=31.0,
        ),
        dict(
            base,
            method="a",
            reached=False,
            steps_to_forget=None,
            time_to_forget_s=None,
            fid_at_forget=None,
        ),
        dict(
            base,
            method="b",
            reached=False,
            steps_to_forget=None,
            time_to_forget_s=None,
            fid_at_forget=None,
        ),
    ]
    rows = {r["method"]: r for r in table_mod.summarize(runs, ["a", "b"], steps=50)}
    assert rows["a"]["not reached"] == "1/2"
    assert rows["a"]["steps to forget"].startswith("3 ± 0")
    assert rows["b"]["not reached"] == "1/1"
    assert rows["b"]["steps to forget"] == "not reached (≤ 50)"
    assert rows["b"]["time to forget (s)"] == "not reached (≤ 50)"
    assert rows["b"]["FID at forget"] == "-"


def test_bench_needs_source_checkout(monkeypatch, capsys):
    """Outside a source checkout `uno bench table` exits non-zero with a clear message."""
    from uno import cli

    monkeypatch.setattr(cli, "_bench_dir", lambda: None)
    assert cli.main(["bench", "table", "--seeds", "1"]) == 2
    err = capsys.readouterr().err
    assert "source checkout" in err and "bench/" in err


def test_table_end_to_end(table_mod, tmp_path, monkeypatch):
    from uno import cli

    monkeypatch.setenv("UNO_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "out"
    rc = cli.main(
        ["bench", "table", "--methods", "uno", "surgery", "--seeds", "1", "--steps", "3", "--quick",
         "--fid-n", "300", "--vae-epochs", "1", "--judge-epochs", "1",
         "--threads", "1", "--out", str(out)]
    )  # fmt: skip
    assert rc == 0
    for name in ("table.md", "runs.csv", "curves.csv", "curves.png", "samples.png", "meta.json"):
        assert (out / name).is_file(), name
    lines = (out / "table.md").read_text().splitlines()
    header = next(line for line in lines if line.startswith("| method"))
    assert [c.strip() for c in header.strip("|").split("|")] == list(table_mod.COLUMNS)
    body = [line for line in lines if line.startswith("| uno ") or line.startswith("| surgery ")]
    assert len(body) == 2
    with open(out / "runs.csv") as f:
        runs = list(csv.DictReader(f))
    assert {r["method"] for r in runs} == {"uno", "surgery"}
    for r in runs:
        assert r["steps_run"] == "3"
        # "not reached" is an explicit flag with an empty step count, never the last step
        if r["reached"] == "False":
            assert r["steps_to_forget"] == ""
        else:
            assert 0 <= int(r["steps_to_forget"]) <= 3
    with open(out / "curves.csv") as f:
        curve = list(csv.DictReader(f))
    assert len(curve) == 2 * 4  # steps 0..3 for each method
    n_nr = {
        m: sum(r["reached"] == "False" for r in runs if r["method"] == m)
        for m in ("uno", "surgery")
    }
    for m, k in n_nr.items():
        row = next(line for line in body if line.startswith(f"| {m} "))
        assert f"| {k}/1 |" in row
    # --rebuild rewrites the table and the figure from the saved CSVs, with the same numbers
    table = (out / "table.md").read_text()
    (out / "table.md").unlink()
    (out / "curves.png").unlink()
    assert cli.main(["bench", "table", "--rebuild", "--out", str(out)]) == 0
    assert (out / "table.md").read_text() == table
    assert (out / "curves.png").stat().st_size > 0


def test_bench_dir_lookup(tmp_path, monkeypatch):
    """`uno bench` finds bench/ through UNO_BENCH_DIR (and rejects a folder without the scripts)."""
    from uno import cli

    (tmp_path / "bench").mkdir()
    monkeypatch.setenv("UNO_BENCH_DIR", str(tmp_path / "bench"))
    assert cli._bench_dir() is None  # no unlearning_table.py there
    (tmp_path / "bench" / "unlearning_table.py").write_text("def main(argv):\n    return 0\n")
    assert cli._bench_dir() == tmp_path / "bench"


def test_step_cost_bench(tmp_path, monkeypatch):
    """bench_uno_step times the three steps round-robin, checks fast vs paper-faithful, writes its CSV."""
    monkeypatch.setenv("UNO_CACHE_DIR", str(tmp_path / "cache"))  # empty: fresh VAE and judge
    mod = _load("bench_uno_step")
    out = tmp_path / "step_cost.csv"
    argv = ["--steps", "1", "--rounds", "1", "--no-memory", "--threads", "1", "--csv", str(out)]
    assert mod.main(argv) == 0
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == ["surgery", "uno", "uno-paper"]
    assert all(float(r["ms_median"]) > 0 for r in rows)
    assert float(rows[0]["uno_over_surgery"]) > 0
    assert (
        float(rows[0]["dir_rel_diff"]) < 1e-3
    )  # the fast step is the paper's step, up to rounding


def test_step_cost_bench_gan(monkeypatch):
    """``--model gan`` builds the GAN task; the fast and paper-faithful steps agree there too."""
    import torch

    from uno.unlearn.models import DCGANCritic, DCGANGenerator, MLPJudge, sample_images

    mod = _load("bench_uno_step")

    def small_models(cfg):
        torch.manual_seed(0)
        gen, judge = DCGANGenerator(width=8), MLPJudge()
        # a judge that calls about half of the untrained generator's outputs a 1 (the rest a 0), so
        # that both sides of the GAN task are populated
        h = judge.features(sample_images(gen, torch.randn(512, gen.latent_dim)))
        with torch.no_grad():
            judge.fc2.weight.zero_()
            judge.fc2.bias.zero_()
            judge.fc2.weight[1] = torch.randn(h.shape[1])
            judge.fc2.bias[1] = -(h @ judge.fc2.weight[1]).median()
        return gen, judge, DCGANCritic(width=8)

    monkeypatch.setattr(mod, "_models", small_models)
    cfg = mod.Config(model="gan")
    task, method, opt = mod.make(cfg, "uno")
    assert type(task).__name__ == "GANTask" and len(task.z_forget) > 0
    before = [p.detach().clone() for p in task.params]
    mod.step(task, method, opt, 1)
    assert any(not torch.equal(a, p) for a, p in zip(before, task.params))
    assert mod.direction_difference(cfg) < 1e-3


def test_combine_bench_quick(tmp_path):
    """bench_combine --quick: every row measured, the kernel's result equals torch's float64 product."""
    from uno import _backends

    if "cpu" not in _backends.info("cpu").devices:
        pytest.skip(_backends.info("cpu").reason)
    mod = _load("bench_combine")
    out = tmp_path / "combine.csv"
    assert mod.main(["--quick", "--csv", str(out)]) == 0
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert {r["op"] for r in rows} == {"combine", "orthonormalize"}
    assert len(rows) == 2 * 2 + 2
    for r in rows:
        assert float(r["uno_ms"]) > 0 and float(r["torch_ms"]) > 0
        if r["op"] == "combine":
            assert float(r["rel_err"]) < 1e-6
