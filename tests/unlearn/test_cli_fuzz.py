"""Random bad command lines (hypothesis): exit 2, one stderr line, no traceback, nothing written.

The parser and the checks run in-process (they come before any model or data is loaded, so each example
takes milliseconds); ``test_cli_errors.py`` runs the real entry point. Every example holds at least one bad
value, so none may start a run; the tiny model files make a slip cost seconds, not a training run.
"""

from __future__ import annotations

import math
from pathlib import Path

from cli_campaign import snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from uno.cli import main
from uno.unlearn import io

#: flag → kind of value and its valid range (low, high, whether low itself is excluded)
INT_FLAGS = {
    "--steps": 0,
    "--batch": 1,
    "--monitor": 1,
    "--ckpt-every": 1,
    "--k": 1,
    "--fid-n": 2,
    "--seeds": 1,
    "--threads": 1,
}
REAL_FLAGS = {  # (low, high, low excluded)
    "--lr": (0.0, math.inf, True),
    "--tau": (0.0, 1.0, True),
    "--lam": (0.0, math.inf, False),
    "--w-u": (0.0, math.inf, False),
    "--w-c": (0.0, math.inf, False),
    "--w-j": (0.0, math.inf, False),
}

not_a_number = st.sampled_from(["", "x", "1,5", "0x10", "--", "[]", "one", "1e", "∞", "1 2"])
not_an_int = st.one_of(not_a_number, st.sampled_from(["1.5", "2.0", "1e3", "nan", "inf"]))


@st.composite
def bad_int(draw):
    flag = draw(st.sampled_from(sorted(INT_FLAGS)))
    low = INT_FLAGS[flag]
    value = draw(st.one_of(not_an_int, st.integers(max_value=low - 1).map(str)))
    return [flag, value]


@st.composite
def bad_real(draw):
    flag = draw(st.sampled_from(sorted(REAL_FLAGS)))
    low, high, open_ = REAL_FLAGS[flag]
    below = st.floats(max_value=low, exclude_max=not open_, allow_nan=False).filter(
        lambda x: open_ or x < low  # -0.0 is not below 0.0
    )
    above = st.floats(min_value=high, exclude_min=True) if math.isfinite(high) else st.nothing()
    special = st.sampled_from(["nan", "inf", "-inf", "NaN", "1e999"])
    value = draw(st.one_of(not_a_number, special, below.map(repr), above.map(repr)))
    return [flag, value]


bad_seed = st.one_of(
    not_an_int, st.integers(max_value=-1).map(str), st.integers(min_value=2**63).map(str)
).map(lambda v: ["--seed", v])


@st.composite
def bad_path(draw, files):
    """A path flag whose value is a file where a folder is needed, a missing file, or similar."""
    f = files["file"]
    choice = draw(
        st.sampled_from(["out-file", "out-under-file", "judge", "critic", "model", "data"])
    )
    if choice == "out-file":
        return ["--out", str(f)]
    if choice == "out-under-file":
        return ["--out", str(f / draw(st.sampled_from(["a", "a/b", "run"])))]
    missing = str(files["root"] / draw(st.sampled_from(["nope", "no/such.safetensors", "x.st"])))
    if choice == "data":
        return ["--data", missing]
    return [f"--{choice}", draw(st.sampled_from([missing, str(files["root"])]))]


def _check(capsys, argv, root: Path, out: Path) -> None:
    before = snapshot(root)
    rc = main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, (argv, err)
    assert len(lines) == 1 and lines[0].startswith("uno: error:"), (argv, err)
    assert "Traceback" not in err
    assert not out.exists()
    assert snapshot(root) == before


def _files(tmp_path_factory, tiny_models):
    root = tmp_path_factory.mktemp("fuzz")
    vae, judge = tiny_models
    io.save_model(root / "vae.safetensors", vae)
    io.save_model(root / "judge.safetensors", judge)
    (root / "file").write_text("x")
    return {"root": root, "file": root / "file"}


SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None
)


def test_random_bad_flags(capsys, tmp_path_factory, tiny_models):
    files = _files(tmp_path_factory, tiny_models)
    root = files["root"]
    base = [
        "unlearn",
        "--model",
        str(root / "vae.safetensors"),
        "--judge",
        str(root / "judge.safetensors"),
    ]
    base += ["--steps", "2", "--batch", "8", "--monitor", "16", "--fid-n", "20", "--quiet"]

    @SETTINGS
    @given(
        bad=st.lists(
            st.one_of(bad_int(), bad_real(), bad_seed, bad_path(files)), min_size=1, max_size=3
        ),
        order=st.randoms(use_true_random=False),
    )
    def run(bad, order):
        out = root / "out"
        pieces = [["--out", str(out)], *bad]  # a later --out wins, as argparse does
        order.shuffle(pieces[1:])
        argv = base + [a for p in pieces for a in p]
        _check(capsys, argv, root, out)

    run()


def test_random_bad_train_and_demo_flags(capsys, tmp_path_factory, tiny_models):
    files = _files(tmp_path_factory, tiny_models)
    root = files["root"]

    @SETTINGS
    @given(
        cmd=st.sampled_from([["train", "vae"], ["train", "judge"], ["train", "gan"], ["demo"]]),
        value=st.one_of(not_an_int, st.integers(max_value=0).map(str)),
        which=st.sampled_from(["--epochs", "--steps", "--threads", "--seed"]),
    )
    def run(cmd, value, which):
        if which == "--seed" and value.lstrip("-").isdigit() and int(value) >= 0:
            value = "-1" if value == "0" else value  # 0 is a valid seed
        if cmd == ["demo"] and which == "--epochs":
            which = "--steps"
        out = root / "out"
        argv = [*cmd, which, value, "--quiet"]
        if cmd == ["demo"]:
            argv += ["--out", str(out)]
        _check(capsys, argv, root, out)

    run()
