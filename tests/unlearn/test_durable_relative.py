"""The durable study's scoring against the retrained model (experiments/durable/table.py), for a digit
the judges see in a model that never saw it (digit 8: the CNN judge calls 14.5 % of the retrained
VAE's samples 8s, so f < τ is out of reach for the gold standard itself)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

DURABLE = Path(__file__).resolve().parents[2] / "experiments" / "durable"


def _load_table():
    """table.py as a module of its own name; its folder leaves sys.path afterwards (its study.py
    would shadow the experiments' ``study`` package for other tests)."""
    saved_path, saved_grid = list(sys.path), sys.modules.get("grid")
    spec = importlib.util.spec_from_file_location("durable_table", DURABLE / "table.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path[:] = saved_path
        if saved_grid is None:
            sys.modules.pop("grid", None)
        else:
            sys.modules["grid"] = saved_grid
    return mod


table = _load_table()

#: the retrained model on one seed: f before (per judge) and after attack (i)
RETRAIN = {"seed": 0, "f0_1": 0.05, "f0_2": 0.14, "f_attack1": 0.06, "f_attack2": 0.15}


def _run(f1: list[float], f2: list[float], att: tuple[float, float], **kw) -> dict:
    return {"seed": 0, "config": "lr=0.001,steps=300", "f1": f1, "f2": f2, "f_end1": f1[-1],
            "f_end2": f2[-1], "f_attack1": att[0], "f_attack2": att[1], **kw}  # fmt: skip


def test_stable_relative_counts_the_excess_over_the_retrained_model():
    # judge 2 never gets below τ = 0.02 in absolute terms, but from update 2 on it is within τ of
    # the retrained model's 0.14 (and judge 1 within τ of its 0.05) for 10 updates
    r = _run([0.3] * 2 + [0.06] * 10, [0.4, 0.3] + [0.155] * 10, (0.0, 0.0))
    assert table.stable_relative(r, RETRAIN) == 2
    assert table.stable_relative(r, RETRAIN, window=11) is None  # only 10 updates below
    worse = _run([0.3] * 2 + [0.08] * 10, [0.4, 0.3] + [0.155] * 10, (0.0, 0.0))
    assert table.stable_relative(worse, RETRAIN) is None  # judge 1: 0.03 above the retrained


def test_relative_table_scores_durability_against_the_same_attack_on_the_retrained_model(tmp_path):
    ok = _run([0.3] + [0.05] * 10, [0.3] + [0.14] * 10, (0.07, 0.165))  # +0.01 / +0.015 after
    bad = dict(_run([0.3] + [0.05] * 10, [0.3] + [0.14] * 10, (0.07, 0.19)), seed=1)  # +0.04
    ret = [RETRAIN, dict(RETRAIN, seed=1)]
    (tmp_path / "report").mkdir()
    method = next(iter(table.G.grid()))
    (tmp_path / "report" / f"{method}.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in (ok, bad))
    )
    text = table.relative_table(tmp_path, ret, ("report", "report_extra"))
    line = next(x for x in text.splitlines() if x.startswith(f"| {method} "))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1] == "1/2"  # seed 0 within τ of the retrained model, seed 1 not
    assert cells[2] == "+0.028 ± 0.018"  # the larger judge's excess: +0.015 and +0.040
    assert cells[3] == "1 [1–1], 2/2"
