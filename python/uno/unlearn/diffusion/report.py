"""The diffusion table's outputs (:mod:`uno.unlearn.diffusion.table`): ``table.md``, ``table_short.md``,
``table.csv``, ``rows.json``, ``curves.png`` and the sample figure ``samples.png``."""

from __future__ import annotations

import csv
import io as _io
from pathlib import Path
from typing import Any, Optional, Sequence

from uno.unlearn import io
from uno.unlearn.diffusion.evaluate import class_samples, fresh_codes
from uno.unlearn.metrics import fmt_mean_std

#: (column title, row key, scale, digits)
COLUMNS: list[tuple[str, str, float, int]] = [
    ("stable steps τ=0.02", "stable_0.02", 1.0, 3),
    ("first crossing τ=0.02", "first_0.02", 1.0, 3),
    ("stable steps τ=0.18", "stable_0.18", 1.0, 3),
    ("first crossing τ=0.18", "first_0.18", 1.0, 3),
    ("time to forget (s)", "time_0.02", 1.0, 3),
    ("f fresh (judge 1, MLP)", "f_fresh", 1.0, 2),
    ("f fresh (judge 2, CNN)", "f_fresh_cnn", 1.0, 2),
    ("FID retain (judge 1)", "fid", 1.0, 3),
    ("FID retain (judge 2)", "fid_cnn", 1.0, 3),
    ("f after attack (i)", "attack_retain_f", 1.0, 2),
    ("attack (ii) steps to ½ f₀", "attack_forget_steps", 1.0, 2),
    ("per-step (ms, median)", "per_step_s", 1e3, 3),
    ("peak mem (MB)", "peak_mem_bytes", 1e-6, 3),
]


def _vals(rows: Sequence[dict], key: str, scale: float) -> list[Optional[float]]:
    return [None if r.get(key) is None else float(r[key]) * scale for r in rows]


def _cell(rows: Sequence[dict], key: str, scale: float, digits: int) -> str:
    if key not in rows[0]:
        return "–"  # a reference row (original, retrained): no unlearning steps
    return fmt_mean_std(_vals(rows, key, scale), digits)


def summary_rows(
    o_row: dict, r_rows: Sequence[dict], rows: Sequence[dict]
) -> list[tuple[str, list[dict]]]:
    names = list(dict.fromkeys(r["method"] for r in rows))
    return [("original", [o_row]), ("retrain", list(r_rows))] + [
        (m, [r for r in rows if r["method"] == m]) for m in names
    ]


def write(
    out: Path, o_row: dict, r_rows: Sequence[dict], rows: Sequence[dict], info: dict[str, Any]
) -> None:
    """Write the table (markdown, CSV) and every row (JSON) under ``out`` (``r_rows``: the retrained
    model's, one per seed of its attacks)."""
    out.mkdir(parents=True, exist_ok=True)
    retrain_s = info.get("retrain_s") or float("nan")
    fid_r = sum(float(r["fid"]) for r in r_rows) / len(r_rows)
    head = (
        ["method", "seeds"]
        + [c[0] for c in COLUMNS]
        + ["speed-up vs retrain", "FID gap to retrain"]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    table: list[list[str]] = []
    for name, rs in summary_rows(o_row, r_rows, rows):
        cells = [name, str(len(rs))] + [_cell(rs, k, s, d) for _, k, s, d in COLUMNS]
        t = [r.get("time_0.02") for r in rs]
        sp = [None if x is None or x <= 0 else retrain_s / x for x in t]
        cells.append("–" if name in ("original", "retrain") else fmt_mean_std(sp, 3))
        cells.append(fmt_mean_std([float(r["fid"]) - fid_r for r in rs], 3))
        table.append(cells)
        lines.append("| " + " | ".join(cells) + " |")
    io.write_text(out / "table.md", "\n".join(lines) + "\n\n" + notes(info) + "\n")
    short = [0, 1, 2, 3, 4, 7, 8, 9, 10, 11, 12, 13, 15]  # the README's columns
    io.write_text(out / "table_short.md", "\n".join(_pick(lines, short)) + "\n")
    buf = _io.StringIO()
    w = csv.writer(buf)
    w.writerow(head)
    w.writerows(table)
    io.write_text(out / "table.csv", buf.getvalue())
    io.write_json(
        out / "rows.json",
        {"info": info, "original": o_row, "retrain": list(r_rows), "rows": list(rows)},
    )
    curves(out / "curves.png", rows)


def curves(path: Path, rows: Sequence[dict]) -> None:
    """f after each update (the larger of the two judges', monitor codes), mean ± std over seeds."""
    from uno.unlearn.plots import save_curves

    by: dict[str, Any] = {}
    for r in rows:
        f = [max(a, b) for a, b in zip(r["f_monitor"], r["f_monitor_cnn"])]
        by.setdefault(r["method"], []).append(f)
    save_curves(path, by, 0.02, title="diffusion, forget class 1: f by both judges (the larger)")


def _pick(lines: Sequence[str], cols: Sequence[int]) -> list[str]:
    """The markdown rows ``lines`` with only the columns ``cols``."""
    out = []
    for ln in lines:
        cells = ln.strip().strip("|").split("|")
        out.append("|" + "|".join(cells[c] for c in cols) + "|")
    return out


def notes(info: dict[str, Any]) -> str:
    a = info["args"]
    mach = info.get("machine") or {}
    load = mach.get("load_avg")
    end = info.get("load_avg_end")
    where = (
        f" Machine: {mach.get('cpu')} ({mach.get('cores')} cores), torch {mach.get('torch')}, load "
        f"average {_load(load)} at the start, {_load(end)} at the last write."
        if mach
        else ""
    )
    return (
        f"Forget class 1; {a['steps']} updates per run, lr {a['lr']}, λ {a['lam']}, w_u {a['w_u']}, "
        f"batch {a['batch']}; f per update on {a['monitor']} monitor codes by both judges (a step counts "
        f"as forgotten when both see f < τ; stable = 10 consecutive updates); f fresh on {a['fresh']} "
        f"fresh codes; FID on {a['fid_n']} retain images/samples; the attacks of uno.unlearn.attacks "
        f"with the labelled denoising loss: (i) {a['attack_steps']} Adam steps (lr 1e-3, batch 128) on "
        f"retain data, f after it on the {a['fresh']} fresh codes, both judges (the larger); (ii) 10 "
        f"steps on 64 class-1 images, f after each on {a['attack_codes']} codes, until f ≥ ½·f of the "
        f"original. Time to forget = median step time × stable steps (τ = 0.02). Training: "
        f"{fmt(info.get('train_s'))} s, retraining without class 1: {fmt(info.get('retrain_s'))} s. "
        f"{info.get('threads')} thread. Judges' held-out accuracy: judge 1 (MLP) "
        f"{info['judge_acc']:.3f}, judge 2 (CNN) {info['cnn_judge_acc']:.3f}. The original model's "
        f"class-conditioned samples ({a['fresh']}, labels 0-9) classified as their label: judge 1 "
        f"{info['samples_acc']:.3f}, judge 2 {info['samples_acc_cnn']:.3f}; classifier FID over all "
        f"classes {info['fid_all_classes']:.2f}.{where}"
    )


def _load(x: Any) -> str:
    return "?" if not x else "/".join(f"{float(v):.1f}" for v in x)


def fmt(x: Any) -> str:
    return "nan" if x is None else f"{float(x):.0f}"


def figure(
    path: Path, orig: Any, retrained: Any, models: dict[str, Any], c: int, n: int = 10
) -> None:
    """One labelled image: a row of class-c samples (the same fresh codes) per model."""
    from uno.unlearn.plots import _plt, image_grid

    plt = _plt()
    z = fresh_codes(n)
    named = [("original", orig), ("retrain", retrained), *models.items()]
    fig, axes = plt.subplots(len(named), 1, figsize=(n * 0.55 + 1.6, len(named) * 0.62 + 0.4))
    for ax, (name, m) in zip(axes, named):
        ax.imshow(image_grid(class_samples(m, z, [c]), nrow=n))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle(f"class-{c}-conditioned samples, same codes (top: before)", fontsize=9)
    fig.tight_layout()
    io.atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
