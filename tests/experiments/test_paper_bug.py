"""experiments/paper_bug.py: the paper's swapped weight tuple makes its UNO step a ``retain-hat`` step.

A small paper-shaped VAE (hidden 128) and judge (hidden 64), briefly trained on 1,000 real digits: one step of each
configuration from the same state, then a two-seed, two-step run through the result writer.
"""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

import pytest
import torch

from uno.unlearn.data import load_mnist
from uno.unlearn.models import MLPJudge, MnistVAE
from uno.unlearn.tasks import VAETask
from uno.unlearn.train import train_judge, train_vae

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


@pytest.fixture(scope="module")
def pb():
    """experiments/paper_bug.py, imported when a test needs it: importing it registers the ``uno-paper``
    methods, which must not change what other test files collect."""
    sys.path.insert(0, str(EXPERIMENTS))
    import paper_bug

    return paper_bug


@pytest.fixture(scope="module")
def models(pb):
    torch.set_num_threads(1)
    train = load_mnist()[0].subset(torch.arange(1000))
    # trained enough that the sampler still draws some 1s (f ≈ 0.1 at seed 0), about a second
    vae = train_vae(MnistVAE(hidden=128), train, epochs=15, seed=1, quiet=True)
    judge = train_judge(MLPJudge(hidden=64), train, epochs=3, seed=1, quiet=True)
    return pb.Models(vae, judge, train)


def test_the_swap_in_drivers_terms(pb):
    """The published vae-o weights as the buggy step reads them: λ = 0, w_u = 1e3; as meant: λ = 1e3, w_u = 0."""
    passed = pb.call_tuple(pb.PUBLISHED)
    assert passed == (1.0, 0.0, 1e3, 0.0)
    read = pb.as_read_by_step(passed)
    assert (read.orthogonality, read.uniformity) == (0.0, 1e3)
    assert pb.drivers_terms(read) == {"lam": 0.0, "w_u": 1e3}
    assert pb.drivers_terms(pb.PUBLISHED) == {"lam": 1e3, "w_u": 0.0}
    cs = pb.configs()
    assert (cs["buggy"].method, cs["buggy"].lam, cs["buggy"].w_u) == ("uno-paper-hat", 0.0, 1e3)
    assert (cs["corrected"].method, cs["corrected"].lam, cs["corrected"].w_u) == (
        "uno-paper",
        1e3,
        0.0,
    )
    assert cs["retain-hat"].w_u == 1e3 and cs["retain-hat"].replay_forget
    assert not cs["buggy"].replay_forget


@pytest.mark.parametrize(
    "weights, match",
    [
        ((1.0, 1e3, 0.0, 0.5), "forget weight"),
        ((2.0, 1e3, 0.0, 0.0), "kl weight"),
        ((1.0, math.nan, 0.0, 0.0), "orthogonality weight"),
        ((1.0, 1e3, -1.0, 0.0), "uniformity weight"),
    ],
)
def test_drivers_terms_rejects_what_the_drivers_cannot_run(pb, weights, match):
    """(kl, orthogonality, uniformity, forget) the drivers cannot run raise, naming the weight."""
    with pytest.raises(ValueError, match=match):
        pb.drivers_terms(pb.PaperWeights(*weights))


def test_drivers_terms_rejects_non_numbers(pb):
    with pytest.raises(TypeError, match="uniformity weight must be a real number, got str"):
        pb.drivers_terms(pb.PaperWeights(1.0, 1e3, "0", 0.0))


def test_as_read_by_step_needs_four_weights(pb):
    with pytest.raises(ValueError, match="passed: expected the 4 weights"):
        pb.as_read_by_step((1.0, 0.0, 1e3))


def test_buggy_step_equals_retain_hat_and_corrected_does_not(pb, models):
    """Same state, batches and noise: the buggy-weights uno-paper step IS retain-hat; the corrected one is not."""
    rows = {(r["a"], r["b"]): r for r in pb.one_step_comparison(models, seed=3)}
    same = rows[("buggy", "retain-hat")]
    assert same["equal"]
    assert same["dir_rel"] <= 1e-6 and same["theta_rel"] <= 1e-6
    assert same["theta_max_abs"] <= 1e-6
    for pair in (("corrected", "buggy"), ("corrected", "retain")):
        r = rows[pair]
        assert not r["equal"]
        # the c² term changes the step by far more than rounding: a sizeable share of the update
        assert r["dir_rel"] > 1e-2 and r["theta_rel"] > 1e-2, (pair, r)


def test_the_equality_needs_the_papers_noise_order(pb, models, monkeypatch):
    """Without running the forget forward first, retain-hat's retain batch gets other noise: no equality.

    (Guards the comparison itself: an equality that held whatever the noise would prove nothing.)"""
    monkeypatch.setattr(pb.Config, "replay_forget", property(lambda self: False))
    rows = pb.one_step_comparison(models, seed=3)
    assert not rows[0]["equal"] and rows[0]["dir_rel"] > 1e-3


def test_run_seeds_and_results(pb, models, tmp_path):
    curves = pb.run_seeds(models, [0, 1], 2)
    assert curves.seeds == [0, 1]
    keys = {"buggy", "corrected", "retain-hat", "retain"}
    assert set(curves.f) == set(curves.f_paper) == set(curves.f_fresh) == keys
    for runs in (*curves.f.values(), *curves.f_paper.values(), *curves.f_fresh.values()):
        assert len(runs) == 2 and all(len(f) == 3 for f in runs)
    # same steps, so the same trajectories, on every monitor
    assert curves.f["buggy"] == curves.f["retain-hat"]
    assert curves.f_paper["buggy"] == curves.f_paper["retain-hat"]
    assert curves.f_fresh["buggy"] == curves.f_fresh["retain-hat"]
    assert (
        curves.f["buggy"][0][0] > 0.02
    )  # there is something to forget, so the equality says something
    assert curves.f_fresh["buggy"][0] != curves.f["buggy"][0]  # other codes than the monitor's
    assert curves.f["buggy"][0][0] == curves.f["corrected"][0][0]  # same start
    eq = pb.one_step_comparison(models, seed=0)
    md = pb.write_results(tmp_path, eq, curves, 0.02, {"command": "test"})
    for name in ("table.md", "runs.csv", "equality.csv", "meta.json", "curves.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert "| buggy | retain-hat |" in md and "`uno-paper-hat`" in md
    with open(tmp_path / "runs.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 8
    buggy1 = next(r for r in rows if r["config"] == "buggy" and r["seed"] == "1")
    assert [float(buggy1[f"f{s}"]) for s in range(3)] == pytest.approx(
        curves.f["buggy"][1], abs=1e-6
    )
    assert [float(buggy1[f"paper_f{s}"]) for s in range(3)] == pytest.approx(
        curves.f_paper["buggy"][1], abs=1e-6
    )
    assert [float(buggy1[f"fresh_f{s}"]) for s in range(3)] == pytest.approx(
        curves.f_fresh["buggy"][1], abs=1e-6
    )
    back = pb.read_runs(tmp_path / "runs.csv")
    assert back.seeds == [0, 1] and set(back.f) == set(curves.f)
    for got, want in (
        (back.f, curves.f),
        (back.f_paper, curves.f_paper),
        (back.f_fresh, curves.f_fresh),
    ):
        for k in want:
            assert got[k] == [pytest.approx(f, abs=1e-6) for f in want[k]]
    (tmp_path / "curves.png").unlink()
    assert pb.main(["--plot-only", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "curves.png").stat().st_size > 0


def test_read_runs_rejects_other_csv(pb, tmp_path):
    p = tmp_path / "runs.csv"
    p.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match=r"not a runs\.csv of experiments/paper_bug\.py"):
        pb.read_runs(p)


def test_first_below_paper_count_and_summary(pb):
    assert pb.first_below([0.1, 0.05, 0.01, 0.0], 0.02) == 2
    assert pb.first_below([0.1, 0.05], 0.02) is None
    # the paper's row t holds f after t − 1 updates
    assert pb.paper_count([0.1, 0.05, 0.01, 0.0], 0.02) == 3
    assert pb.paper_count([0.1, 0.05], 0.02) is None
    f = {"buggy": [[0.1, 0.01, 0.0], [0.1, 0.05, 0.01]], "retain": [[0.1, 0.1, 0.1]] * 2}
    fp = {"buggy": [[0.1, 0.1, 0.0], [0.1, 0.1, 0.1]], "retain": [[0.1, 0.1, 0.1]] * 2}
    rows = pb.summarize(pb.Curves([0, 1], f, fp, f), 0.02)
    assert rows[0]["reached"] == 2 and rows[0]["steps"] == "1.5 (1.5 ± 0.5) [1–2]"
    assert rows[0]["paper_reached"] == 1 and rows[0]["paper_steps"] == "3 (3.0) [3–3]"
    assert rows[0]["f1"] == "0.030 ± 0.020"
    assert rows[0]["fresh_steps"] == rows[0]["steps"] and rows[0]["fresh_end"] == "0.005 ± 0.005"
    assert rows[1]["reached"] == 0 and rows[1]["steps"] == "—" and rows[1]["paper_steps"] == "—"


@pytest.mark.parametrize(
    "kw, match", [({"seeds": [], "steps": 2}, "seeds"), ({"seeds": [0], "steps": 0}, "steps")]
)
def test_run_seeds_rejects_bad_input(pb, models, kw, match):
    with pytest.raises(ValueError, match=match):
        pb.run_seeds(models, **kw)


def test_run_seeds_rejects_unknown_key(pb, models):
    with pytest.raises(ValueError, match="keys: unknown configuration 'nope'"):
        pb.run_seeds(models, [0], 1, keys=("nope",))


def test_fresh_codes_are_fixed_per_seed_and_not_the_monitor(pb, models):
    a, b = pb.fresh_codes(0, 2), pb.fresh_codes(0, 2)
    assert a.shape == (pb.N_FRESH, 2) and torch.equal(a, b)
    assert not torch.equal(a, pb.fresh_codes(1, 2))
    task = VAETask(models.vae, models.judge, models.train, [1], seed=0)
    assert not torch.equal(task.z_monitor, a[: len(task.z_monitor)])
