"""The `uno` command's bad-input campaign (issue 13): run every case in a fresh process and count outcomes.

    PYTHONPATH=python python tests/unlearn/cli_campaign.py [--work DIR] [-v]

Each case is a command line with one bad input (a type, a range, a path, a run folder's state, a missing
extra) or a valid run whose output must be strict. Outcomes:
    clean      exit 2, exactly one stderr line ``uno: error: ...``, no traceback, the output folder not
               created or modified (for the strict-output cases: valid JSON everywhere, exit 0);
    traceback  a Python traceback on stderr (or an exit status that is not 0/2/3);
    silent     a wrong or misleading answer without an error (exit 0 on bad input, a corrupt checkpoint
               called good, NaN in JSON, an untrained model cached as trained);
    unclean    an error, but not one line, or after writing to the output folder.
Runs against any tree (``PYTHONPATH`` decides), so the same cases count the code before and after a fix.
Uses tiny untrained model files, ``UNO_CACHE_DIR`` under the work folder, and small budgets.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

SMALL = ["--steps", "3", "--batch", "16", "--monitor", "32", "--fid-n", "50", "--quiet"]


@dataclass
class Case:
    name: str
    argv: list[str]
    out: Optional[str] = None  # the folder/file that must stay untouched
    block: tuple[str, ...] = ()  # modules made unimportable (sys.modules[name] = None)
    setup: Optional[Callable[[Path], None]] = None
    strict: bool = False  # a valid run: exit 0 and strict JSON on stdout and in log.json
    expect_rc: int = 2
    check: Optional[Callable[[Result], Optional[str]]] = None  # extra "silent" check on the result
    env: Optional[dict[str, str]] = None  # extra environment variables
    notes: list[str] = field(default_factory=list)


@dataclass
class Result:
    rc: int
    out: str
    err: str


def _reject(c: str) -> None:
    raise ValueError(f"non-strict JSON constant {c}")


def strict_loads(text: str) -> object:
    return json.loads(text, parse_constant=_reject)


def snapshot(p: Path) -> object:
    """Contents of ``p`` (file bytes' hashes, names, the folder's mtime): equal iff untouched."""
    if not p.exists():
        return None
    if p.is_file():
        return ("file", hashlib.sha256(p.read_bytes()).hexdigest())
    items = []
    for q in sorted(p.rglob("*")):
        items.append(
            (str(q.relative_to(p)), q.is_file() and hashlib.sha256(q.read_bytes()).hexdigest())
        )
    return ("dir", p.stat().st_mtime_ns, items)


def run_cli(argv: list[str], env: dict[str, str], block: tuple[str, ...] = ()) -> Result:
    code = (
        "import sys\n"
        + "".join(f"sys.modules[{m!r}] = None\n" for m in block)
        + "from uno.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, env=env, timeout=900
    )
    return Result(r.returncode, r.stdout, r.stderr)


def classify(case: Case, res: Result, before: object, after: object) -> tuple[str, str]:
    lines = [ln for ln in res.err.splitlines() if ln.strip()]
    if "Traceback" in res.err or res.rc not in (0, 2, 3):
        return "traceback", (lines[-1] if lines else f"rc {res.rc}")
    if case.check is not None:
        why = case.check(res)
        if why:
            return "silent", why
    if case.strict:
        if res.rc != 0:
            return "unclean", f"rc {res.rc}: {lines[-1] if lines else ''}"
        try:
            strict_loads(res.out)
            if case.out:
                strict_loads((Path(case.out) / "log.json").read_text())
        except ValueError as e:
            return "silent", f"not strict JSON ({e})"
        return "clean", "strict JSON"
    if res.rc == 0:
        return "silent", "exit 0 on bad input"
    if res.rc != case.expect_rc:
        return "silent", f"rc {res.rc}: {lines[-1] if lines else ''}"
    if len(lines) != 1 or not lines[0].startswith("uno: error:"):
        return "unclean", f"{len(lines)} stderr lines: {lines[-1] if lines else ''}"
    if before != after:
        return "unclean", "output folder created or modified: " + lines[0]
    return "clean", lines[0]


def build_cases(w: Path) -> list[Case]:
    vae, judge = str(w / "vae.safetensors"), str(w / "judge.safetensors")
    files = ["--model", vae, "--judge", judge]

    def out(name: str) -> str:
        return str(w / "outs" / name)

    def unlearn(name: str, *flags: str, **kw: object) -> Case:
        return Case(
            name, ["unlearn", *files, *SMALL, *flags, "--out", out(name)], out=out(name), **kw
        )  # type: ignore[arg-type]

    cases = []
    # -- types (argparse) --
    for flag, v in [
        ("--lr", "abc"), ("--steps", "1.5"), ("--batch", "x"), ("--seed", "1e3"), ("--tau", ""),
        ("--threads", "two"), ("--ckpt-every", "2.0"), ("--k", "-"), ("--fid-n", "abc"),
        ("--monitor", "[]"), ("--lam", "1,0"), ("--seeds", "2.5"),
    ]:  # fmt: skip
        cases.append(unlearn(f"type {flag} {v!r}", flag, v))
    cases.append(
        Case("unknown flag", ["unlearn", "--no-such-flag", "--out", out("uf")], out=out("uf"))
    )
    cases.append(Case("missing value", ["unlearn", "--lr", "--out", out("mv")], out=out("mv")))
    cases.append(Case("no subcommand", []))
    # -- ranges --
    for flag, v in [
        ("--lr", "-1"), ("--lr", "0"), ("--lr", "nan"), ("--lr", "inf"), ("--tau", "0"), ("--tau", "1.5"),
        ("--tau", "nan"), ("--steps", "-1"), ("--batch", "0"), ("--monitor", "0"), ("--ckpt-every", "0"),
        ("--ckpt-every", "-2"), ("--k", "0"), ("--fid-n", "1"), ("--fid-n", "0"), ("--lam", "-1"),
        ("--lam", "nan"), ("--w-u", "-5"), ("--w-u", "inf"), ("--w-c", "nan"), ("--w-j", "-1"),
        ("--seed", str(2**64)), ("--seeds", "0"), ("--seeds", "-1"),
        ("--threads", "-3"), ("--threads", "0"),
    ]:  # fmt: skip
        cases.append(unlearn(f"range {flag} {v}", flag, v))

    # -- paths --
    def under(name: str, make: Callable[[Path], None]) -> Case:
        """``--out`` inside a folder or file that ``make`` creates (and that must stay untouched)."""
        argv = ["unlearn", *files, *SMALL, "--out", out(name) + "/run"]
        return Case(
            f"--out under {name}", argv, out=out(name), setup=lambda w: make(Path(out(name)))
        )

    cases.append(unlearn("--out is a file", setup=lambda w: _touch(Path(out("--out is a file")))))
    cases.append(
        unlearn("--out immutable", setup=lambda w: _immutable(Path(out("--out immutable"))))
    )
    cases.append(under("a file", _touch))
    cases.append(under("an immutable folder", _immutable))
    cases.append(Case("--out ''", ["unlearn", *files, *SMALL, "--out", ""]))
    cases.append(unlearn("--judge missing", "--judge", str(w / "nope.safetensors")))
    cases.append(unlearn("--judge is a folder", "--judge", str(w)))
    cases.append(unlearn("--critic missing", "--critic", str(w / "nope.safetensors")))
    cases.append(unlearn("--model is a folder", "--model", str(w)))
    cases.append(unlearn("--data missing", "--data", str(w / "no-data")))
    cases.append(unlearn("--data is a file", "--data", vae))
    cases.append(unlearn("--forget unknown", "--forget", "11"))
    cases.append(unlearn("--forget every class", "--forget", *[str(i) for i in range(10)]))
    cases.append(unlearn("--method unknown", "--method", "nope"))
    cases.append(unlearn("--dataset celeba without --data", "--dataset", "celeba"))

    # -- run folders: a finished 3-step run, then (after an optional edit) a second command on it --
    def on_a_run(name: str, flags: list[str], edit=None, check=None) -> Case:  # type: ignore[no-untyped-def]
        folder = out(name)

        def setup(w: Path) -> None:
            _run(w, ["unlearn", *files, *SMALL, "--out", folder])
            if edit is not None:
                edit(Path(folder))

        argv = ["unlearn", *files, *SMALL, *flags, "--out", folder]
        return Case(name, argv, out=folder, setup=setup, check=check)

    cases.append(unlearn("--resume, nothing there", "--resume"))
    cases.append(
        on_a_run(
            "--resume a finished run with fewer --steps",
            ["--steps", "2", "--resume"],
            check=lambda r: (
                "reports the finished run as a 2-step resume"
                if r.rc == 0 and '"steps_run": 3' in r.out
                else None
            ),
        )
    )
    cases.append(
        on_a_run(
            "--resume a bit-flipped checkpoint",
            ["--steps", "5", "--resume"],
            edit=lambda d: _flip(d / "ckpt.safetensors"),
            check=lambda r: (
                "called the corrupt checkpoint good"
                if "good checkpoint" in r.err
                else ("resumed from a corrupt checkpoint" if r.rc == 0 else None)
            ),
        )
    )
    cases.append(
        on_a_run(
            "--resume with a malformed config.json",
            ["--resume"],
            edit=lambda d: (d / "config.json").write_text("{"),
        )
    )
    cases.append(on_a_run("--resume with another --lr", ["--lr", "0.5", "--resume"]))
    cases.append(on_a_run("a second run into a run folder", []))
    # -- strict output of valid runs --
    cases.append(
        Case(
            "valid run: strict JSON (stdout, log.json)",
            ["unlearn", *files, *SMALL, "--out", out("ok")],
            out=out("ok"),
            strict=True,
        )
    )
    # -- the missing extra --
    for cmd in (
        ["unlearn", *files, *SMALL],
        ["demo", "--quick"],
        ["train", "judge", "--epochs", "1"],
    ):
        for mod in ("safetensors", "tqdm") + (("matplotlib", "scipy") if cmd[0] != "train" else ()):
            name = f"{cmd[0]} without {mod}"
            cases.append(Case(name, [*cmd, *(["--out", out(name)] if cmd[0] != "train" else [])],
                              out=out(name) if cmd[0] != "train" else None, block=(mod,)))  # fmt: skip
    # -- train --
    for kind, flag, v in [
        ("vae", "--epochs", "0"), ("vae", "--epochs", "-1"), ("gan", "--steps", "0"),
        ("judge --epochs 1", "--steps", "5"), ("gan --steps 1", "--epochs", "2"),
    ]:  # fmt: skip
        cases.append(
            Case(
                f"train {kind} {flag} {v}",
                ["train", *kind.split(), flag, v, "--quiet"],
                check=lambda r: (
                    "an untrained or wrongly budgeted model cached" if r.rc == 0 else None
                ),
            )
        )
    cases.append(
        Case(
            "train --out is a folder",
            ["train", "judge", "--epochs", "1", "--quiet", "--out", str(w)],
        )
    )
    cases.append(
        Case(
            "train --out under a file",
            ["train", "judge", "--epochs", "1", "--quiet", "--out", vae + "/judge.safetensors"],
        )
    )
    cases.append(
        Case(
            "train into a model cache under a file",
            ["train", "judge", "--epochs", "1", "--quiet"],
            out=vae,
            env={"UNO_CACHE_DIR": vae + "/cache"},
        )
    )
    # -- demo --
    for flag, v in [
        ("--methods", "nope"),
        ("--steps", "0"),
        ("--steps", "-1"),
        ("--seed", str(2**64)),
    ]:
        name = f"demo {flag} {v}"
        cases.append(
            Case(name, ["demo", "--quick", "--quiet", flag, v, "--out", out(name)], out=out(name))
        )
    cases.append(
        Case(
            "demo --out is a file",
            ["demo", "--quick", "--quiet", "--out", vae],
            out=vae,
        )
    )
    return cases


def _touch(p: Path) -> None:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("x")


IMMUTABLE: list[Path] = []


def _immutable(p: Path) -> None:
    p.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["chattr", "+i", str(p)], capture_output=True).returncode == 0:
        IMMUTABLE.append(p)


def _flip(p: Path) -> None:
    b = bytearray(p.read_bytes())
    b[-2] ^= 0x40  # a high exponent bit of the last float32 of the file's data
    p.write_bytes(bytes(b))


ENV: dict[str, str] = {}


def _run(w: Path, argv: list[str]) -> None:
    r = run_cli(argv, ENV)
    if r.rc != 0:
        raise RuntimeError(f"setup run failed: {argv}: {r.err[-500:]}")


def make_models(w: Path) -> None:
    """Tiny untrained model files (so a case that runs at all finishes in seconds)."""
    import torch

    from uno.unlearn import io
    from uno.unlearn.models import MLPJudge, MnistVAE

    torch.manual_seed(0)
    io.save_model(w / "vae.safetensors", MnistVAE(hidden=32))
    io.save_model(w / "judge.safetensors", MLPJudge(hidden=32))


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default=None, help="work folder (default: a temporary one)")
    ap.add_argument("-v", action="store_true", help="print every case's outcome")
    ap.add_argument("--only", default=None, help="run the cases whose name contains this")
    args = ap.parse_args(argv)
    w = Path(args.work or tempfile.mkdtemp(prefix="uno-campaign-")).resolve()
    if w.exists():
        shutil.rmtree(w)
    w.mkdir(parents=True)
    ENV.update(os.environ, UNO_CACHE_DIR=str(w / "cache"))
    make_models(w)
    counts = {"clean": 0, "traceback": 0, "silent": 0, "unclean": 0}
    cases = [c for c in build_cases(w) if args.only is None or args.only in c.name]
    try:
        for c in cases:
            if c.setup is not None:
                c.setup(w)
            target = Path(c.out) if c.out else None
            before = snapshot(target) if target else None
            res = run_cli(c.argv, {**ENV, **(c.env or {})}, c.block)
            after = snapshot(target) if target else None
            kind, why = classify(c, res, before, after)
            counts[kind] += 1
            if args.v or kind != "clean":
                print(f"{kind:9s} {c.name}: {why}", flush=True)
    finally:
        for p in IMMUTABLE:
            subprocess.run(["chattr", "-i", str(p)], check=False)
    print(f"tried {len(cases)} | " + " | ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
