"""The diffusion unlearning table (issue 19): every method on the cached class-conditional denoiser.

    PYTHONPATH=python OMP_NUM_THREADS=1 python experiments/diffusion_table.py --seeds 2   # the defaults: the table
    PYTHONPATH=python python experiments/diffusion_table.py --quick --out /tmp/dt   # seconds (CI)

For each seed and method: one ``uno.unlearn.run`` run (``--model diffusion``, forget class 1) with f
measured after every update by both judges on the run's monitor codes (which no loss sees), then on the
final model: f on ``--fresh`` fresh codes, the retain-class FID by both judges, and the two relearning
attacks. The same measures for the original model and for the model retrained without class 1 (the gold
standard; trained once, cached). Writes ``table.md``, ``table.csv``, ``rows.json`` and
``samples.png`` (class-1 samples before/after per method) under ``--out``
(default ``experiments/results/diffusion``). docs/diffusion.md explains every column.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import diffusion_report

from uno.unlearn import io, metrics
from uno.unlearn.data import load_mnist
from uno.unlearn.diffusion import evaluate as ev
from uno.unlearn.diffusion.task import RetainFID
from uno.unlearn.diffusion.train import get_or_train
from uno.unlearn.loading import Loaded
from uno.unlearn.models import CNNJudge
from uno.unlearn.run import RunConfig, loop, prepare, summarize
from uno.unlearn.tasks import in_forget
from uno.unlearn.train import cache_dir, train_judge
from uno.unlearn.train import get_or_train as get_judge

RESULTS = Path(__file__).resolve().parent / "results" / "diffusion"
METHODS = ["uno", "uno-s", "surgery", "retain", "uno-hat", "uno-s-hat", "surgery-hat",
           "retain-hat", "esd", "salun"]  # fmt: skip
TAUS = (0.02, 0.18)
FORGET = 1


def second_judge(train: Any, quiet: bool, tiny: bool = False) -> torch.nn.Module:
    """The CNN judge (width 32, seed 1, 10 epochs; ``tiny``: width 4, one epoch on 500 digits), cached."""
    name = "tiny" if tiny else "e10"
    path = cache_dir() / f"diffusion-table-cnn-judge-{name}.safetensors"
    if path.is_file():
        return io.load_model(path, "cnn_judge")[0].eval()
    torch.manual_seed(1)
    data = train.subset(torch.arange(500)) if tiny else train
    j = CNNJudge(width=4 if tiny else 32)
    j = train_judge(j, data, epochs=1 if tiny else 10, seed=1, quiet=quiet)
    io.save_model(path, j, {"seed": 1, "tiny": tiny})
    return j.eval()


def accuracy(judge: torch.nn.Module, data: Any) -> float:
    with torch.no_grad():
        return float((judge(data.x).argmax(1) == data.y).float().mean())


def final_measures(model, judges, train, a, f_orig) -> dict[str, Any]:
    """f on fresh codes, FIDs by both judges, both relearning attacks, on one model."""
    z = ev.fresh_codes(a.fresh)
    f1, f2 = ev.fractions(model, judges, z, [FORGET])
    fid = [RetainFID(j, train, [FORGET], a.fid_n)(model) for j in judges]
    keep = ~train.forget_mask([FORGET])
    za = z[: a.attack_codes]
    att1 = ev.relearn(model, train.subset(keep), judges, za, [FORGET], steps=a.attack_steps,
                      every=a.attack_every)  # fmt: skip
    ones = train.subset(torch.nonzero(~keep)[:64, 0])
    att2 = ev.relearn(model, ones, judges, za, [FORGET], steps=10, batch=64)
    half = [0.5 * f for f in f_orig]
    back = [next((s for s, fs in enumerate(att2) if fs[k] >= half[k]), None) for k in range(2)]
    return {
        "f_fresh": f1, "f_fresh_cnn": f2, "fid": fid[0], "fid_cnn": fid[1],
        "attack_retain_f": att1[-1][0], "attack_retain_f_cnn": att1[-1][1],
        "attack_forget_steps": back[0], "attack_forget_steps_cnn": back[1],
        "attack_retain_curve": att1, "attack_forget_curve": att2,
    }  # fmt: skip


def one_run(method: str, seed: int, model, judges, data, a) -> tuple[dict[str, Any], Any]:
    cfg = RunConfig(model="diffusion", method=method, steps=a.steps, seed=seed, lr=a.lr, lam=a.lam,
                    w_u=a.w_u, n_monitor=a.monitor, fid_n=a.fid_n, tau=TAUS[0], quiet=True,
                    batch=a.batch, ckpt_every=a.steps, fresh_n=0)  # fmt: skip
    run = prepare(cfg, None, loaded=Loaded(copy.deepcopy(model), judges[0], None, "diffusion"),
                  data=data, write_pngs=False)  # fmt: skip
    task = run.task
    hist = [ev.fractions(run.model, judges, task.z_monitor.reshape(-1, 1, 28, 28), [FORGET])]

    def both() -> (
        float
    ):  # f by both judges on the step's monitor samples (the loop keeps judge 1's)
        x = task.monitor_images()
        hist.append([float(in_forget(j, x, [FORGET]).float().mean()) for j in judges])
        return hist[-1][0]

    task.forget_fraction = both  # type: ignore[method-assign]
    summary = summarize(run, loop(run))
    worst = [max(h) for h in hist]  # both judges below τ
    med = summary["per_step_median_s"]
    row: dict[str, Any] = {"method": method, "seed": seed, "per_step_s": med,
                           "peak_mem_bytes": summary["peak_mem_bytes"], "cos2_mean": summary["cos2_mean"],
                           "f_monitor": [h[0] for h in hist], "f_monitor_cnn": [h[1] for h in hist]}  # fmt: skip
    for tau in TAUS:
        s = metrics.stable_steps_to_forget(worst, tau)
        row[f"stable_{tau}"] = s
        row[f"first_{tau}"] = metrics.steps_to_forget(worst, tau)
        row[f"time_{tau}"] = metrics.time_to_forget_median([r["dt"] for r in run.rows[1:]], s)
    return row, run.model


def reference_rows(orig, retrained, meta_r, judges, train, a) -> tuple[dict, dict, list[float]]:
    z = ev.fresh_codes(a.attack_codes)
    f_orig = ev.fractions(orig, judges, z, [FORGET])
    rows = []
    for name, m in (("original", orig), ("retrain", retrained)):
        r = {"method": name, "seed": 0, **final_measures(m, judges, train, a, f_orig)}
        rows.append(r)
    rows[1]["train_s"] = meta_r.get("train_s")
    return rows[0], rows[1], f_orig


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--methods", nargs="+", default=METHODS)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--first-seed", type=int, default=0, help="seeds first..first+seeds-1")
    ap.add_argument(
        "--merge", nargs="+", default=None, help="combine the rows.json of these folders"
    )
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--lam", type=float, default=0.02)
    ap.add_argument("--w-u", dest="w_u", type=float, default=0.01)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--monitor", type=int, default=128)
    ap.add_argument("--fresh", type=int, default=500)
    ap.add_argument("--fid-n", dest="fid_n", type=int, default=500)
    ap.add_argument("--attack-steps", type=int, default=100)
    ap.add_argument("--attack-every", type=int, default=20)
    ap.add_argument("--attack-codes", type=int, default=128)
    ap.add_argument("--quick", action="store_true", help="a tiny model and budget (CI)")
    ap.add_argument("--out", default=str(RESULTS))
    a = ap.parse_args(argv)
    if a.merge:
        return merge([Path(p) for p in a.merge], Path(a.out))
    if a.quick:
        a.steps, a.monitor, a.fresh, a.fid_n, a.batch = 3, 8, 8, 8, 8
        a.attack_steps, a.attack_every, a.attack_codes = 2, 1, 8
    torch.set_num_threads(1)
    out = Path(a.out)
    quiet = a.quick
    train, held = load_mnist()
    size = {"steps": 20, "width": 16, "depth": 1, "emb": 8} if a.quick else {}
    orig, _, meta = get_or_train(quiet=quiet, **size)
    retrained, _, meta_r = get_or_train(quiet=quiet, exclude=[FORGET], **size)
    judge1, _ = get_judge("judge", quiet=quiet, **({"epochs": 1} if a.quick else {}))
    judges = [judge1, second_judge(train, quiet, tiny=a.quick)]
    acc = [accuracy(j, held) for j in judges] + ev.conditional_accuracy(orig, judges, a.fresh)
    fid_all = RetainFID(judges[0], train, [], a.fid_n)(orig)  # every class: the model's quality
    t0 = time.time()
    o_row, r_row, f_orig = reference_rows(orig, retrained, meta_r, judges, train, a)
    rows, models = [], {}
    for seed in range(a.first_seed, a.first_seed + a.seeds):
        for m in a.methods:
            row, model = one_run(m, seed, orig, judges, (train, held), a)
            row.update(final_measures(model, judges, train, a, f_orig))
            rows.append(row)
            if seed == a.first_seed:
                models[m] = model
            print(f"[{time.time() - t0:7.0f}s] seed {seed} {m}: stable {row['stable_0.02']}, "
                  f"f_fresh {row['f_fresh']:.3f}/{row['f_fresh_cnn']:.3f}, FID {row['fid']:.2f}", flush=True)  # fmt: skip
            diffusion_report.write(out, o_row, r_row, rows, info(a, meta, meta_r, acc, fid_all))
        if seed == a.first_seed:  # the first seed's models, as soon as they exist
            diffusion_report.figure(out / "samples.png", orig, retrained, models, FORGET)
    return 0


def merge(folders: Sequence[Path], out: Path) -> int:
    """One table from the ``rows.json`` of several runs of this script (e.g. seeds split over two
    processes); the first folder's reference rows and settings, every folder's method rows of the
    seeds that have every method."""
    parts = [json.loads((f / "rows.json").read_text()) for f in folders]
    rows = [r for p in parts for r in p["rows"]]
    methods = {r["method"] for r in rows}
    done = {
        s
        for s in {r["seed"] for r in rows}
        if {r["method"] for r in rows if r["seed"] == s} == methods
    }
    rows = [
        r for r in rows if r["seed"] in done
    ]  # complete seeds only (a stopped process leaves one)
    rows.sort(
        key=lambda r: (r["seed"], METHODS.index(r["method"]) if r["method"] in METHODS else 99)
    )
    first = parts[0]
    diffusion_report.write(out, first["original"], first["retrain"], rows, first["info"])
    return 0


def info(a, meta, meta_r, acc, fid_all) -> dict[str, Any]:
    return {"args": vars(a), "train_s": meta.get("train_s"), "retrain_s": meta_r.get("train_s"),
            "judge_acc": acc[0], "cnn_judge_acc": acc[1], "samples_acc": acc[2],
            "samples_acc_cnn": acc[3], "fid_all_classes": fid_all,
            "threads": torch.get_num_threads()}  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
