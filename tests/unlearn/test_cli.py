"""The `uno` command: error paths (clear message, non-zero exit, nothing written) and the demo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from uno.cli import main
from uno.unlearn import io


def _err(capsys, argv):
    rc = main(argv)
    return rc, capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, msg",
    [
        (["unlearn", "--method", "nope"], "unknown method 'nope'"),
        (["unlearn", "--forget", "10"], "unknown class '10'"),
        (["unlearn", "--model", "no-such-model"], "unknown model 'no-such-model'"),
        (["unlearn", "--data", "/no/such/dir"], "data path does not exist"),
    ],
)
def test_unlearn_bad_input(capsys, tmp_path, argv, msg):
    out = tmp_path / "out"
    rc, err = _err(capsys, [*argv, "--out", str(out), "--quiet"])
    assert rc == 2 and msg in err and err.startswith("uno: error:")
    assert not out.exists()


def test_bad_checkpoints(capsys, tmp_path, tiny_models):
    _, judge = tiny_models
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 100)
    rc, err = _err(
        capsys, ["unlearn", "--model", str(bad), "--out", str(tmp_path / "o1"), "--quiet"]
    )
    assert rc == 2 and "not a readable safetensors" in err
    io.save_model(tmp_path / "judge.safetensors", judge)
    rc, err = _err(
        capsys,
        [
            "unlearn",
            "--model",
            str(tmp_path / "judge.safetensors"),
            "--out",
            str(tmp_path / "o2"),
            "--quiet",
        ],
    )
    assert rc == 2 and "holds a mlp_judge model" in err
    rc, err = _err(capsys, ["unlearn", "--resume", "--out", str(tmp_path / "o3"), "--quiet"])
    assert rc == 2 and "nothing to resume" in err
    assert not any((tmp_path / d).exists() for d in ("o1", "o2", "o3"))


def test_unlearn_from_files(capsys, tmp_path, tiny_models):
    vae, judge = tiny_models
    io.save_model(tmp_path / "vae.safetensors", vae)
    io.save_model(tmp_path / "judge.safetensors", judge)
    out = tmp_path / "run"
    rc = main(
        [
            "unlearn",
            "--model",
            str(tmp_path / "vae.safetensors"),
            "--judge",
            str(tmp_path / "judge.safetensors"),
            "--method",
            "surgery",
            "--steps",
            "3",
            "--fid-n",
            "300",
            "--monitor",
            "64",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert rc == 0
    s = json.loads(capsys.readouterr().out)
    assert s["method"] == "surgery" and s["steps_run"] == 3
    assert (out / "curve.png").is_file()


def test_methods_command(capsys):
    assert main(["methods"]) == 0
    assert "uno-subspace" in capsys.readouterr().out


def test_entry_point_exit_code(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[2] / "python"))
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "uno.cli",
            "unlearn",
            "--method",
            "nope",
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode == 2 and "unknown method" in r.stderr and "Traceback" not in r.stderr


def test_demo_quick_forgets_digit_1_with_uno_hat(capsys, tmp_path):
    """The reduced-budget demo: `uno-hat` (uno with the histogram loss, w_u = 1e3) reaches f < 0.02."""
    rc = main(
        [
            "demo",
            "--quick",
            "--methods",
            "uno-hat",
            "--out",
            str(tmp_path / "demo"),
            "--quiet",
            "--threads",
            "1",
        ]
    )
    assert rc == 0
    res = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert res[0]["method"] == "uno-hat"
    assert res[0]["reached"] and res[0]["f_final"] < 0.02
    assert res[0]["steps_to_forget"] <= 5
    # the headline: stable on fresh codes with both judges; and the output explains itself
    assert res[0]["stable_steps"] is not None and res[0]["f_fresh2_final"] is not None
    out = " ".join(capsys.readouterr().out.split())  # the explanation is wrapped at 100 columns
    said = f"(uno plus the histogram loss) forgets digit 1 in {res[0]['stable_steps']} stable steps"
    assert said in out and "docs/reproduction.md" in out  # said from the run's own numbers
    for f in ("table.md", "curves.png", "uno-hat/before.png", "uno-hat/after.png"):
        assert (tmp_path / "demo" / f).is_file()
