"""Issue 13's `uno` command items: one line ``uno: error: ...``, exit 2, nothing written, before loading.

Every bad input here is rejected before a model or data set is loaded: the tests pass tiny model files so
that a check that slipped would run (and fail the test) in seconds instead of training the defaults.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_campaign import snapshot, strict_loads

import uno
from uno.cli import main
from uno.unlearn import io

PY = str(Path(uno.__file__).parents[1])  # the tree under test, also for child processes
SMALL = ["--steps", "3", "--batch", "16", "--monitor", "32", "--fid-n", "50", "--quiet"]


@pytest.fixture
def model_files(tmp_path, tiny_models):
    vae, judge = tiny_models
    io.save_model(tmp_path / "vae.safetensors", vae)
    io.save_model(tmp_path / "judge.safetensors", judge)
    return [
        "--model",
        str(tmp_path / "vae.safetensors"),
        "--judge",
        str(tmp_path / "judge.safetensors"),
    ]


def _one_error(capsys, argv, target=None):
    """Run ``argv``; assert exit 2, one ``uno: error:`` line, ``target`` untouched; return the line."""
    before = snapshot(Path(target)) if target else None
    rc = main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("uno: error:"), err
    if target:
        assert snapshot(Path(target)) == before
    return lines[0]


@pytest.mark.parametrize(
    "flag, value, msg",
    [
        ("--lr", "-1", "--lr must be a finite number > 0, got -1.0"),
        ("--lr", "nan", "--lr must be a finite number > 0, got nan"),
        ("--lr", "inf", "--lr must be a finite number > 0"),
        ("--threads", "-3", "--threads must be an integer >= 1, got -3"),
        ("--threads", "0", "--threads must be an integer >= 1, got 0"),  # rejected, not ignored
        ("--ckpt-every", "0", "--ckpt-every must be an integer >= 1, got 0"),
        ("--tau", "0", "--tau must be a finite number > 0 and <= 1"),
        ("--steps", "-1", "--steps must be an integer >= 0"),
        ("--batch", "0", "--batch must be an integer >= 1"),
        ("--monitor", "0", "--monitor must be an integer >= 1"),
        ("--k", "0", "--k must be an integer >= 1"),
        ("--fid-n", "1", "--fid-n must be an integer >= 2"),
        ("--lam", "nan", "--lam must be a finite number >= 0"),
        ("--w-u", "-1", "--w-u must be a finite number >= 0"),
        ("--w-c", "inf", "--w-c must be a finite number >= 0"),
        ("--w-j", "-2", "--w-j must be a finite number >= 0"),
        ("--seed", str(2**64), "--seed must be an integer in [0, 2**63)"),
        ("--seeds", "0", "--seeds must be an integer >= 1"),
        ("--lr", "abc", "argument --lr: invalid float value: 'abc'"),
    ],
)
def test_numeric_flags_one_message_each(capsys, tmp_path, model_files, flag, value, msg):
    out = tmp_path / "out"
    line = _one_error(capsys, ["unlearn", *model_files, *SMALL, flag, value, "--out", str(out)])
    assert msg in line
    assert not out.exists()


def test_out_is_a_file_or_under_one(capsys, tmp_path, model_files):
    f = tmp_path / "file"
    f.write_text("keep")
    line = _one_error(capsys, ["unlearn", *model_files, *SMALL, "--out", str(f)], f)
    assert "is a file, not a folder" in line
    line = _one_error(capsys, ["unlearn", *model_files, *SMALL, "--out", str(f / "sub")], f)
    assert f"{f} is a file" in line
    assert f.read_text() == "keep"


def _chattr(flag: str, p: Path) -> bool:
    try:
        return subprocess.run(["chattr", flag, str(p)], capture_output=True).returncode == 0
    except FileNotFoundError:
        return False


def test_out_immutable_folder(capsys, tmp_path, model_files):
    d = tmp_path / "imm"
    d.mkdir()
    if not _chattr("+i", d):
        pytest.skip("chattr +i is not available here (needs root and a supporting file system)")
    try:
        for out in (d, d / "run"):
            line = _one_error(capsys, ["unlearn", *model_files, *SMALL, "--out", str(out)], d)
            assert "is not writable" in line
    finally:
        _chattr("-i", d)
    assert list(d.iterdir()) == []


def test_out_read_only_mount(capsys, tmp_path, model_files):
    """Root ignores permission bits, so the check is a real probe file; a read-only bind mount shows it."""
    d = tmp_path / "ro"
    d.mkdir()
    ok = subprocess.run(["mount", "--bind", str(d), str(d)], capture_output=True).returncode == 0
    if not ok:
        pytest.skip("cannot bind-mount here (needs root)")
    try:
        if subprocess.run(
            ["mount", "-o", "remount,ro,bind", str(d)], capture_output=True
        ).returncode:
            pytest.skip("cannot remount read-only here")
        line = _one_error(capsys, ["unlearn", *model_files, *SMALL, "--out", str(d / "run")], d)
        assert "is not writable" in line and "Read-only file system" in line
    finally:
        subprocess.run(["umount", str(d)], capture_output=True)


def test_out_probe_reports_permission_denied(capsys, tmp_path, model_files, monkeypatch):
    """What a non-root user sees on a 0o555 folder (root ignores the bits, so the probe is faked)."""
    import tempfile

    d = tmp_path / "locked"
    d.mkdir()

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    line = _one_error(capsys, ["unlearn", *model_files, *SMALL, "--out", str(d / "run")], d)
    assert "is not writable (Permission denied in" in line


def test_resume_a_finished_run_with_fewer_steps(capsys, tmp_path, model_files):
    out = tmp_path / "run"
    assert main(["unlearn", *model_files, *SMALL, "--out", str(out)]) == 0
    capsys.readouterr()
    argv = ["unlearn", *model_files, *SMALL, "--steps", "2", "--resume", "--out", str(out)]
    line = _one_error(capsys, argv, out)
    assert "nothing to do" in line and "finished at step 3" in line and "--steps 3 or more" in line


def test_bit_flipped_checkpoint_is_named_and_never_called_good(capsys, tmp_path, model_files):
    out = tmp_path / "run"
    assert main(["unlearn", *model_files, *SMALL, "--out", str(out)]) == 0
    capsys.readouterr()
    ckpt = out / "ckpt.safetensors"
    b = bytearray(ckpt.read_bytes())
    b[-2] ^= 0x40  # a high exponent bit of a float32 in the data section
    ckpt.write_bytes(bytes(b))
    line = _one_error(
        capsys,
        ["unlearn", *model_files, *SMALL, "--steps", "5", "--resume", "--out", str(out)],
        out,
    )
    assert str(ckpt) in line and "checksum mismatch" in line and "good checkpoint" not in line


def test_log_json_and_stdout_are_strict_json(capsys, tmp_path, model_files):
    out = tmp_path / "run"
    assert main(["unlearn", *model_files, *SMALL, "--out", str(out)]) == 0
    printed = strict_loads(capsys.readouterr().out)
    log = strict_loads((out / "log.json").read_text())
    assert isinstance(printed, dict) and isinstance(log, dict)
    assert log["rows"][0]["loss_f"] is None  # not measured at step 0: null, not NaN
    assert strict_loads((out / "config.json").read_text())
    _, meta = io.load_tensors(out / "ckpt.safetensors")
    assert meta["rows"][0]["loss_f"] is None
    assert "nan" in (out / "log.csv").read_text()  # the CSV keeps Python's nan (documented)


def _child(prelude: str, argv: list[str], cache: Path) -> subprocess.CompletedProcess:
    """``uno argv`` in a child process that first runs ``prelude`` (to hide a module, cut a budget)."""
    code = f"import sys\n{prelude}from uno.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    return subprocess.run(
        [sys.executable, "-c", code, *argv],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=PY, UNO_CACHE_DIR=str(cache)),
        timeout=600,
    )


@pytest.mark.parametrize(
    "module, cmd",
    [
        ("safetensors", "unlearn"),
        ("matplotlib", "unlearn"),
        ("scipy", "unlearn"),
        ("tqdm", "unlearn"),
        ("safetensors", "demo"),
        ("tqdm", "train judge"),
    ],
)
def test_missing_extra_says_how_to_install(tmp_path, module, cmd):
    out = tmp_path / "out"
    argv = [*cmd.split(), "--quiet"] + (["--out", str(out)] if cmd != "train judge" else [])
    r = _child(f"import sys; sys.modules[{module!r}] = None\n", argv, tmp_path / "cache")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert 'pip install "uno-kernels[unlearn]"' in lines[0] and module in lines[0]
    assert not out.exists() and not (tmp_path / "cache").exists()


def test_training_a_gan_is_announced_even_when_quiet(tmp_path):
    """`uno unlearn --model gan --quiet` without a cached GAN: one line says it trains one first.

    The budgets are cut (1 GAN step, 1 epoch for each judge, 500 fresh codes) so that the test takes
    seconds.
    """
    prelude = (
        "from uno.unlearn import train\n"
        "train.DEFAULTS['gan']['steps'] = 1; train.DEFAULTS['judge']['epochs'] = 1\n"
        "train.DEFAULTS['judge2']['epochs'] = 1\n"
    )
    argv = ["unlearn", "--model", "gan", *SMALL[2:], "--steps", "1", "--fresh-n", "500"]
    argv += ["--out", str(tmp_path / "g")]
    r = _child(prelude, argv, tmp_path / "cache")
    notes = [ln for ln in r.stderr.splitlines() if "training one" in ln]
    assert any(ln.startswith("uno: no cached gan") for ln in notes), r.stderr
    assert len([ln for ln in notes if " gan " in ln]) == 1
    assert "Traceback" not in r.stderr


def test_train_budget_flags_belong_to_their_kind(capsys, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("UNO_CACHE_DIR", str(cache))
    assert "--epochs" in _one_error(capsys, ["train", "judge", "--steps", "5"])
    assert "--steps" in _one_error(capsys, ["train", "gan", "--epochs", "2"])
    assert "--epochs must be an integer >= 1, got 0" in _one_error(
        capsys, ["train", "vae", "--epochs", "0"]
    )
    line = _one_error(capsys, ["train", "judge", "--epochs", "1", "--out", str(tmp_path)])
    assert "is a folder, not a file" in line
    assert not cache.exists()  # nothing trained


def test_demo_checks_before_training(capsys, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("UNO_CACHE_DIR", str(cache))
    out = tmp_path / "demo"
    assert "unknown method 'nope'" in _one_error(
        capsys, ["demo", "--methods", "nope", "--out", str(out)]
    )
    assert "--steps must be an integer >= 1" in _one_error(
        capsys, ["demo", "--steps", "0", "--out", str(out)]
    )
    f = tmp_path / "f"
    f.write_text("x")
    assert "is a file" in _one_error(capsys, ["demo", "--out", str(f)], f)
    assert not out.exists() and not cache.exists()


def test_entry_point_bad_flags(tmp_path):
    """The real entry point: one line, exit 2, no traceback, nothing created."""
    env = dict(os.environ, PYTHONPATH=PY)
    f = tmp_path / "file"
    f.write_text("x")
    for argv in (
        ["unlearn", "--lr", "nan", "--out", str(tmp_path / "o")],
        ["unlearn", "--out", str(f / "o")],
        ["unlearn", "--threads", "0", "--out", str(tmp_path / "o")],
        ["unlearn", "--lr", "x", "--out", str(tmp_path / "o")],
    ):
        r = subprocess.run(
            [sys.executable, "-m", "uno.cli", *argv],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("uno: error:"), (
            r.stderr
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_config_json_is_strict(tmp_path):
    io.write_json(tmp_path / "x.json", {"a": float("nan"), "b": [float("inf"), 1.5], "c": (1, 2)})
    assert json.loads((tmp_path / "x.json").read_text()) == {
        "a": None,
        "b": [None, 1.5],
        "c": [1, 2],
    }


def test_unwritable_model_cache_fails_before_training(capsys, tmp_path, monkeypatch):
    """A cache that cannot take the model is an error before the training, not after it."""
    f = tmp_path / "file"
    f.write_text("x")
    monkeypatch.setenv("UNO_CACHE_DIR", str(f / "cache"))
    line = _one_error(capsys, ["train", "judge", "--epochs", "1", "--quiet"], f)
    assert "the model cache ($UNO_CACHE_DIR)" in line and "is a file" in line


def test_out_that_cannot_be_looked_at(capsys, tmp_path, model_files, monkeypatch):
    """A parent without search permission (non-root): stat raises PermissionError, not a traceback."""
    locked = tmp_path / "locked"
    real_exists = Path.exists

    def exists(self, *a, **k):
        if str(self).startswith(str(locked)):
            raise PermissionError(13, "Permission denied", str(self))
        return real_exists(self, *a, **k)

    monkeypatch.setattr(Path, "exists", exists)
    line = _one_error(capsys, ["unlearn", *model_files, *SMALL, "--out", str(locked / "run")])
    assert "cannot be checked (Permission denied)" in line
