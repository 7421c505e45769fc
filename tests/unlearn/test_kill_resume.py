"""SIGKILL at a random step, then ``--resume``: the final checkpoint and log equal an uninterrupted run's.

The run goes through the real ``uno`` entry point in a child process with a checkpoint every step; the
parent kills it (SIGKILL: no handler, no cleanup) once the log shows a randomly drawn step, wherever the
child then is (mid-step, mid-write). Atomic writes and per-step seeding make the resume bit-identical.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import uno
from uno.unlearn import io

PY = str(Path(uno.__file__).parents[1])  # the tree under test, also for child processes
STEPS = 40
#: columns that measure the machine, not the run
TIMING = {"dt", "peak_mem"}
TIMING_SUMMARY = {"per_step_s", "per_step_median_s", "time_to_forget_s", "peak_mem_bytes"}


def _argv(files, out):
    return [
        sys.executable, "-m", "uno.cli", "unlearn", *files, "--method", "uno-hat",
        "--steps", str(STEPS), "--batch", "16", "--monitor", "32", "--fid-n", "50",
        "--ckpt-every", "1", "--threads", "1", "--quiet", "--out", str(out),
    ]  # fmt: skip


def _steps_done(out: Path) -> int:
    try:
        return (out / "log.csv").read_text().count("\n") - 2  # header and step 0
    except FileNotFoundError:
        return -1


def _final(out: Path):
    tensors, _ = io.load_tensors(out / "ckpt.safetensors", require_checksum=True)
    log = json.loads((out / "log.json").read_text())
    rows = [{k: v for k, v in r.items() if k not in TIMING} for r in log["rows"]]
    summary = {k: v for k, v in log["summary"].items() if k not in TIMING_SUMMARY}
    return tensors, rows, summary


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_models):
    root = tmp_path_factory.mktemp("kill")
    vae, judge = tiny_models
    io.save_model(root / "vae.safetensors", vae)
    io.save_model(root / "judge.safetensors", judge)
    return ["--model", str(root / "vae.safetensors"), "--judge", str(root / "judge.safetensors")]


@pytest.fixture(scope="module")
def reference(files, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    env = dict(os.environ, PYTHONPATH=PY)
    r = subprocess.run(_argv(files, out), capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    return _final(out)


@pytest.mark.parametrize("trial", range(3))
def test_sigkill_at_a_random_step_then_resume_is_bit_identical(files, reference, tmp_path, trial):
    kill_at = random.Random(1000 + trial).randint(1, STEPS // 2)
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=PY)
    child = subprocess.Popen(
        _argv(files, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
    )
    deadline = time.monotonic() + 600
    while _steps_done(out) < kill_at and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL, "the run finished before the kill"
    killed_at = _steps_done(out)
    assert kill_at <= killed_at < STEPS
    r = subprocess.run(
        [*_argv(files, out), "--resume"], capture_output=True, text=True, env=env, timeout=600
    )
    assert r.returncode == 0, r.stderr
    tensors, rows, summary = _final(out)
    ref_tensors, ref_rows, ref_summary = reference
    assert tensors.keys() == ref_tensors.keys()
    for k in tensors:
        assert torch.equal(tensors[k], ref_tensors[k]), k
    assert rows == ref_rows
    assert summary == ref_summary
