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
    """The CI form of the honest table: 2 methods × 1 seed × 3 steps on the quick budgets, with the
    retrain row, both judges, the stable rule and both attacks (shortened), then --rebuild and --merge."""
    from uno import cli

    monkeypatch.setenv("UNO_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "out"
    small = ["--seeds", "1", "--steps", "3", "--quick", "--fid-n", "300", "--vae-epochs", "1",
             "--judge-epochs", "1", "--fresh-n", "500", "--attack-n", "200", "--attack-steps", "3",
             "--threads", "1"]  # fmt: skip
    assert (
        cli.main(["bench", "table", "--methods", "uno", "retain-hat", *small, "--out", str(out)])
        == 0
    )
    for name in ("table.md", "runs.csv", "curves.csv", "relearn.csv", "curves.png", "relearn.png",
                 "samples.png", "samples.safetensors", "meta.json"):  # fmt: skip
        assert (out / name).is_file(), name
    lines = (out / "table.md").read_text().splitlines()
    header = next(line for line in lines if line.startswith("| method"))
    assert [c.strip() for c in header.strip("|").split("|")] == list(table_mod.COLUMNS)
    body = [line for line in lines if line.startswith("| ") and not line.startswith("| method")]
    assert [b.split("|")[1].strip() for b in body] == ["retrain", "uno", "retain-hat"]
    assert "Mean ± std over 1 seeds" in (out / "table.md").read_text()
    with open(out / "runs.csv") as f:
        runs = list(csv.DictReader(f))
    assert [r["method"] for r in runs] == ["retrain", "uno", "retain-hat"]
    for r in runs:
        assert 0.0 <= float(r["f_attack_i"]) <= 1.0 and float(r["f_original"]) > 0
        assert r["attack_ii_steps"] == "" or 1 <= float(r["attack_ii_steps"]) <= 10
    for r in runs[1:]:
        assert r["steps_run"] == "3" and float(r["fid2_after"]) >= 0
        # not stable within 3 steps (10 logged steps below τ are needed): empty, never the last step
        assert r["stable_steps"] == ""
        assert r["first_crossing"] == "" or 0 <= int(float(r["first_crossing"])) <= 3
    assert float(runs[0]["train_time_s"]) > 0
    with open(out / "curves.csv") as f:
        curve = list(csv.DictReader(f))
    assert len(curve) == 2 * 4 and all(0 <= float(c["f_fresh2"]) <= 1 for c in curve)
    with open(out / "relearn.csv") as f:
        rel = list(csv.DictReader(f))
    assert len(rel) == 3 * (4 + 11)  # attack (i): steps 0..3; attack (ii): 0..10; 3 models
    # --rebuild rewrites the table and the figures from the saved files, with the same numbers
    table = (out / "table.md").read_text()
    for name in ("table.md", "curves.png", "relearn.png", "samples.png"):
        (out / name).unlink()
    assert cli.main(["bench", "table", "--rebuild", "--out", str(out)]) == 0
    assert (out / "table.md").read_text() == table
    assert all((out / n).stat().st_size > 0 for n in ("curves.png", "relearn.png", "samples.png"))
    # a second table (another method, no retrain row) merged with the first: one table, the retrain row
    out2 = tmp_path / "out2"
    argv2 = ["bench", "table", "--methods", "surgery", *small, "--skip-retrain", "--out", str(out2)]
    assert cli.main([*argv2, "--seed-list", "3"]) == 0  # another seed than the first table's
    assert "| retrain " not in (out2 / "table.md").read_text()
    assert "over 1 seeds (3)" in (out2 / "table.md").read_text()
    with open(out2 / "runs.csv") as f:
        assert [(r["method"], float(r["seed"])) for r in csv.DictReader(f)] == [("surgery", 3.0)]
    both = tmp_path / "both"
    assert cli.main(["bench", "table", "--merge", str(out), str(out2), "--out", str(both)]) == 0
    merged = (both / "table.md").read_text()
    assert [m for m in ("| retrain ", "| uno ", "| retain-hat ", "| surgery ") if m in merged]
    assert merged.count("| retrain ") == 1 and "| surgery " in merged and "| uno " in merged


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
