"""``uno train diffusion`` and ``uno unlearn --model diffusion`` from the command line."""

from __future__ import annotations

import json

import pytest

from uno.cli import main
from uno.unlearn import io


def _one_error(capsys, argv, target):
    rc = main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("uno: error:"), err
    assert not target.exists()
    return lines[0]


@pytest.mark.parametrize(
    "argv, msg",
    [
        (
            ["--model", "diffusion", "--method", "fu"],
            "--method fu needs a vae or gan model, not a diffusion (--model diffusion)",
        ),
        (
            ["--model", "vae", "--method", "esd"],
            "--method esd needs a diffusion model, not a vae (--model vae)",
        ),
        (["--model", "diffusion", "--critic", "DATA"], "--critic is the GAN's"),
        (["--model", "diffusion", "--dataset", "celeba", "--data", "DATA"], "use --dataset mnist"),
        (["--model", "diffusion", "--method", "nope"], "unknown method 'nope'"),
        (["--model", "diffusion", "--monitor", "0"], "--monitor must be an integer >= 1"),
    ],
)
def test_unlearn_bad_input_is_one_line_and_writes_nothing(capsys, tmp_path, argv, msg):
    data = tmp_path / "data.bin"
    data.write_bytes(b"x")
    out = tmp_path / "run"
    argv = [a.replace("DATA", str(data)) for a in argv]
    line = _one_error(capsys, ["unlearn", *argv, "--out", str(out), "--quiet"], out)
    assert msg in line


@pytest.mark.parametrize(
    "argv, msg",
    [
        (["--epochs", "3"], "uno train diffusion: --epochs is the vae's and judge's budget"),
        (["--steps", "0"], "--steps must be an integer >= 1"),
    ],
)
def test_train_bad_input(capsys, tmp_path, argv, msg):
    out = tmp_path / "m.safetensors"
    assert msg in _one_error(capsys, ["train", "diffusion", *argv, "--out", str(out)], out)


def test_train_caches_and_reuses(capsys, tmp_path):
    out = tmp_path / "copy.safetensors"
    assert main(["train", "diffusion", "--steps", "2", "--quiet", "--out", str(out)]) == 0
    first = capsys.readouterr().out.strip()
    assert out.is_file() and first.endswith(".safetensors")
    _, meta = io.load_model(out, "diffusion_mlp")
    assert meta["budget"]["steps"] == 2 and meta["train_s"] > 0
    assert main(["train", "diffusion", "--steps", "2", "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == first  # the cached file, not a new training


def test_unlearn_a_diffusion_model_file(capsys, tmp_path, judge, mlp):
    io.save_model(tmp_path / "d.safetensors", mlp)
    io.save_model(tmp_path / "j.safetensors", judge)
    out = tmp_path / "run"
    argv = ["unlearn", "--model", str(tmp_path / "d.safetensors"), "--judge", str(tmp_path / "j.safetensors"),
            "--method", "retain-hat", "--w-u", "1", "--steps", "2", "--batch", "4", "--monitor", "4",
            "--fid-n", "4", "--out", str(out), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps_run"] == 2 and summary["method"] == "retain-hat"
    assert (out / "log.json").is_file() and (out / "ckpt.safetensors").is_file()
