"""The table's measuring cost and the retraining time: fresh-code f in inference mode gives the numbers
of the plain no-grad path, and a finished table is re-timed without touching the cached model."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch

from uno import cli
from uno.unlearn import evaluation
from uno.unlearn.models import CNNJudge, DCGANGenerator, MLPJudge, sample_images
from uno.unlearn.tasks import in_forget

RESULTS = Path(__file__).resolve().parents[2] / "experiments" / "results"


def _plain_hits(gen, judges, z, chunk):
    """The measurement as it was before inference mode: no_grad decoding per chunk, each judge."""
    hits = [0] * len(judges)
    for c in z.split(chunk):
        x = sample_images(gen, c, chunk=None)
        for i, j in enumerate(judges):
            hits[i] += int(in_forget(j, x, [1]).sum())
    return hits


def test_fresh_forget_on_a_gan_equals_the_plain_no_grad_path():
    torch.manual_seed(0)
    gen = DCGANGenerator(latent=8, width=4)
    judges = [MLPJudge(hidden=8).eval(), CNNJudge(width=4).eval()]
    with torch.no_grad():  # a judge that sees a 1 in part of the untrained generator's outputs
        h = judges[0].features(sample_images(gen, torch.randn(256, 8)))
        fc2 = judges[0].fc2
        fc2.weight.zero_()
        fc2.bias.zero_()
        fc2.weight[1] = torch.randn(h.shape[1])
        fc2.bias[1] = -(h @ fc2.weight[1]).median()  # class 1 for about half, class 0 otherwise
    ev = evaluation.FreshForget(judges, [1], 8, n=700, chunk=256)
    gen.train()
    f = ev(gen)
    hits = _plain_hits(gen, judges, ev.z, 256)
    assert f == [h / 700 for h in hits]  # exactly: the same kernels on the same images
    assert 0 < hits[0] < 700  # the comparison is not between two empty counts
    assert gen.training  # the model's modes are restored
    # and it still trains (no inference tensors left behind)
    gen.decode(torch.randn(4, 8)).sum().backward()
    assert all(p.grad is not None for p in gen.parameters())


@pytest.fixture
def vae_table(tmp_path, monkeypatch):
    """The committed VAE table, its retraining budget cut to one epoch (the test trains it)."""
    monkeypatch.setenv("UNO_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "table"
    shutil.copytree(RESULTS / "honest_vae", out)
    meta = json.loads((out / "meta.json").read_text())
    meta["args"]["vae_epochs"] = 1
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_retime_puts_a_new_training_time_into_the_table_and_leaves_the_cache_alone(
    vae_table, tmp_path
):
    before = _rows(vae_table / "runs.csv")
    assert cli.main(["bench", "table", "--retime", "--threads", "1", "--out", str(vae_table)]) == 0
    after = _rows(vae_table / "runs.csv")
    t = float(after[0]["train_time_s"])
    assert after[0]["method"] == "retrain" and 0 < t != float(before[0]["train_time_s"])
    assert all(float(r["train_time_s"]) == t for r in after if r["method"] == "retrain")
    # every other cell as it was written
    drop = lambda rs: [{k: v for k, v in r.items() if k != "train_time_s"} for r in rs]  # noqa: E731
    assert drop(after) == drop(before)
    assert not list((tmp_path / "cache").glob("*.safetensors"))  # nothing cached
    timing = json.loads((vae_table / "meta.json").read_text())["retrain_timing"]
    assert timing["train_time_s"] == pytest.approx(t) and timing["kind"] == "vae-retain"
    assert timing["cached_train_time_s"] == pytest.approx(58.8, abs=0.05)
    text = (vae_table / "table.md").read_text()
    assert "Retraining re-timed" in text and f"{t:.3g} (training wall time)" in text
    # the speed-ups divide by the new time
    ttf = [float(r["time_to_forget_median_s"]) for r in after if r["method"] == "retain-hat"]
    want = sum(t / x for x in ttf) / len(ttf)
    row = next(line for line in text.splitlines() if line.startswith("| retain-hat "))
    assert row.split("|")[6].strip().startswith(f"{want:.3g} ± ")
    # a second re-timing still names the cached model's time as the one replaced
    assert cli.main(["bench", "table", "--retime", "--out", str(vae_table)]) == 0
    again = json.loads((vae_table / "meta.json").read_text())["retrain_timing"]
    assert again["cached_train_time_s"] == pytest.approx(58.8, abs=0.05)


def test_retime_refuses_a_table_without_a_retrain_row(vae_table, capsys):
    rows = [r for r in _rows(vae_table / "runs.csv") if r["method"] != "retrain"]
    with open(vae_table / "runs.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    kept = {p.name: p.read_bytes() for p in vae_table.iterdir()}
    assert cli.main(["bench", "table", "--retime", "--out", str(vae_table)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("uno: error: --retime:") and "retrain row" in err[0]
    assert {p.name: p.read_bytes() for p in vae_table.iterdir()} == kept
    assert cli.main(["bench", "table", "--retime", "--out", str(vae_table / "missing")]) == 2


def test_train_time_only_times_the_recipe_without_caching(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("UNO_CACHE_DIR", str(tmp_path / "cache"))
    argv = ["train", "vae-retain", "--forget", "1", "--epochs", "1", "--time-only", "--quiet"]
    assert cli.main([*argv, "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("vae-retain: trained in ") and "not cached" in out
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())
    for bad in (["train", "judge", "--time-only"], [*argv, "--retrain"]):
        assert cli.main(bad) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--time-only" in err[0]


def test_merging_tables_without_sample_sheets_writes_the_table(tmp_path):
    """Folders made without samples.safetensors (older tables) merge into a table with no sheet (the
    merge used to save an empty sheet and fail drawing it)."""
    a = tmp_path / "a"
    shutil.copytree(RESULTS / "honest_gan_3seeds", a)
    (a / "samples.safetensors").unlink()
    out = tmp_path / "merged"
    assert cli.main(["bench", "table", "--merge", str(a), "--out", str(out)]) == 0
    assert not (out / "samples.safetensors").exists() and not (out / "samples.png").exists()
    assert (out / "table.md").read_text().splitlines()[4:9] == (
        (RESULTS / "honest_gan_3seeds" / "table.md").read_text().splitlines()[4:9]
    )
