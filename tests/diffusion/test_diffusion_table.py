"""The diffusion table command in its quick form (a tiny model, 3 updates, two methods)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_table_writes_every_output(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "experiments"))
    import diffusion_table

    out = tmp_path / "t"
    assert (
        diffusion_table.main(
            ["--quick", "--seeds", "1", "--methods", "uno", "esd", "--out", str(out)]
        )
        == 0
    )
    md = (out / "table.md").read_text()
    for name in ("| original |", "| retrain |", "| uno |", "| esd |", "speed-up vs retrain"):
        assert name in md
    rows = list(csv.reader((out / "table.csv").open()))
    assert [r[0] for r in rows[1:]] == ["original", "retrain", "uno", "esd"]
    data = json.loads((out / "rows.json").read_text())
    run = data["rows"][0]
    assert len(run["f_monitor"]) == 4 and len(run["f_monitor_cnn"]) == 4  # step 0 and 3 updates
    assert len(run["attack_forget_curve"]) == 11  # before the attack and after each of 10 steps
    assert (out / "samples.png").stat().st_size > 0
