"""``uno bench table --seed-list``: a table on chosen seeds (the tuning seeds 100–102, or the rest of a
row's seeds), and ``--merge`` joining the same rows run on other seeds into one row per method."""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from pathlib import Path

import pytest

from uno import cli
from uno.bench import table
from uno.unlearn import evaluation_outputs as outputs

RESULTS = Path(__file__).resolve().parents[2] / "experiments" / "results"


def _runs(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def _write(path: Path, rows: list[dict[str, str]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _split(src: Path, dst: Path, keep: set[int]) -> None:
    """A copy of the table folder ``src`` with only the records of the seeds in ``keep``."""
    shutil.copytree(src, dst)
    for name in ("runs.csv", "curves.csv", "relearn.csv"):
        rows = [r for r in _runs(src / name) if int(float(r["seed"])) in keep]
        _write(dst / name, rows)
    meta = json.loads((src / "meta.json").read_text())
    meta["args"]["seeds"], meta["args"]["seed_list"] = len(keep), sorted(keep)
    meta.pop("merged_from", None)  # a fresh table, not a merge
    (dst / "meta.json").write_text(json.dumps(meta))


def _body(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("| ")]


def test_seeds_of_and_the_seed_text():
    ns = argparse.Namespace(seeds=3, seed_list=None)
    assert table.seeds_of(ns) == [0, 1, 2]
    ns.seed_list = [100, 101, 102]
    assert table.seeds_of(ns) == [100, 101, 102]
    assert table._seed_text([2, 0, 1]) == "0–2" and table._seed_text([101, 100, 102]) == "100–102"
    assert table._seed_text([3, 5]) == "3, 5" and table._seed_text([7]) == "7"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--seed-list", "1", "-2"], "--seed-list takes seeds >= 0"),
        (["--seed-list", "4", "4"], "--seed-list repeats a seed"),
        (["--seeds", "0"], "--seeds must be at least 1"),
    ],
)
def test_bad_seeds_are_refused_before_anything_is_written(tmp_path, capsys, argv, message):
    out = tmp_path / "t"
    assert cli.main(["bench", "table", "--methods", "uno", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("uno: error: ") and message in err[0]
    assert not out.exists()


def test_merging_the_same_rows_on_other_seeds_gives_the_whole_table(tmp_path):
    """The committed 10-seed VAE table cut into seeds 0–4 and 5–9 merges back into its own rows."""
    src = RESULTS / "honest_vae"
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "merged"
    _split(src, a, set(range(5)))
    _split(src, b, set(range(5, 10)))
    assert "over 5 seeds (5–9)" in "".join(table.rebuild(b) and (b / "table.md").read_text())
    assert cli.main(["bench", "table", "--merge", str(a), str(b), "--out", str(out)]) == 0
    key = lambda r: (r["method"], float(r["seed"]))  # noqa: E731
    for name in ("runs.csv", "curves.csv", "relearn.csv"):
        assert sorted(map(key, _runs(out / name))) == sorted(map(key, _runs(src / name))), name
    meta = json.loads((out / "meta.json").read_text())
    assert meta["args"]["seeds"] == 10 and meta["args"]["seed_list"] is None
    assert _body((out / "table.md").read_text()) == _body((src / "table.md").read_text())
    # a seed that two folders both have comes from the first (a rerun does not replace it)
    again = tmp_path / "again"
    assert cli.main(["bench", "table", "--merge", str(b), str(src), "--out", str(again)]) == 0
    first = {key(r): r for r in _runs(b / "runs.csv")}
    merged = [r for r in _runs(again / "runs.csv") if key(r) in first]
    assert merged and all(r == first[key(r)] for r in merged)


def test_merging_into_one_of_the_sources_keeps_its_sources(tmp_path):
    """``--merge OUT other --out OUT`` used to replace OUT's ``merged_from`` with ``[OUT, other]``."""
    src = RESULTS / "honest_vae"
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    _split(src, a, {0, 1})
    _split(src, b, {2, 3})
    _split(src, c, {4})
    outputs.merge([a, b], a)
    assert json.loads((a / "meta.json").read_text())["merged_from"] == [str(a), str(b)]
    outputs.merge([a, c], a)
    meta = json.loads((a / "meta.json").read_text())
    assert meta["merged_from"] == [str(a), str(b), str(c)]
    assert sorted({int(float(r["seed"])) for r in _runs(a / "runs.csv")}) == [0, 1, 2, 3, 4]
    assert meta["args"]["seed_list"] is None and meta["args"]["seeds"] == 5
