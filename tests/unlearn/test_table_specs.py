"""A table row with its own budget and hyper-parameters (issue 15: the tuned 300-update picks as rows of
the honest table): ``uno bench table --methods "kick-hat:steps=300,kick=3,n_kick=10"``."""

from __future__ import annotations

import csv

import pytest

from uno import cli
from uno.unlearn import methods
from uno.unlearn.config import RunConfig
from uno.unlearn.errors import UnoUserError
from uno.unlearn.evaluation_table import budget, parse_method, row_config, rows


def test_a_spec_splits_into_run_options_and_the_methods_hyper_parameters():
    name, run, hp = parse_method("kick-hat:lr=0.001,steps=300,kick=3,n_kick=10")
    assert (name, run, hp) == ("kick-hat", {"lr": 1e-3, "steps": 300}, {"kick": 3.0, "n_kick": 10})
    assert type(hp["kick"]) is float and type(hp["n_kick"]) is int and type(run["steps"]) is int
    assert parse_method("retain-hat") == ("retain-hat", {}, {})
    assert parse_method("fill:n_nbr=256,steps=3e2") == ("fill", {"steps": 300}, {"n_nbr": 256})
    assert budget("retain-hat:lr=0.001,steps=300", 20) == 300 and budget("retain-hat", 20) == 20


@pytest.mark.parametrize(
    "spec, message",
    [
        ("kick-hat:bogus=1", "'bogus=1' is not key=value with a key of steps, lr"),
        ("kick-hat:kick", "'kick' is not key=value"),
        ("kick-hat:kick=3,kick=4", "kick given twice"),
        ("kick-hat:steps=1.5", "steps='1.5' is not a int"),
        ("kick-hat:kick=big", "kick='big' is not a float"),
        ("nope:steps=3", "unknown method 'nope'"),
    ],
)
def test_a_bad_spec_is_a_user_error(spec, message):
    with pytest.raises(UnoUserError, match=message):
        parse_method(spec)


def test_the_rows_configuration_carries_the_spec_to_the_method():
    table = {"steps": 20, "lr": 1e-3, "lam": 1e3}
    cfg = row_config(RunConfig, "kick-hat:steps=300,kick=3", table, seed=4, quiet=True)
    assert (cfg.method, cfg.steps, cfg.lr, cfg.seed, cfg.quiet) == ("kick-hat", 300, 1e-3, 4, True)
    m = methods.from_config(cfg)
    assert (m.kick, m.n_kick) == (3.0, methods.create("kick-hat").n_kick)
    cfg.validate()
    plain = row_config(RunConfig, "uno", table, seed=0)
    assert type(plain) is RunConfig and plain.steps == 20
    assert table == {"steps": 20, "lr": 1e-3, "lam": 1e3}  # the table's options are not changed


def test_a_spec_rows_not_reached_cell_names_its_own_budget():
    run = {"method": "retain-hat:steps=300", "fid_after": 40.0, "elbo_after": -174.0,
           "f_fresh_final": 0.01, "f_fresh2_final": 0.02, "f_attack_i": 0.01, "attack_ii_steps": 2,
           "stable_steps": None, "first_crossing": None, "time_to_forget_median_s": None,
           "per_step_median_s": 0.02}  # fmt: skip
    (row,) = rows([{**run, "seed": 0}], ["retain-hat:steps=300"], 20)
    assert row["method"] == "retain-hat:steps=300"
    assert row["stable steps (fresh, both judges)"] == "not reached (≤ 300)"


def test_a_row_with_fewer_seeds_than_the_table_says_how_many():
    run = {"fid_after": 40.0, "elbo_after": -174.0, "f_fresh_final": 0.01, "f_fresh2_final": 0.02,
           "f_attack_i": 0.01, "attack_ii_steps": 2, "stable_steps": 3, "first_crossing": 3,
           "time_to_forget_median_s": 0.1, "per_step_median_s": 0.02}  # fmt: skip
    runs = [
        {**run, "method": m, "seed": s} for m, n in (("a", 3), ("b", 1), ("c", 2)) for s in range(n)
    ]
    got = [r["method"] for r in rows(runs, ["a", "b", "c"], 20)]
    assert got == ["a", "b (1 seed)", "c (2 seeds)"]


def test_the_table_refuses_a_bad_spec_before_loading_or_writing(tmp_path, capsys):
    out = tmp_path / "t"
    argv = ["bench", "table", "--methods", "retain-hat", "kick-hat:bogus=1", "--out", str(out)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("uno: error: method spec 'kick-hat:bogus=1'")
    assert not out.exists()


def test_a_spec_row_runs_with_its_own_budget(tmp_path, monkeypatch):
    monkeypatch.setenv("UNO_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "out"
    spec = "kick-hat:steps=4,kick=2,n_kick=1"
    small = ["--seeds", "1", "--steps", "2", "--quick", "--fid-n", "300", "--vae-epochs", "1",
             "--judge-epochs", "1", "--fresh-n", "300", "--attack-n", "100", "--attack-steps", "2",
             "--threads", "1", "--skip-retrain"]  # fmt: skip
    assert (
        cli.main(["bench", "table", "--methods", "kick-hat", spec, *small, "--out", str(out)]) == 0
    )
    with open(out / "runs.csv") as f:
        runs = {r["method"]: r for r in csv.DictReader(f)}
    assert set(runs) == {"kick-hat", spec}
    assert runs["kick-hat"]["steps_run"] == "2" and runs[spec]["steps_run"] == "4"
    body = [line.split("|")[1].strip() for line in (out / "table.md").read_text().splitlines()
            if line.startswith("| ") and not line.startswith("| method")]  # fmt: skip
    assert body == ["kick-hat", spec]


def test_a_spec_whose_method_its_model_lacks_is_refused_like_the_plain_name(tmp_path, capsys):
    out = tmp_path / "g"
    argv = ["bench", "table", "--model", "gan", "--methods", "uno", "fill:steps=300"]
    assert cli.main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fill needs a vae model, not a gan" in err[0]
    assert not out.exists()
