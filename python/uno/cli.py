"""The ``uno`` command: ``uno train``, ``uno unlearn``, ``uno demo``, ``uno methods``, ``uno bench``.

Bad input (a malformed or out-of-range flag, an unknown method/model/class, an output folder that is a
file or not writable, missing or malformed data, a corrupt or incompatible checkpoint, a missing
``[unlearn]`` extra) prints one line ``uno: error: ...`` on stderr and exits with status 2, before any
model or data is loaded and without writing anything; a NaN/Inf stop exits with 3, an I/O failure during
a run (disk full) with 1.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, NoReturn, Optional, Sequence


class _ArgError(Exception):
    """A command line argparse rejects (printed as one ``uno: error:`` line, exit 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse without the usage block on errors: one line, raised to :func:`main` (``--help`` still
    prints the usage)."""

    def error(self, message: str) -> NoReturn:
        raise _ArgError(f"{self.prog}: {message}")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--quiet", action="store_true", help="no progress bars or chatter (a training notice stays)"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads, >= 1 (default: torch's; 1 is steadier on a busy machine)",
    )


def _parser() -> argparse.ArgumentParser:
    ap = _Parser(
        prog="uno", description="Unlearning of generative models by gradient orthogonalization."
    )
    sub = ap.add_subparsers(dest="cmd", required=True)

    t = sub.add_parser("train", help="pretrain a model on MNIST (embedded default) and cache it")
    t.add_argument(
        "kind", choices=["vae", "gan", "judge", "judge2", "vae-retain", "gan-retain", "diffusion"]
    )
    t.add_argument("--data", default=None, help="MNIST root (torchvision layout or flat IDX files)")
    t.add_argument("--epochs", type=int, default=None, help="vae/judge epochs (vae 50, judge 10)")
    t.add_argument(
        "--steps", type=int, default=None, help="gan generator steps (1000), diffusion steps (4000)"
    )
    t.add_argument("--seed", type=int, default=None, help="training seed (0; judge2: 1)")
    t.add_argument("--forget", nargs="+", default=None, help="vae-/gan-retain: classes left out")
    t.add_argument("--retrain", action="store_true", help="ignore the cached model")
    t.add_argument(
        "--time-only",
        action="store_true",
        help="train the recipe again only to time it (vae/gan kinds); the cache is left alone",
    )
    t.add_argument("--out", default=None, help="also copy the model to this file")
    _common(t)

    u = sub.add_parser("unlearn", help="run one unlearning method")
    u.add_argument(
        "--model", default="vae", help="'vae', 'gan', 'diffusion' or a model file (.safetensors)"
    )
    u.add_argument(
        "--method",
        default="auto",
        help="see `uno methods`; auto: the model's default (vae: retain-hat, gan: uno-subspace-ps, "
        "diffusion: surgery; docs/unlearning.md)",
    )
    u.add_argument("--forget", nargs="+", default=["1"], help="class(es) to forget")
    u.add_argument("--steps", type=int, default=100)
    u.add_argument("--tau", type=float, default=0.02)
    u.add_argument("--seed", type=int, default=0)
    u.add_argument(
        "--seeds", type=int, default=None, help="repeat with seeds 0..N-1 and report mean ± std"
    )
    u.add_argument("--lr", type=float, default=1e-3)
    u.add_argument("--lam", type=float, default=1e3, help="λ of uno / uno-s")
    u.add_argument(
        "--w-u", dest="w_u", type=float, default=1e3, help="histogram weight of -hat methods"
    )
    u.add_argument("--batch", type=int, default=128)
    u.add_argument("--monitor", dest="n_monitor", type=int, default=512, help="monitor batch size")
    u.add_argument(
        "--bn-train",
        action="store_true",
        help="keep BatchNorm in train mode (the paper's behaviour; default: frozen statistics)",
    )
    u.add_argument("--k", type=int, default=8, help="uno-subspace: retain micro-batches")
    u.add_argument(
        "--w-c", dest="w_c", type=float, default=0.0, help="GAN retain loss: critic weight"
    )
    u.add_argument(
        "--w-j", dest="w_j", type=float, default=1.0, help="GAN retain loss: judge-class weight"
    )
    u.add_argument("--judge", default=None, help="judge model file (default: the cached MLP judge)")
    u.add_argument(
        "--judge2", default=None, help="second judge file (default: the cached CNN judge)"
    )
    u.add_argument(
        "--fresh-n",
        type=int,
        default=None,
        help="fresh codes f is measured on after every update (0: off; default 10,000, 500 for "
        "--model diffusion)",
    )
    u.add_argument("--critic", default=None, help="GAN critic file")
    u.add_argument(
        "--data", default=None, help="data root (MNIST IDX files, or CelebA with --dataset celeba)"
    )
    u.add_argument("--dataset", default="mnist", choices=["mnist", "celeba"])
    u.add_argument(
        "--fid-n", type=int, default=None, help="images for FID (default: all real retain images)"
    )
    u.add_argument("--ckpt-every", type=int, default=10)
    u.add_argument(
        "--stop-on-forget", action="store_true", help="stop at the first step with f < tau"
    )
    u.add_argument("--out", default="uno-run", help="output folder")
    u.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its checkpoint"
    )
    u.add_argument(
        "--nproc", type=int, default=None,
        help="data-parallel on N local processes (docs/distributed.md; under torchrun: its ranks)",
    )  # fmt: skip
    u.add_argument(
        "--parallel", default="ddp", choices=["ddp", "fsdp2"],
        help="how the model is laid out across ranks (ddp: replicated; fsdp2: sharded)",
    )  # fmt: skip
    _common(u)

    d = sub.add_parser(
        "demo",
        help="the main job: forget digit 1 with retain-hat, uno, surgery, uno-hat (embedded MNIST)",
    )
    d.add_argument("--out", default="uno-demo")
    d.add_argument("--quick", action="store_true", help="reduced budget (tests)")
    d.add_argument("--steps", type=int, default=None)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--methods", nargs="+", default=None)
    _common(d)

    sub.add_parser("methods", help="list the unlearning methods")

    from uno.bench import BENCHES

    b = sub.add_parser(
        "bench",
        help="microbenchmarks of the kernels and the unlearning table: `uno bench project --quick`",
        description="Run a benchmark of the package (uno.bench); the options after the benchmark's "
        "name go to it (`uno bench project --help`).",
    )
    b.add_argument(
        "bench",
        choices=sorted(BENCHES),
        help="project, optim, per-sample, combine: kernel microbenchmarks; dist: projection "
        "communication on 2 CPU ranks; table: the unlearning comparison table",
    )
    b.add_argument("bench_args", nargs=argparse.REMAINDER, help="options of the benchmark")
    return ap


def _bench(args: argparse.Namespace) -> int:
    from uno.bench import run

    if args.bench == "table" and _diffusion_table(args.bench_args):
        from uno.unlearn.diffusion.table import main as diffusion_table

        return diffusion_table(args.bench_args)
    return run(args.bench, args.bench_args)


def _diffusion_table(argv: Sequence[str]) -> bool:
    """``--model diffusion`` among the table's options (its own table: uno.unlearn.diffusion.table)."""
    pairs = zip(argv, [*argv[1:], ""])
    return any(a == "--model=diffusion" or (a == "--model" and b == "diffusion") for a, b in pairs)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from uno.unlearn.errors import NonFiniteError, UnoUserError

    logging.basicConfig(level=logging.WARNING, format="uno: %(message)s")
    try:
        args = _parser().parse_args(argv)
        args.argv = list(sys.argv[1:] if argv is None else argv)  # for `uno unlearn --nproc N`
        _check_args(args)
        if getattr(args, "threads", None):
            import torch

            torch.set_num_threads(args.threads)
        return _dispatch(args)
    except (_ArgError, UnoUserError) as e:
        print(f"uno: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except NonFiniteError as e:
        print(f"uno: stopped: {_one_line(e)}", file=sys.stderr)
        return 3
    except (
        OSError
    ) as e:  # during a run (disk full, a folder removed under it): not the input's fault
        print(f"uno: error: {_one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "uno: interrupted (the last checkpoint is kept; rerun with --resume)", file=sys.stderr
        )
        return 130


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split("\n")).strip() or type(e).__name__


def _check_args(args: argparse.Namespace) -> None:
    """Every check that needs no model and no data (see :mod:`uno.unlearn.preflight`)."""
    from uno.unlearn import preflight

    if args.cmd in ("unlearn", "demo"):
        preflight.require_extra(args.cmd)
    elif args.cmd == "train":  # no plots, no FID
        preflight.require_extra("train", ("safetensors", "tqdm"))
    if getattr(args, "threads", None) is not None:
        preflight.int_at_least("--threads", args.threads, 1)
    if args.cmd == "train":
        gan = args.kind in ("gan", "gan-retain", "diffusion")  # budgets in steps
        if (args.forget is not None) != args.kind.endswith("-retain"):
            raise _ArgError(
                f"uno train {args.kind}: --forget goes with (and only with) vae-/gan-retain"
            )
        if args.steps is not None and not gan:
            raise _ArgError(f"uno train {args.kind}: --steps is the gan's budget; use --epochs")
        if args.epochs is not None and gan:
            raise _ArgError(
                f"uno train {args.kind}: --epochs is the vae's and judge's budget; use --steps"
            )
        if args.time_only and (
            args.kind in ("judge", "judge2", "diffusion") or args.retrain or args.out
        ):
            raise _ArgError(
                f"uno train {args.kind} --time-only: vae/gan kinds only, without --retrain or --out"
            )
        preflight.int_at_least("--epochs", args.epochs, 1, optional=True)
        preflight.int_at_least("--steps", args.steps, 1, optional=True)
        if args.seed is not None:
            preflight.seed("--seed", args.seed)
        preflight.existing_path("--data", args.data)
        preflight.out_file("--out", args.out)
    elif args.cmd == "unlearn":
        from uno.unlearn.run import check_run_folder

        preflight.int_at_least("--seeds", args.seeds, 1, optional=True)
        cfg = _run_config(args)
        cfg.validate()
        _check_parallel(args, cfg)
        for c, out in _runs(cfg, args):
            check_run_folder(c, out, args.resume)
    elif args.cmd == "demo":
        from uno.unlearn.demo import check_demo_args

        check_demo_args(args.out, steps=args.steps, seed=args.seed, methods=args.methods)


def _check_parallel(args: argparse.Namespace, cfg: Any) -> None:
    """``--nproc`` / ``--parallel`` (and ``torchrun``'s ``WORLD_SIZE``) against the run's options."""
    from uno.unlearn import parallel

    env = parallel.env_world_size()
    if args.nproc is not None and env > 1 and args.nproc != env:
        raise _ArgError(f"--nproc {args.nproc} under a launcher of WORLD_SIZE={env}; drop --nproc")
    parallel.check(cfg, args.nproc if args.nproc is not None else env, args.parallel)


def _run_config(args: argparse.Namespace) -> Any:
    from uno.unlearn.run import RunConfig

    fields = RunConfig.__dataclass_fields__
    return RunConfig(**{k: v for k, v in vars(args).items() if k in fields})


def _runs(cfg: Any, args: argparse.Namespace) -> list[tuple[Any, str]]:
    """``(config, out folder)`` of each run: one, or one per seed with ``--seeds N``."""
    if not args.seeds:
        return [(cfg, args.out)]
    import copy
    from pathlib import Path

    runs = []
    for s in range(args.seeds):
        c = copy.deepcopy(cfg)
        c.seed = s
        runs.append((c, str(Path(args.out) / f"seed{s}")))
    return runs


def _dispatch(args: argparse.Namespace) -> int:
    if args.cmd == "methods":
        from uno.unlearn.methods import names

        print("\n".join(names()))
        return 0
    if args.cmd == "train":
        import shutil

        from uno.unlearn.train import get_or_train

        if args.kind == "diffusion":
            from uno.unlearn.diffusion.train import get_or_train_kind as get_or_train
        gan = args.kind in ("gan", "gan-retain", "diffusion")
        budget = {"steps": args.steps} if gan else {"epochs": args.epochs}
        if args.time_only:
            from uno.unlearn.train import time_training

            sec, path = time_training(
                args.kind, data_root=args.data, seed=args.seed, quiet=args.quiet,
                forget=args.forget, **budget,
            )  # fmt: skip
            print(f"{args.kind}: trained in {sec:.1f} s (the recipe of {path}; not cached)")
            return 0
        _, path = get_or_train(
            args.kind,
            data_root=args.data,
            seed=args.seed,
            quiet=args.quiet,
            retrain=args.retrain,
            forget=args.forget,
            **budget,
        )
        if args.out:
            shutil.copyfile(path, args.out)
        print(path)
        return 0
    if args.cmd == "demo":
        from uno.unlearn.demo import DEMO_METHODS, demo

        demo(
            args.out,
            quick=args.quick,
            steps=args.steps,
            seed=args.seed,
            methods=args.methods or DEMO_METHODS,
            quiet=args.quiet,
        )
        return 0
    if args.cmd == "unlearn":
        return _unlearn(args)
    if args.cmd == "bench":
        return _bench(args)
    raise AssertionError(args.cmd)


def _unlearn(args: argparse.Namespace) -> int:
    import os

    import torch.distributed as dist

    from uno.unlearn import parallel

    if (args.nproc or 1) > 1 and not os.environ.get(parallel.CHILD_ENV):
        return parallel.launch(args.argv, args.nproc)  # the ranks run this command again
    owned = not (dist.is_available() and dist.is_initialized())
    world = parallel.start()
    try:
        rc = _unlearn_here(args, world is None or world.main)
    except parallel.PeerError as e:  # another rank's error is the cause: one line, its own status
        parallel.stop(world, owned, ok=False)
        print(f"uno: error: {_one_line(e)}", file=sys.stderr)
        return parallel.PEER_EXIT
    except BaseException:
        parallel.stop(world, owned, ok=False)
        raise
    parallel.stop(world, owned)
    if owned and world is not None and args.parallel == "fsdp2":
        parallel.exit_now(rc)  # gloo's threads outlive the group once DTensors ran (world.py)
    return rc


def _unlearn_here(args: argparse.Namespace, main: bool) -> int:
    from uno.unlearn import io, metrics
    from uno.unlearn.run import unlearn

    cfg = _run_config(args)
    runs = _runs(cfg, args)
    if args.seeds:
        res = [unlearn(c, out, resume=args.resume, parallel=args.parallel) for c, out in runs]
        keys = [
            "steps_to_forget",
            "time_to_forget_s",
            "per_step_s",
            "fid_after",
            "elbo_after",
            "f_after_5",
            "cos2_mean",
        ]
        for k in keys:
            if main:
                print(f"{k:18s} {metrics.fmt_mean_std([r[k] for r in res])}")
        return 0
    summary = unlearn(cfg, args.out, resume=args.resume, parallel=args.parallel)
    if not main:  # rank 0 reports
        return 0
    print(io.dumps(summary, indent=2))
    if not summary["reached"]:
        print(
            f"uno: forget fraction did not reach tau={cfg.tau} in {summary['steps_run']} steps (not reached)",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
