"""The honest table's measures and rows (issue 14; docs/method.md §4b), used by ``uno bench table``.

:class:`Reference` holds what every row of one table is measured against: the fresh codes and both
judges, the FIDs, the original model's f, and the model retrained from scratch on the retain digits
(loaded from the cache, its training wall time read from the cache file). :func:`measure_model` gives the
per-seed record of a model that was not unlearned by a run (the retrained one: FIDs, ELBO, f, attacks);
:func:`attack_record` the relearning attacks of any model; :func:`rows` the table's cells per method.

A row can be a method with its own budget, learning rate or hyper-parameters, named by a spec
``name:key=value,...`` (e.g. ``kick-hat:lr=0.001,steps=300,kick=3,n_kick=10``; :func:`parse_method`,
:func:`row_config`); the spec is the row's label.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from torch import Tensor, nn

from uno.unlearn import attacks, methods
from uno.unlearn.data import ImageData
from uno.unlearn.errors import UnoUserError
from uno.unlearn.evaluation import FreshForget, both
from uno.unlearn.metrics import ClassifierFID, optional_fid
from uno.unlearn.tasks import retain_elbo

#: The row of the model retrained from scratch without the forget data.
RETRAIN = "retrain"

#: Columns of table.md, in order.
COLUMNS = (
    "method",
    "stable steps (fresh, both judges)",
    "not stable",
    "first crossing",
    "time to forget (s)",
    "speed-up vs retrain",
    "per-step (ms, median of the run)",
    "FID (judge 1)",
    "FID gap to retrain",
    "FID (judge 2)",
    "retain ELBO",
    "f at end (fresh, both)",
    "f after attack (i)",
    "attack (ii) steps to ½·f₀",
)


@dataclass
class Reference:
    """What one table compares every model with (built once per table)."""

    kind: str  # "vae" or "gan"
    targets: list[int]
    fresh: FreshForget  # every fresh code, judges 1 and 2
    fid: ClassifierFID
    fid2: Optional[ClassifierFID]
    heldout: ImageData
    retain_x: Tensor  # training images outside the forget classes (attack (i))
    forget_x: Tensor  # training images of the forget classes (attack (ii))
    f_original: float  # the original model's f on every fresh code, both judges
    retrain: nn.Module
    retrain_time_s: float  # wall time of the retraining (from the cache file's metadata)
    critic: Optional[nn.Module] = (
        None  # GAN: the original's critic (attacks on unlearned generators)
    )
    retrain_critic: Optional[nn.Module] = None  # GAN: the retrained generator's own critic
    attack_n: int = attacks.N_STEP  # fresh codes per attack step
    attack_steps: int = attacks.RETAIN_STEPS  # attack (i)'s steps (fewer only in tests)

    @classmethod
    def build(
        cls,
        kind: str,
        original: nn.Module,
        judges: Sequence[Optional[nn.Module]],
        data: tuple[ImageData, ImageData],
        targets: Sequence[int],
        retrain: nn.Module,
        retrain_time_s: float,
        **kw: Any,
    ) -> Reference:
        """Measure the original once and assemble the reference (``kw``: ``critic``,
        ``retrain_critic``, ``attack_n``, ``fid_n``, ``n_fresh``)."""
        train, heldout = data
        mask = train.forget_mask(targets)
        fid_n, n_fresh = kw.pop("fid_n", None), kw.pop("n_fresh", None)
        zdim: int = original.latent_dim  # type: ignore[assignment]
        fresh = FreshForget(judges, targets, zdim, **({"n": n_fresh} if n_fresh else {}))
        real = train.x[~mask]
        judge2 = judges[1] if len(judges) > 1 else None
        return cls(
            kind=kind,
            targets=list(targets),
            fresh=fresh,
            fid=ClassifierFID(judges[0], real, zdim, n=fid_n),  # type: ignore[arg-type]
            fid2=optional_fid(judge2, real, zdim, fid_n),
            heldout=heldout,
            retain_x=real,
            forget_x=train.x[mask],
            f_original=both(fresh(original)),
            retrain=retrain,
            retrain_time_s=retrain_time_s,
            **kw,
        )


def attack_record(
    model: nn.Module, ref: Reference, seed: int, *, retrained: bool = False
) -> dict[str, Any]:
    """Both relearning attacks on (a copy of) ``model``: the table's per-seed fields and curves.

    Returns:
        ``f_attack_i`` (f after attack (i) on every fresh code, both judges), ``f_attack_i_j1``/``_j2``,
        ``attack_ii_steps`` (first step of attack (ii) with f ≥ ½·f_original; ``None``: not within it),
        ``curve_i``/``curve_ii`` (f per attack step, both judges, on ``ref.attack_n`` codes).
    """
    critic = ref.retrain_critic if retrained else ref.critic
    a = attacks.retain_finetune(
        model, ref.fresh, ref.retain_x, critic=critic, steps=ref.attack_steps, seed=seed,
        n_step=ref.attack_n,
    )  # fmt: skip
    b = attacks.forget_finetune(
        model, ref.fresh, ref.forget_x, critic=critic, seed=seed, n_step=ref.attack_n
    )
    return {
        "f_attack_i": a.f_final,
        "f_attack_i_j1": a.final[0],
        "f_attack_i_j2": a.final[1],
        "attack_ii_steps": b.steps_until(0.5 * ref.f_original),
        "f_original": ref.f_original,
        "curve_i": a.f,
        "curve_ii": b.f,
    }


def quality(model: nn.Module, ref: Reference) -> dict[str, Any]:
    """FID (both judges), retain ELBO (VAE; NaN for a GAN) and f on every fresh code of ``model``."""
    f1, f2 = ref.fresh.pair(model)
    return {
        "fid_after": ref.fid(model),
        "fid2_after": ref.fid2(model) if ref.fid2 is not None else None,
        "elbo_after": retain_elbo(model, ref.heldout, ref.targets)
        if ref.kind == "vae"
        else float("nan"),
        "f_end": both([f1, f2]),
        "f_fresh_final": f1,
        "f_fresh2_final": f2,
    }


def measure_model(
    model: nn.Module, ref: Reference, seed: int, q: Optional[dict[str, Any]] = None
) -> dict[str, Any]:
    """The retrained model's per-seed record (``q``: its :func:`quality`, measured once for all seeds)."""
    rec: dict[str, Any] = {"method": RETRAIN, "seed": seed, "train_time_s": ref.retrain_time_s}
    rec.update(q if q is not None else quality(model, ref))
    rec.update(attack_record(model, ref, seed, retrained=True))
    return rec


#: The run options a method spec may set for its row (the rest of ``name:key=value`` are the method's
#: own hyper-parameters).
RUN_OPTIONS = {"steps": int, "lr": float, "lam": float, "w_u": float, "k": int, "batch": int}


def parse_method(spec: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """``"name[:key=value,...]"`` → (method name, run options, the method's hyper-parameters).

    Raises:
        UnoUserError: an unknown method or key, a key given twice, or a value of the wrong type.
    """
    name, _, rest = spec.partition(":")
    known = dict(type(methods.create(name)).defaults)  # an unknown name: the error lists the known
    run: dict[str, Any] = {}
    hp: dict[str, Any] = {}
    for item in rest.split(",") if rest else []:
        key, eq, value = item.partition("=")
        kind = RUN_OPTIONS.get(key) or (type(known[key]) if key in known else None)
        if not eq or kind is None:
            keys = ", ".join([*RUN_OPTIONS, *known])
            raise UnoUserError(
                f"method spec {spec!r}: {item!r} is not key=value with a key of {keys}"
            )
        if key in run or key in hp:
            raise UnoUserError(f"method spec {spec!r}: {key} given twice")
        try:
            v = kind(float(value)) if kind is int and float(value).is_integer() else kind(value)
        except ValueError:
            raise UnoUserError(
                f"method spec {spec!r}: {key}={value!r} is not a {kind.__name__}"
            ) from None
        (run if key in RUN_OPTIONS else hp)[key] = v
    return name, run, hp


def row_config(config_cls: type, spec: str, options: dict[str, Any], **fixed: Any) -> Any:
    """The run configuration of one row: ``options`` (the table's), overridden by the spec's run
    options, with the spec's hyper-parameters as extra fields (which ``Method.options`` reads)."""
    name, run, hp = parse_method(spec)
    cls = config_cls
    if hp:
        extra = [(k, type(v), dataclasses.field(default=v)) for k, v in hp.items()]
        cls = dataclasses.make_dataclass(f"{config_cls.__name__}Spec", extra, bases=(config_cls,))
    return cls(**{**options, **run, **fixed}, method=name)


def budget(spec: str, steps: int) -> int:
    """A row's budget of updates: its spec's ``steps``, else the table's (a plain name, registered
    or not, is the table's budget)."""
    return int(parse_method(spec)[1].get("steps", steps)) if ":" in spec else steps


def _ms(
    values: Sequence[Optional[float]],
    scale: float = 1.0,
    digits: int = 3,
    std_digits: Optional[int] = None,
) -> str:
    """``mean ± std`` over the values that exist (``-`` when none): the mean to ``digits``
    significant digits, the std to ``std_digits`` (default: ``digits``)."""
    v = [float(x) * scale for x in values if x is not None and not math.isnan(float(x))]
    if not v:
        return "-"
    s = statistics.stdev(v) if len(v) > 1 else 0.0
    sd = digits if std_digits is None else std_digits
    return f"{statistics.fmean(v):.{digits}g} ± {s:.{sd}g}"


def _pm(values: Sequence[Optional[float]], scale: float = 1.0, digits: int = 3) -> str:
    """:func:`_ms` with the std to 2 significant digits (the issue-14 table's cells)."""
    return _ms(values, scale, digits, std_digits=2)


def _steps(values: Sequence[Optional[float]], none: str) -> str:
    """``median [mean ± std]`` over the runs that got there (``none`` when no run did)."""
    v = [float(x) for x in values if x is not None and not math.isnan(float(x))]
    if not v:
        return none
    return f"{statistics.median(v):g} [{_pm(v)}]"


def rows(runs: list[dict[str, Any]], methods: Sequence[str], steps: int) -> list[dict[str, str]]:
    """One row of cells per method (the retrain row first) from the per-seed records."""
    ret = [r for r in runs if r["method"] == RETRAIN]
    fid_rt = statistics.fmean(r["fid_after"] for r in ret) if ret else float("nan")
    t_rt = ret[0]["train_time_s"] if ret else float("nan")
    n_all = len({r["seed"] for r in runs if r["method"] != RETRAIN})
    out = []
    for m in [RETRAIN, *[m for m in methods if m != RETRAIN]]:
        rs = [r for r in runs if r["method"] == m]
        if not rs:
            continue
        n_ii = sum(r["attack_ii_steps"] is None for r in rs)
        ii = _steps([r["attack_ii_steps"] for r in rs], "> 10")
        n = len(rs)
        cells = {
            # a row with fewer seeds than the table's (e.g. a merged row run on a subset) says so
            "method": m if m == RETRAIN or n == n_all else f"{m} ({n} seed{'s' * (n != 1)})",
            "FID (judge 1)": _pm([r["fid_after"] for r in rs]),
            "FID gap to retrain": _pm([r["fid_after"] - fid_rt for r in rs]),
            "FID (judge 2)": _pm([r.get("fid2_after") for r in rs]),
            "retain ELBO": _pm([r["elbo_after"] for r in rs], digits=4),
            "f at end (fresh, both)": _pm(
                [both([as_nan(r["f_fresh_final"]), as_nan(r["f_fresh2_final"])]) for r in rs],
                digits=2,
            ),
            "f after attack (i)": _pm([r["f_attack_i"] for r in rs], digits=2),
            "attack (ii) steps to ½·f₀": ii
            + (f" ({n_ii}/{len(rs)} > 10)" if n_ii and n_ii < len(rs) else ""),
        }
        if m == RETRAIN:
            cells.update({
                "stable steps (fresh, both judges)": "— (retrained from scratch)",
                "not stable": "-", "first crossing": "-",
                "time to forget (s)": f"{t_rt:.3g} (training wall time)",
                "speed-up vs retrain": "1×", "per-step (ms, median of the run)": "-",
            })  # fmt: skip
        else:
            st = [r["stable_steps"] for r in rs]
            fc = [r["first_crossing"] for r in rs]
            n_fc = sum(x is not None for x in fc)
            ttf = [r["time_to_forget_median_s"] for r in rs]
            cells.update({
                "stable steps (fresh, both judges)": _steps(st, f"not reached (≤ {budget(m, steps)})"),
                "not stable": f"{sum(x is None for x in st)}/{len(rs)}",
                "first crossing": _steps(fc, "-") + (f" ({n_fc}/{len(rs)})" if 0 < n_fc < len(rs) else ""),
                "time to forget (s)": _pm(ttf),
                "speed-up vs retrain": _times(_pm([t_rt / t if t else None for t in ttf])),
                "per-step (ms, median of the run)": _pm([r["per_step_median_s"] for r in rs], 1e3),
            })  # fmt: skip
        out.append({c: cells[c] for c in COLUMNS})
    return out


def as_nan(x: Optional[float]) -> float:
    """``None`` (not measured, e.g. no second judge) as NaN."""
    return float("nan") if x is None else float(x)


def _times(txt: str) -> str:
    return txt if txt == "-" else f"{txt}×"


def markdown(table_rows: list[dict[str, str]]) -> str:
    """A markdown table of the rows (columns: the keys of the first row, in order)."""
    cols = list(table_rows[0]) if table_rows else list(COLUMNS)
    head = "| " + " | ".join(cols) + " |"
    sep = "|" + "---|" * len(cols)
    body = ["| " + " | ".join(r[c] for c in cols) + " |" for r in table_rows]
    return "\n".join([head, sep, *body])


#: Columns of the tables made before issue 14 (the committed ones of experiments/results/).
LEGACY_COLUMNS = (
    "method",
    "steps to forget",
    "not reached",
    "time to forget (s)",
    "per-step time (ms)",
    "FID at forget",
    "FID after budget",
    "retain ELBO after",
    "f after 5",
    "f at end",
    "cos²",
    "peak extra mem (MB)",
)


def legacy_rows(
    runs: list[dict[str, Any]], methods: Sequence[str], steps: int
) -> list[dict[str, str]]:
    """The rows of a table made before issue 14 (monitor-batch f, first crossing; kept to rebuild them).

    "steps to forget" and "time to forget" are mean ± std over the seeds that reached τ; the
    "not reached" column counts the others (``k/n``). A method with no reaching seed shows
    ``not reached``. The median steps over reaching seeds is appended in brackets.
    """
    out = []
    for m in methods:
        rs = [r for r in runs if r["method"] == m]
        if not rs:
            continue
        reached = [r for r in rs if r["reached"]]
        n_nr = len(rs) - len(reached)
        if reached:
            st = [r["steps_to_forget"] for r in reached]
            steps_txt = f"{_ms(st)} [median {statistics.median(st):g}]"
            time_txt = _ms([r["time_to_forget_s"] for r in reached])
        else:
            steps_txt = time_txt = f"not reached (≤ {steps})"
        out.append({
            "method": m,
            "steps to forget": steps_txt,
            "not reached": f"{n_nr}/{len(rs)}",
            "time to forget (s)": time_txt,
            "per-step time (ms)": _ms([r["per_step_median_s"] for r in rs], 1e3),
            "FID at forget": _ms([r["fid_at_forget"] for r in reached]),
            "FID after budget": _ms([r["fid_after"] for r in rs]),
            "retain ELBO after": _ms([r["elbo_after"] for r in rs], digits=4),
            "f after 5": _ms([r["f_after_5"] for r in rs], digits=2),
            "f at end": _ms([r.get("f_final") for r in rs], digits=2),
            "cos²": _ms([r["cos2_mean"] for r in rs], digits=2),
            "peak extra mem (MB)": _ms([r["peak_mem_bytes"] for r in rs], 1e-6),
        })  # fmt: skip
    return out
