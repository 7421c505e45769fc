"""The ``uno`` command: ``uno train``, ``uno unlearn``, ``uno demo``, ``uno methods``, ``uno bench``.

Bad input (unknown method/model/class, missing or malformed data or checkpoint, incompatible
checkpoint) prints one clear line on stderr and exits with status 2; a NaN/Inf stop exits with 3.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bars or chatter")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's; 1 is steadier on a busy machine)",
    )


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="uno", description="Unlearning of generative models by gradient orthogonalization."
    )
    sub = ap.add_subparsers(dest="cmd", required=True)

    t = sub.add_parser("train", help="pretrain a model on MNIST (embedded default) and cache it")
    t.add_argument("kind", choices=["vae", "gan", "judge"])
    t.add_argument("--data", default=None, help="MNIST root (torchvision layout or flat IDX files)")
    t.add_argument("--epochs", type=int, default=None, help="vae/judge epochs (vae 50, judge 10)")
    t.add_argument("--steps", type=int, default=None, help="gan generator steps (1000)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--retrain", action="store_true", help="ignore the cached model")
    t.add_argument("--out", default=None, help="also copy the model to this file")
    _common(t)

    u = sub.add_parser("unlearn", help="run one unlearning method")
    u.add_argument("--model", default="vae", help="'vae', 'gan' or a model file (.safetensors)")
    u.add_argument("--method", default="uno", help="see `uno methods`")
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
    _common(u)

    d = sub.add_parser(
        "demo", help="the main job: forget digit 1 with uno and surgery on the embedded MNIST"
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
        help="project, optim, per-sample, combine: kernel microbenchmarks; "
        "table: the unlearning comparison table (issue 6)",
    )
    b.add_argument("bench_args", nargs=argparse.REMAINDER, help="options of the benchmark")
    return ap


def _bench(args: argparse.Namespace) -> int:
    from uno.bench import run

    return run(args.bench, args.bench_args)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from uno.unlearn.errors import NonFiniteError, UnoUserError

    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="uno: %(message)s")
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)
    try:
        return _dispatch(args)
    except UnoUserError as e:
        print(f"uno: error: {e}", file=sys.stderr)
        return 2
    except NonFiniteError as e:
        print(f"uno: stopped: {e}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print(
            "uno: interrupted (the last checkpoint is kept; rerun with --resume)", file=sys.stderr
        )
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    if args.cmd == "methods":
        from uno.unlearn.methods import names

        print("\n".join(names()))
        return 0
    if args.cmd == "train":
        import shutil

        from uno.unlearn.train import get_or_train

        budget = {"steps": args.steps} if args.kind == "gan" else {"epochs": args.epochs}
        _, path = get_or_train(
            args.kind,
            data_root=args.data,
            seed=args.seed,
            quiet=args.quiet,
            retrain=args.retrain,
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
    import json

    from uno.unlearn import metrics
    from uno.unlearn.run import RunConfig, unlearn

    fields = RunConfig.__dataclass_fields__
    cfg = RunConfig(**{k: v for k, v in vars(args).items() if k in fields})
    if args.seeds:
        import copy
        from pathlib import Path

        res = []
        for s in range(args.seeds):
            c = copy.deepcopy(cfg)
            c.seed = s
            res.append(unlearn(c, str(Path(args.out) / f"seed{s}"), resume=args.resume))
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
            print(f"{k:18s} {metrics.fmt_mean_std([r[k] for r in res])}")
        return 0
    summary = unlearn(cfg, args.out, resume=args.resume)
    print(json.dumps(summary, indent=2, default=float))
    if not summary["reached"]:
        print(
            f"uno: forget fraction did not reach tau={cfg.tau} in {summary['steps_run']} steps (not reached)",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
