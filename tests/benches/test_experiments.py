"""Smoke tests of the experiments: the comparison table (``uno bench table``, uno/bench/table.py) on a reduced
form, and the step-cost experiment (experiments/step_cost.py) on fresh models.

Two methods, one seed, a few steps, the quick pretraining budget, models cached in a temporary folder,
run through the ``uno bench table`` subcommand (part of the package: it loads nothing from the source
checkout). The full table is an experiment, not part of CI.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import uno

REPO = Path(__file__).resolve().parents[2]
EXPERIMENTS = REPO / "experiments"


def _load(name: str):
    """An experiments/ script as a module (tests may read the checkout; the installed command never does)."""
    sys.path.insert(0, str(EXPERIMENTS))
    spec = importlib.util.spec_from_file_location(name, EXPERIMENTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def table_mod():
    from uno.bench import table

    return table


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


def test_table_runs_from_the_package_alone(tmp_path):
    """`uno bench table --rebuild` from a folder outside the checkout loads no file of bench/ or
    experiments/, and rewrites the committed table.md of experiments/results/table exactly."""
    out = tmp_path / "table"
    shutil.copytree(EXPERIMENTS / "results" / "table", out)
    (out / "table.md").unlink()
    code = (
        "import json, sys\n"
        "from uno import cli\n"
        f"rc = cli.main(['bench', 'table', '--rebuild', '--out', {str(out)!r}])\n"
        "files = [getattr(m, '__file__', None) or '' for m in list(sys.modules.values())]\n"
        "print(json.dumps({'rc': rc, 'files': files}))\n"
    )
    env = dict(
        os.environ, PYTHONPATH=str(Path(uno.__file__).resolve().parents[1]), MPLBACKEND="Agg"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["rc"] == 0
    loaded = [f for f in res["files"] if f]
    assert any(f.endswith(os.path.join("uno", "bench", "table.py")) for f in loaded)
    for folder in (REPO / "bench", EXPERIMENTS):
        assert not [f for f in loaded if f.startswith(str(folder))], folder
    want = (EXPERIMENTS / "results" / "table" / "table.md").read_text()
    assert (out / "table.md").read_text() == want


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


def test_step_cost_bench(tmp_path, monkeypatch):
    """step_cost times the three steps round-robin, checks fast vs paper-faithful, writes its CSV."""
    monkeypatch.setenv("UNO_CACHE_DIR", str(tmp_path / "cache"))  # empty: fresh VAE and judge
    mod = _load("step_cost")
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

    mod = _load("step_cost")

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


def test_experiments_table_registers_the_paper_methods(tmp_path):
    """experiments/unlearning_table.py runs the package's table with uno-paper registered and λ passed."""
    from uno.unlearn import methods
    from uno.unlearn.run import RunConfig

    mod = _load("unlearning_table")
    assert "uno-paper" in methods.names() and "uno-paper-nograph" in methods.names()
    cfg = RunConfig(method="uno-paper", lam=5.0)
    assert methods.from_config(cfg).lam == 5.0
    out = tmp_path / "t"
    shutil.copytree(EXPERIMENTS / "results" / "table_gan", out)
    want = (out / "table.md").read_text()
    assert mod.main(["--rebuild", "--out", str(out)]) == 0
    assert (out / "table.md").read_text() == want
