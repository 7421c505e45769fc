"""The diffusion table command in its quick form (a tiny model, 3 updates, two methods): one code path
for ``uno bench table --model diffusion`` and ``experiments/diffusion_table.py``."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from uno import cli
from uno.unlearn.diffusion import table

ROOT = Path(__file__).resolve().parents[2]


def test_quick_table_writes_every_output(tmp_path, monkeypatch):
    # its own cache: the session's would keep its 1-epoch judges for tests that count training calls
    monkeypatch.setenv("UNO_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "t"
    argv = ["bench", "table", "--model", "diffusion", "--quick", "--seeds", "2", "--methods", "uno",
            "kick-hat", "--out", str(out)]  # fmt: skip
    assert cli.main(argv) == 0
    md = (out / "table.md").read_text()
    for name in ("| original |", "| retrain |", "| uno |", "| kick-hat |", "speed-up vs retrain",
                 "judge 2 (CNN)", "load average"):  # fmt: skip
        assert name in md
    rows = list(csv.reader((out / "table.csv").open()))
    assert [r[0] for r in rows[1:]] == ["original", "retrain", "uno", "kick-hat"]
    assert [r[1] for r in rows[1:]] == ["1", "2", "2", "2"]  # the retrain row: its attacks per seed
    data = json.loads((out / "rows.json").read_text())
    run = data["rows"][0]
    assert len(run["f_monitor"]) == 4 and len(run["f_monitor_cnn"]) == 4  # step 0 and 3 updates
    at, f1, f2 = run["attack_forget_curve"]  # before the attack and after each of its 10 steps
    assert at == list(range(11)) and len(f1) == len(f2) == 11
    assert run["attack_retain_curve"][0] == [0, 1, 2]  # --quick: 2 steps, f after each
    assert 0.0 <= run["attack_retain_f"] <= 1.0 and run["fid_cnn"] is not None
    assert data["info"]["machine"]["load_avg"] and data["info"]["cnn_judge_acc"] > 0
    assert [r["seed"] for r in data["retrain"]] == [0, 1]
    assert (out / "samples.png").stat().st_size > 0

    merged = tmp_path / "m"
    assert table.main(["--merge", str(out), str(out), "--out", str(merged)]) == 0
    again = list(csv.reader((merged / "table.csv").open()))
    assert again == rows  # the same rows: merging one table with itself changes nothing
    twice = tmp_path / "m2"
    assert table.main(["--merge", str(merged), str(out), "--out", str(twice)]) == 0
    info = json.loads((twice / "rows.json").read_text())["info"]
    # a merged folder brings its own parts: 3 processes' folders and machines
    assert info["merged"] == [str(out)] * 3 and len(info["machine_parts"]) == 3


@pytest.mark.parametrize(
    "argv, msg",
    [
        (["--seeds", "0"], "--seeds must be at least 1"),
        (["--methods", "nope"], "unknown method"),
        (["--methods", "uno", "fill"], "--methods fill: not available for the diffusion model"),
        (["--merge", "/nonexistent"], "no rows.json"),
    ],
)
def test_bad_table_options_are_one_line_and_write_nothing(tmp_path, capsys, argv, msg):
    out = tmp_path / "never"
    with pytest.raises(SystemExit) as e:
        cli.main(["bench", "table", "--model", "diffusion", *argv, "--out", str(out)])
    assert e.value.code == 2 and msg in capsys.readouterr().err
    assert not out.exists()


def test_the_experiments_script_is_the_same_command():
    r = subprocess.run([sys.executable, str(ROOT / "experiments" / "diffusion_table.py"), "--help"],
                       capture_output=True, text=True, env={"PYTHONPATH": str(ROOT / "python")})  # fmt: skip
    assert r.returncode == 0 and "experiments/results/diffusion" in r.stdout
    assert cli._diffusion_table(["--seeds", "2", "--model=diffusion"])
    assert not cli._diffusion_table(["--model", "gan"])
