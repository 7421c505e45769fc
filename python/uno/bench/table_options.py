"""The options of ``uno bench table`` (its parser, the seeds a table runs, the machine record).

Split from :mod:`uno.bench.table` so that the table's runner stays readable; every name here is
re-exported there.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
from pathlib import Path
from typing import Any, Iterable, Union

import torch

from uno.unlearn.errors import UnoUserError

#: Every method of the drivers (docs/method.md §3); any other registered method can be named in ``--methods``.
ALL_METHODS = (
    "uno",
    "surgery",
    "uno-hat",
    "surgery-hat",
    "retain",
    "retain-hat",
    "uno-s",
    "ascent",
    "ascent-descent",
    "surgery-ascent",
    "uno-subspace",
    "fu",
    "salun",
    "uno-s-hat",
    "surgery-ascent-hat",
    "ascent-hat",
)

#: Where the table goes when ``--out`` is not given (the current directory, never the package).
DEFAULT_OUT = "uno-table"


def machine() -> dict[str, Any]:
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "UNO_BACKEND": os.environ.get("UNO_BACKEND"),
        "load_avg": os.getloadavg(),
    }


def _parser(default_out: Union[str, Path] = DEFAULT_OUT) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="uno bench table", description="comparison table of the unlearning methods (MNIST)"
    )
    ap.add_argument("--methods", nargs="+", default=list(ALL_METHODS))
    ap.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1")
    ap.add_argument(
        "--seed-list",
        type=int,
        nargs="+",
        default=None,
        metavar="S",
        help="run these seeds instead of 0..N-1 (e.g. the tuning seeds 100 101 102; --merge joins "
        "tables of the same rows on other seeds)",
    )
    ap.add_argument("--steps", type=int, default=100, help="fixed budget of updates per run")
    ap.add_argument("--forget", nargs="+", default=["1"], help="class(es) to forget")
    ap.add_argument("--tau", type=float, default=0.02)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--lam", type=float, default=1e3)
    ap.add_argument("--w-u", dest="w_u", type=float, default=1e3)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--bn-train", action="store_true", help="BatchNorm in train mode (the paper)")
    ap.add_argument("--k", type=int, default=8, help="uno-subspace micro-batches")
    ap.add_argument("--data", default=None, help="full MNIST root (default: the embedded digits)")
    ap.add_argument("--vae-epochs", type=int, default=None, help="VAE pretraining epochs (50)")
    ap.add_argument("--judge-epochs", type=int, default=None, help="judge epochs (10)")
    ap.add_argument("--model", default="vae", choices=["vae", "gan"], help="generator kind")
    ap.add_argument("--gan-steps", type=int, default=None, help="WGAN-GP generator steps (1000)")
    ap.add_argument("--fid-n", type=int, default=None, help="images for FID (default: all)")
    ap.add_argument(
        "--fresh-n", type=int, default=10_000, help="fresh codes f is logged on after every step"
    )
    ap.add_argument("--attack-n", type=int, default=1000, help="fresh codes per attack step")
    ap.add_argument("--attack-steps", type=int, default=None, help="attack (i) steps (100; tests)")
    ap.add_argument("--n-train", type=int, default=None, help="use only this many training digits")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument(
        "--quick",
        action="store_true",
        help="tiny budget (tests): VAE 3 ep, judges 2 ep, final f on --fresh-n codes (else 10,000)",
    )
    ap.add_argument(
        "--out", default=str(default_out), help=f"output folder (default: {default_out})"
    )
    ap.add_argument("--title", default=None)
    ap.add_argument(
        "--rebuild",
        action="store_true",
        help="only rewrite --out/table.md and the figures from its CSVs and meta.json (no runs)",
    )
    ap.add_argument("--merge", nargs="+", default=None, help="finished tables to merge into --out")
    ap.add_argument(
        "--retime",
        action="store_true",
        help="train --out's retrain recipe again only to time it; the speed-ups use that time "
        "(the cached model is kept)",
    )
    ap.add_argument(
        "--skip-retrain",
        action="store_true",
        help="no retrain row (a table split over processes: --merge it with one that has the row)",
    )
    return ap


def seeds_of(args: argparse.Namespace) -> list[int]:
    """The seeds a table runs: ``--seed-list`` when given, else ``0 … --seeds − 1``."""
    chosen = getattr(args, "seed_list", None)
    return list(chosen) if chosen else list(range(args.seeds))


def check_seeds(args: argparse.Namespace) -> None:
    """``--seeds`` ≥ 1; ``--seed-list`` non-negative and without repeats.

    Raises:
        UnoUserError: on a bad value (before anything is loaded or written).
    """
    if args.seeds < 1:
        raise UnoUserError(f"--seeds must be at least 1 (got {args.seeds})")
    chosen = getattr(args, "seed_list", None) or []
    if any(s < 0 for s in chosen):
        raise UnoUserError(f"--seed-list takes seeds >= 0 (got {chosen})")
    if len(set(chosen)) != len(chosen):
        raise UnoUserError(f"--seed-list repeats a seed (got {chosen})")


def _seed_text(seeds: Iterable[int]) -> str:
    """``0–9`` (or ``100–102``) for a contiguous run of seeds, else the list: ``3, 5``."""
    s = sorted(seeds)
    if len(s) > 1 and s == list(range(s[0], s[-1] + 1)):
        return f"{s[0]}–{s[-1]}"
    return ", ".join(str(x) for x in s)
