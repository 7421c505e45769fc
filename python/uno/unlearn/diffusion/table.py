"""The diffusion unlearning table (issue 19): ``uno bench table --model diffusion``.

    uno bench table --model diffusion --seeds 10 --out uno-table-diffusion    # the table
    uno bench table --model diffusion --quick --seeds 1 --methods uno esd     # seconds (CI)
    uno bench table --model diffusion --merge A B --out AB                    # seeds split over processes

For each seed and method: one ``uno.unlearn.run`` run (``--model diffusion``, forget class 1) with f
measured after every update by both judges (the MLP ``judge`` and the CNN ``judge2`` of
:func:`uno.unlearn.train.get_or_train`) on the run's monitor codes, which no loss sees; then on the final
model: f on ``--fresh`` fresh codes, the retain-class FID by both judges, and the two relearning attacks
of :mod:`uno.unlearn.attacks` with the labelled denoising loss. The same measures for the original model
and for the model retrained without class 1 (the gold standard; trained once, cached; its attacks seeded
per seed like the VAE/GAN table's). Writes ``table.md``, ``table_short.md``, ``table.csv``,
``rows.json``, ``curves.png`` and ``samples.png`` (class-1 samples before/after per method) under
``--out``; ``experiments/diffusion_table.py`` is this command with ``experiments/results/diffusion`` as
the default folder. docs/diffusion.md explains every column.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch

from uno.unlearn import metrics
from uno.unlearn.data import ImageData, load_mnist
from uno.unlearn.diffusion import evaluate as ev
from uno.unlearn.diffusion import report
from uno.unlearn.diffusion.task import RetainFID
from uno.unlearn.evaluation import FreshForget, both
from uno.unlearn.loading import Loaded
from uno.unlearn.run import RunConfig, loop, prepare, summarize
from uno.unlearn.tasks import in_forget

METHODS = ["uno", "uno-s", "surgery", "retain", "uno-hat", "uno-s-hat", "surgery-hat",
           "retain-hat", "kick-hat", "esd", "salun"]  # fmt: skip
TAUS = (0.02, 0.18)
FORGET = 1
#: where the table goes when ``--out`` is not given (the current directory, never the package)
DEFAULT_OUT = "uno-table-diffusion"


@dataclass
class Reference:
    """What every model of one table is measured with."""

    judges: list[torch.nn.Module]  # judge 1 (MLP), judge 2 (CNN)
    fresh: FreshForget  # the table's fresh codes, both judges
    fids: tuple[RetainFID, RetainFID]  # retain-class FID by each judge (the same samples)
    data: tuple[ImageData, ImageData]  # (retain, forget) training digits, for the attacks
    f_original: float = float("nan")  # the original's f on every fresh code, both judges


def accuracy(judge: torch.nn.Module, data: Any) -> float:
    with torch.no_grad():
        return float((judge(data.x).argmax(1) == data.y).float().mean())


def attack_fields(model: Any, ref: Reference, a: argparse.Namespace, seed: int) -> dict[str, Any]:
    """Both relearning attacks on (a copy of) ``model``: the table's fields and curves."""
    att_i, att_ii = ev.relearn(model, ref.fresh, ref.data, [FORGET], seed, steps=a.attack_steps,
                               every=a.attack_every, n_step=a.attack_codes)  # fmt: skip
    return {
        "attack_retain_f": att_i.f_final, "attack_retain_f_mlp": att_i.final[0],
        "attack_retain_f_cnn": att_i.final[1],
        "attack_forget_steps": att_ii.steps_until(0.5 * ref.f_original),
        "attack_retain_curve": [att_i.at, att_i.f1, att_i.f2],
        "attack_forget_curve": [att_ii.at, att_ii.f1, att_ii.f2],
    }  # fmt: skip


def quality(model: Any, ref: Reference, summary: Optional[dict] = None) -> dict[str, Any]:
    """f on every fresh code (both judges) and the retain FIDs (``summary``: the run's, reused)."""
    f1, f2 = ref.fresh.pair(model)
    if summary is not None:
        fid, fid2 = summary["fid_after"], summary["fid2_after"]
    else:
        fid, fid2 = (f(model) for f in ref.fids)
    return {"f_fresh": f1, "f_fresh_cnn": f2, "fid": fid, "fid_cnn": fid2}


def one_run(
    method: str, seed: int, model: Any, ref: Reference, data: Any, a: Any
) -> tuple[dict, Any]:
    """One unlearning run and its row (f per update by both judges, stable steps, time, memory)."""
    cfg = RunConfig(model="diffusion", method=method, steps=a.steps, seed=seed, lr=a.lr, lam=a.lam,
                    w_u=a.w_u, n_monitor=a.monitor, fid_n=a.fid_n, tau=TAUS[0], quiet=True,
                    batch=a.batch, ckpt_every=a.steps, fresh_n=0)  # fmt: skip
    loaded = Loaded(copy.deepcopy(model), ref.judges[0], None, "diffusion", judge2=ref.judges[1])
    run = prepare(cfg, None, loaded=loaded, data=data, write_pngs=False)
    task = run.task
    hist = [ev.fractions(run.model, ref.judges, task.z_monitor.reshape(-1, 1, 28, 28), [FORGET])]

    def f_both() -> float:
        """f by both judges on the step's monitor samples (the loop keeps judge 1's)."""
        x = task.monitor_images()
        hist.append([float(in_forget(j, x, [FORGET]).float().mean()) for j in ref.judges])
        return hist[-1][0]

    task.forget_fraction = f_both  # type: ignore[method-assign]
    summary = summarize(run, loop(run))
    worst = [max(h) for h in hist]  # forgotten when both judges see f < τ
    row: dict[str, Any] = {"method": method, "seed": seed, "per_step_s": summary["per_step_median_s"],
                           "peak_mem_bytes": summary["peak_mem_bytes"], "cos2_mean": summary["cos2_mean"],
                           "f_monitor": [h[0] for h in hist], "f_monitor_cnn": [h[1] for h in hist]}  # fmt: skip
    for tau in TAUS:
        s = metrics.stable_steps_to_forget(worst, tau)
        row[f"stable_{tau}"] = s
        row[f"first_{tau}"] = metrics.steps_to_forget(worst, tau)
        row[f"time_{tau}"] = metrics.time_to_forget_median([r["dt"] for r in run.rows[1:]], s)
    row.update(quality(run.model, ref, summary))
    row.update(attack_fields(run.model, ref, a, seed))
    return row, run.model


def parser(default_out: Union[str, Path] = DEFAULT_OUT) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="uno bench table --model diffusion",
        description="the diffusion unlearning table (forget class 1 of the class-conditional denoiser)",
    )
    ap.add_argument("--model", choices=["diffusion"], default="diffusion")
    ap.add_argument("--methods", nargs="+", default=METHODS)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--first-seed", type=int, default=0, help="seeds first..first+seeds-1")
    ap.add_argument(
        "--merge", nargs="+", default=None, help="combine the rows.json of these folders"
    )
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--lam", type=float, default=0.02)
    ap.add_argument("--w-u", dest="w_u", type=float, default=0.01)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--monitor", type=int, default=128, help="codes f is measured on per update")
    ap.add_argument("--fresh", type=int, default=500, help="fresh codes of the final f")
    ap.add_argument("--fid-n", dest="fid_n", type=int, default=500)
    ap.add_argument("--attack-steps", type=int, default=100, help="attack (i)'s steps")
    ap.add_argument("--attack-every", type=int, default=100, help="attack (i): f every k steps")
    ap.add_argument("--attack-codes", type=int, default=128, help="codes per measured attack step")
    ap.add_argument("--quick", action="store_true", help="a tiny model and budget (CI)")
    ap.add_argument(
        "--out", default=str(default_out), help=f"output folder (default: {default_out})"
    )
    return ap


def _check(ap: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    for k in ("seeds", "steps", "batch", "monitor", "fresh", "fid_n", "attack_steps", "attack_every",
              "attack_codes"):  # fmt: skip
        if getattr(a, k) < 1:
            ap.error(f"--{k.replace('_', '-')} must be at least 1, got {getattr(a, k)}")
    unknown = [m for m in a.methods if m not in _method_names()]
    if unknown:
        ap.error(f"unknown method(s) {', '.join(unknown)} (see `uno methods`)")
    from uno.unlearn.methods import create

    other = [m for m in a.methods if "diffusion" not in create(m).models]
    if other:
        ap.error(f"--methods {', '.join(other)}: not available for the diffusion model")
    for f in a.merge or []:
        if not (Path(f) / "rows.json").is_file():
            ap.error(f"--merge {f}: no rows.json there (not a finished diffusion table)")


def _method_names() -> list[str]:
    from uno.unlearn.methods import names

    return list(names())


def main(argv: Optional[Sequence[str]] = None, default_out: Union[str, Path] = DEFAULT_OUT) -> int:
    """Entry point (``uno bench table --model diffusion [options]``)."""
    from uno.bench.table import machine
    from uno.unlearn.diffusion.train import get_or_train
    from uno.unlearn.train import get_or_train as get_judge

    ap = parser(default_out)
    a = ap.parse_args(argv)
    _check(ap, a)
    if a.merge:
        return merge([Path(p) for p in a.merge], Path(a.out))
    if a.quick:
        a.steps, a.monitor, a.fresh, a.fid_n, a.batch = 3, 8, 8, 8, 8
        a.attack_steps, a.attack_every, a.attack_codes = 2, 1, 8
    torch.set_num_threads(1)
    out, quiet = Path(a.out), a.quick
    train, held = load_mnist()
    size: dict[str, Any] = {"steps": 20, "width": 16, "depth": 1, "emb": 8} if a.quick else {}
    orig: Any
    orig, _, meta = get_or_train(quiet=quiet, **size)
    retrained: Any
    retrained, _, meta_r = get_or_train(quiet=quiet, exclude=[FORGET], **size)
    jkw: dict[str, Any] = {"epochs": 1} if a.quick else {}
    judges = [get_judge("judge", quiet=quiet, **jkw)[0], get_judge("judge2", quiet=quiet, **jkw)[0]]
    for m in (orig, retrained):  # decode(z) draws class-1 samples (what FreshForget decodes)
        m.decode_labels = [FORGET]
    side = train.forget_mask([FORGET])
    ref = Reference(
        judges, FreshForget(judges, [FORGET], orig.latent_dim, n=a.fresh, seed=ev.FRESH_SEED),
        (RetainFID(judges[0], train, [FORGET], a.fid_n), RetainFID(judges[1], train, [FORGET], a.fid_n)),
        (train.subset(torch.nonzero(~side)[:, 0]), train.subset(torch.nonzero(side)[:, 0])),
    )  # fmt: skip
    ref.f_original = both(ref.fresh(orig))
    acc = [accuracy(j, held) for j in judges] + ev.conditional_accuracy(orig, judges, a.fresh)
    fid_all = RetainFID(judges[0], train, [], a.fid_n)(orig)  # every class: the model's quality
    t0 = time.time()
    seeds = range(a.first_seed, a.first_seed + a.seeds)
    o_row = {"method": "original", "seed": a.first_seed, **quality(orig, ref),
             **attack_fields(orig, ref, a, a.first_seed)}  # fmt: skip
    q_rt = quality(retrained, ref)
    r_rows = [{"method": "retrain", "seed": s, "train_s": meta_r.get("train_s"), **q_rt,
               **attack_fields(retrained, ref, a, s)} for s in seeds]  # fmt: skip
    print(f"[{time.time() - t0:7.0f}s] original and retrain rows", flush=True)
    meta_info = info(a, meta, meta_r, acc, fid_all, machine())
    rows, models = [], {}
    for seed in seeds:
        for m in a.methods:
            row, model = one_run(m, seed, orig, ref, (train, held), a)
            rows.append(row)
            if seed == a.first_seed:
                models[m] = model
            print(f"[{time.time() - t0:7.0f}s] seed {seed} {m}: stable {row['stable_0.02']}, "
                  f"f_fresh {row['f_fresh']:.3f}/{row['f_fresh_cnn']:.3f}, FID {row['fid']:.2f}, "
                  f"attack (i) {row['attack_retain_f']:.3f}", flush=True)  # fmt: skip
            meta_info["load_avg_end"] = os.getloadavg()
            report.write(out, o_row, r_rows, rows, meta_info)
        if seed == a.first_seed:  # the first seed's models, as soon as they exist
            report.figure(out / "samples.png", orig, retrained, models, FORGET)
    return 0


def merge(folders: Sequence[Path], out: Path) -> int:
    """One table from the ``rows.json`` of several runs (seeds split over processes): the first folder's
    original row and settings, every folder's retrain rows, and the method rows of the seeds that have
    every method (a stopped process leaves an incomplete one)."""
    parts = [json.loads((f / "rows.json").read_text()) for f in folders]
    # a (method, seed) in several folders is the same run: the first folder's
    rows = list({(r["method"], r["seed"]): r for p in reversed(parts) for r in p["rows"]}.values())
    methods = {r["method"] for r in rows}
    done = {s for s in {r["seed"] for r in rows}
            if {r["method"] for r in rows if r["seed"] == s} == methods}  # fmt: skip
    order = {m: i for i, m in enumerate(METHODS)}
    rows = sorted((r for r in rows if r["seed"] in done),
                  key=lambda r: (r["seed"], order.get(r["method"], 99)))  # fmt: skip
    r_rows = list({r["seed"]: r for p in reversed(parts) for r in p["retrain"]}.values())
    r_rows = [r for r in r_rows if r["seed"] in done] or r_rows
    first = parts[0]
    # a folder that is itself a merge brings its own processes' folders and machines (load averages)
    merged_from: list[str] = []
    machines: list[Any] = []
    for f, p in zip(folders, parts):
        merged_from += p["info"].get("merged") or [str(f)]
        machines += p["info"].get("machine_parts") or [p["info"].get("machine")]
    info_ = dict(first["info"], merged=merged_from, machine_parts=machines)
    report.write(out, first["original"], r_rows, rows, info_)
    return 0


def info(a: Any, meta: dict, meta_r: dict, acc: list[float], fid_all: float, mach: dict) -> dict:
    return {"args": vars(a), "train_s": meta.get("train_s"), "retrain_s": meta_r.get("train_s"),
            "judge_acc": acc[0], "cnn_judge_acc": acc[1], "samples_acc": acc[2],
            "samples_acc_cnn": acc[3], "fid_all_classes": fid_all,
            "threads": torch.get_num_threads(), "machine": mach}  # fmt: skip
