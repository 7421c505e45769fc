"""``uno unlearn``'s default method (``--method auto``): per model, the lead of its honest table."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from uno.unlearn import methods
from uno.unlearn.config import RunConfig
from uno.unlearn.errors import UnoUserError
from uno.unlearn.methods.defaults import AUTO, DEFAULTS, model_kind, pick, resolve

RESULTS = Path(__file__).resolve().parents[2] / "experiments" / "results"


@pytest.mark.parametrize("model", ["vae", "gan", "diffusion"])
def test_config_resolves_auto_per_model(model: str) -> None:
    cfg = RunConfig(model=model)
    assert cfg.method == DEFAULTS[model]
    assert model in methods.from_config(cfg).models  # the default runs on its model
    assert RunConfig(model=model, method="uno").method == "uno"  # an explicit method stays


def test_model_file_kind_from_metadata(tmp_path: Path) -> None:
    from uno.unlearn import io
    from uno.unlearn.models import build

    g = build({"kind": "dcgan_g", "latent": 4, "width": 4})
    io.save_model(tmp_path / "g.safetensors", g)
    assert model_kind(str(tmp_path / "g.safetensors")) == "gan"
    assert RunConfig(model=str(tmp_path / "g.safetensors")).method == DEFAULTS["gan"]
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    assert model_kind(str(tmp_path / "junk.safetensors")) == "vae"  # loading reports it later
    assert resolve("surgery", "gan") == "surgery" and resolve(AUTO, "diffusion") == "surgery"


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_defaults_are_the_tables_leads() -> None:
    """The rule of methods/defaults.py on the committed 10-seed tables gives DEFAULTS."""
    assert pick(_csv(RESULTS / "honest_vae" / "runs.csv")) == DEFAULTS["vae"]
    assert pick(_csv(RESULTS / "honest_gan" / "runs.csv")) == DEFAULTS["gan"]
    rows = json.loads((RESULTS / "diffusion" / "rows.json").read_text())["rows"]
    assert pick(rows, stable="stable_0.02", fid="fid") == DEFAULTS["diffusion"]


def test_pick_rule() -> None:
    runs = [
        {"method": "a", "stable_steps": 3, "fid_after": 50.0},
        {"method": "a", "stable_steps": 4, "fid_after": 52.0},
        {"method": "b", "stable_steps": 2, "fid_after": 40.0},
        {"method": "b", "stable_steps": float("nan"), "fid_after": 40.0},  # 1 of 2: not enough
        {"method": "retrain", "stable_steps": 1, "fid_after": 1.0},
    ]
    assert pick(runs) == "a"
    with pytest.raises(ValueError, match="no method is stable"):
        pick(runs[2:4])


def test_method_model_mismatch_is_refused_before_loading() -> None:
    with pytest.raises(UnoUserError, match="fill needs a vae model, not a gan"):
        RunConfig(model="gan", method="fill").validate()


def test_cli_mismatch_one_line_nothing_written(tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = subprocess.run(
        [sys.executable, "-m", "uno.cli", "unlearn", "--model", "diffusion", "--method", "fill",
         "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "uno: error: --method fill needs a vae model, not a diffusion (--model diffusion)"
    ]
    assert not out.exists()


def test_table_refuses_a_method_its_model_lacks(tmp_path: Path) -> None:
    """The table checks every method before it loads a model or writes its folder."""
    out = tmp_path / "table"
    exp = Path(__file__).resolve().parents[2] / "experiments" / "unlearning_table.py"
    r = subprocess.run(
        [sys.executable, str(exp), "--model", "gan", "--methods", "uno", "fill", "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [
        "uno: error: --method fill needs a vae model, not a gan (--model gan)"
    ]
    assert not out.exists()
