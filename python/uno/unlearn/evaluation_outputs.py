"""The honest table's files (``uno bench table``): CSVs, the sample sheet, the figures, merging tables.

Everything a figure or ``table.md`` needs is kept in the folder's files (``runs.csv``, ``curves.csv``,
``relearn.csv``, ``samples.safetensors``, ``meta.json``), so ``--rebuild`` redraws them without a run and
``--merge`` joins tables run separately (e.g. two halves of the method list on two cores).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from uno.unlearn import io, plots
from uno.unlearn.evaluation import both, fresh_codes
from uno.unlearn.models import sample_images
from uno.unlearn.tasks import in_forget

#: Per-seed fields that are curves (written to curves.csv / relearn.csv, not runs.csv).
CURVE_KEYS = ("log", "curve_i", "curve_ii")
#: Samples per panel of the sheet (8 × 8), the first fresh codes of a separate seed.
SHEET_N, SHEET_SEED = 64, 7


def parse_cell(v: str) -> Any:
    """A cell of runs.csv back to None, bool, float or str (shared with experiments/study/combine.py)."""
    if v in ("", "None"):
        return None
    if v in ("True", "False"):
        return v == "True"
    try:
        return float(v)
    except ValueError:
        return v


def read_csv(path: Path) -> list[dict[str, Any]]:
    with open(path) as f:
        return [{k: parse_cell(v) for k, v in r.items()} for r in csv.DictReader(f)]


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    def w(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            wr = csv.writer(f)
            wr.writerow(header)
            wr.writerows(rows)

    io.atomic_write(path, w)


@dataclass
class Sheet:
    """The before/after panels: name → (images, forgotten-class marks by judge 1, caption)."""

    panels: dict[str, tuple[Tensor, list[bool], str]] = field(default_factory=dict)

    @classmethod
    def start(cls, original: nn.Module, ref: Any) -> Sheet:
        """A sheet whose first panel is the original model (``before``, shown once)."""
        sheet = cls()
        sheet.add("before (original)", original, ref)
        return sheet

    def add(self, name: str, model: nn.Module, ref: Any) -> None:
        z = fresh_codes(model.latent_dim, SHEET_N, SHEET_SEED)  # type: ignore[arg-type]
        x = sample_images(model, z)
        judge = ref.fresh.judges[0]
        marks = [bool(b) for b in in_forget(judge, x, ref.targets)]
        f = both(ref.fresh.pair(model))
        self.panels[name] = (x, marks, f"forgotten class: {100 * f:.2f} % of {ref.fresh.n:,} fresh")

    def save(self, path: Path) -> None:
        """The panels as 8-bit images (what the PNG shows; a quarter of float32's bytes in the repo)."""
        tensors = {
            f"{i}.x": (p[0].clamp(0, 1) * 255).round().to(torch.uint8)
            for i, p in enumerate(self.panels.values())
        }
        tensors.update(
            {f"{i}.marks": torch.tensor(p[1]) for i, p in enumerate(self.panels.values())}
        )
        meta = {"names": list(self.panels), "captions": [p[2] for p in self.panels.values()]}
        io.save_tensors(path, tensors, meta)

    @classmethod
    def load(cls, path: Path) -> Sheet:
        t, meta = io.load_tensors(path)
        sheet = cls()
        for i, (name, cap) in enumerate(zip(meta["names"], meta["captions"])):
            x = t[f"{i}.x"]
            x = x.float() / 255 if x.dtype == torch.uint8 else x
            sheet.panels[name] = (x, [bool(b) for b in t[f"{i}.marks"]], cap)
        return sheet


def write_all(out: Path, runs: list[dict[str, Any]], sheet: Sheet, meta: dict[str, Any]) -> None:
    """``runs.csv``, ``curves.csv``, ``relearn.csv``, ``samples.safetensors`` and ``meta.json``."""
    flat = [{k: v for k, v in r.items() if k not in CURVE_KEYS} for r in runs]
    keys = sorted({k for r in flat for k in r})
    _write_csv(out / "runs.csv", keys, [[r.get(k) for k in keys] for r in flat])
    cols = ("f", "f_fresh", "f_fresh2")
    curve_rows = [
        [r["method"], r["seed"], row["step"], *(row.get(c) for c in cols)]
        for r in runs
        for row in r.get("log", [])
    ]
    _write_csv(out / "curves.csv", ("method", "seed", "step", *cols), curve_rows)
    relearn = [
        [r["method"], r["seed"], name, i, x]
        for r in runs
        for name in ("curve_i", "curve_ii")
        for i, x in enumerate(r.get(name, []))
    ]
    _write_csv(out / "relearn.csv", ("method", "seed", "attack", "step", "f"), relearn)
    sheet.save(out / "samples.safetensors")
    io.write_text(out / "meta.json", json.dumps(meta, indent=2, default=str) + "\n")


def _num(x: Any) -> float:
    return float("nan") if x is None else float(x)


def write_table(out: Path, text: str, tau: float, title: str) -> None:
    """``table.md`` and the figures, from the folder's files."""
    io.write_text(out / "table.md", text)
    curves: dict[str, dict[int, list[float]]] = {}
    for r in read_csv(out / "curves.csv"):
        f = both([_num(r["f_fresh"]), _num(r["f_fresh2"])])
        curves.setdefault(r["method"], {}).setdefault(int(r["seed"]), []).append(
            _num(r["f"]) if math.isnan(f) else f
        )
    plots.save_curves(
        out / "curves.png",
        {m: list(c.values()) for m, c in curves.items()},
        tau,
        title=title,
        ylabel="f on fresh codes, both judges (after the update)",
    )
    runs = read_csv(out / "runs.csv")
    f0 = next((r["f_original"] for r in runs if r.get("f_original") is not None), float("nan"))
    attacks: dict[str, dict[str, dict[int, list[float]]]] = {"curve_i": {}, "curve_ii": {}}
    for r in read_csv(out / "relearn.csv"):
        attacks[r["attack"]].setdefault(r["method"], {}).setdefault(int(r["seed"]), []).append(
            _num(r["f"])
        )
    names = {"curve_i": "attack (i): retain-only fine-tuning", "curve_ii": "attack (ii): 64 images"}
    plots.save_relearning(
        out / "relearn.png",
        {names[a]: {m: list(c.values()) for m, c in v.items()} for a, v in attacks.items()},
        0.5 * f0,
        title=title,
    )
    if (out / "samples.safetensors").is_file():
        sheet = Sheet.load(out / "samples.safetensors")
        plots.save_sample_sheet(
            out / "samples.png",
            sheet.panels,
            title=f"{title}: 64 samples per model (seed 0, after the budget); red frame: judge 1 sees "
            "the forgotten class",
        )


def write_legacy(out: Path, args: Any, table_rows: list[dict[str, str]], title: str) -> None:
    """``table.md`` and ``curves.png`` of a table made before issue 14 (its own caption)."""
    from uno.unlearn.evaluation_table import markdown

    io.write_text(
        out / "table.md",
        f"{title}\n\n{markdown(table_rows)}\n\nτ = {args.tau}; FID/ELBO/cos²/memory: mean ± std over "
        "all seeds; steps/time to forget and FID at forget: over the seeds that reached τ.\n",
    )
    if (out / "curves.csv").is_file():
        curves: dict[str, dict[int, list[float]]] = {}
        for r in read_csv(out / "curves.csv"):
            curves.setdefault(r["method"], {}).setdefault(int(r["seed"]), []).append(float(r["f"]))
        plots.save_curves(
            out / "curves.png",
            {m: list(c.values()) for m, c in curves.items()},
            args.tau,
            title=title,
        )


def merge(folders: Sequence[Path], out: Path) -> None:
    """One table folder from several finished ones (same settings).

    Each (method, seed) record, curve and attack curve comes from the first folder that has it, so
    folders with the same rows on other seeds (``--seed-list``) join into rows on all their seeds, and
    a method run twice on a seed keeps its first run. The sheet's panels are joined (first wins);
    ``meta.json`` comes from the first folder, with the merged method list, the seeds and the sources.
    ``out`` may be one of ``folders``: its own sources are kept in ``merged_from``.
    """
    runs: list[dict[str, Any]] = []
    curves: list[dict[str, Any]] = []
    relearn: list[dict[str, Any]] = []
    sheet = Sheet()
    seen: set[tuple[str, float]] = set()
    meta = json.loads((folders[0] / "meta.json").read_text())
    sources: list[str] = []
    for fo in folders:
        rs = read_csv(fo / "runs.csv")
        new = {(r["method"], float(r["seed"])) for r in rs} - seen
        seen |= new

        def fresh(r: dict[str, Any], new: set[tuple[str, float]] = new) -> bool:
            return (r["method"], float(r["seed"])) in new

        runs += [r for r in rs if fresh(r)]
        curves += [r for r in read_csv(fo / "curves.csv") if fresh(r)]
        relearn += [r for r in read_csv(fo / "relearn.csv") if fresh(r)]
        if (fo / "samples.safetensors").is_file():
            for k, v in Sheet.load(fo / "samples.safetensors").panels.items():
                sheet.panels.setdefault(k, v)
        own = json.loads((fo / "meta.json").read_text()).get("merged_from")
        if fo.resolve() == out.resolve() and own:  # merging into a source: keep its own sources
            sources += [x for x in own if x not in sources]
        elif str(fo) not in sources:
            sources.append(str(fo))
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("runs.csv", runs), ("curves.csv", curves), ("relearn.csv", relearn)):
        keys = list(dict.fromkeys(k for r in rows for k in r))
        _write_csv(out / name, keys, [[r.get(k) for k in keys] for r in rows])
    if sheet.panels:  # no sheet from folders without one (an empty one has no figure to draw)
        sheet.save(out / "samples.safetensors")
    meta["args"]["methods"] = [
        m for m in dict.fromkeys(r["method"] for r in runs) if m != "retrain"
    ]
    seeds = sorted({int(float(r["seed"])) for r in runs if r["method"] != "retrain"})
    meta["args"]["seeds"] = len(seeds)
    meta["args"]["seed_list"] = seeds if seeds != list(range(len(seeds))) else None
    meta["merged_from"] = sources
    io.write_text(out / "meta.json", json.dumps(meta, indent=2, default=str) + "\n")


def set_retrain_time(out: Path, seconds: float, info: dict[str, Any]) -> None:
    """A re-timed retraining into a finished table: ``train_time_s`` of ``runs.csv``'s retrain rows
    (every other cell kept as written) and ``meta.json``'s ``retrain_timing`` (``info``, the new time and
    the one it replaces)."""
    with open(out / "runs.csv") as f:
        rd = csv.DictReader(f)
        header, rows = list(rd.fieldnames or []), list(rd)
    ret = [r for r in rows if r["method"] == "retrain"]
    if not ret or "train_time_s" not in header:
        raise ValueError(f"{out}/runs.csv has no retrain row to re-time")
    before = parse_cell(ret[0]["train_time_s"])
    for r in ret:
        r["train_time_s"] = repr(float(seconds))
    _write_csv(out / "runs.csv", header, [[r[k] for k in header] for r in rows])
    meta = json.loads((out / "meta.json").read_text())
    prev = meta.get("retrain_timing", {}).get("cached_train_time_s", before)
    meta["retrain_timing"] = {**info, "train_time_s": seconds, "cached_train_time_s": prev}
    io.write_text(out / "meta.json", json.dumps(meta, indent=2, default=str) + "\n")


def timing_note(timing: Any) -> str:
    """The table text's sentence on a re-timed retraining (empty when the cached time is used)."""
    if not timing:
        return ""
    m = timing.get("machine", {})
    load = m.get("load_avg") or [float("nan")]
    return (
        f"Retraining re-timed ({m.get('date', '?')}, {m.get('torch_threads', '?')} thread(s), load "
        f"{load[0]:.1f}): {timing['train_time_s']:.3g} s; the cached model's training took "
        f"{timing['cached_train_time_s']:.3g} s.\n"
    )
