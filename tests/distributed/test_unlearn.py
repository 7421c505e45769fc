"""``uno unlearn --nproc 2`` (2 gloo ranks on CPU) equals the 1-process run; rank 0 writes; resume.

Each run is the real entry point in a child process group (bounded in time, killed on a timeout, so
no rank outlives its test), on a small seeded VAE and judge saved to files (untrained: the equality
does not need a trained model), 5 steps of batch 16.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist

import uno
from uno.unlearn import io
from uno.unlearn.models import MLPJudge, MnistVAE, noise_like
from uno.unlearn.parallel import World

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="torch without gloo"
)

PY = str(Path(uno.__file__).parents[1])  # the tree under test, also for the ranks
TIMING = {"dt", "peak_mem"}  # columns that measure the machine, not the run
#: parameters after 5 steps: 2 ranks vs 1 process, relative to the largest parameter (measured:
#: up to ~1e-6; the sums of two partial gradients round differently from one batch's sum)
PARAM_RTOL = 1e-4


@pytest.fixture(scope="module")
def files(tmp_path_factory: Any) -> list[str]:
    root = tmp_path_factory.mktemp("dp")
    torch.manual_seed(0)
    io.save_model(root / "vae.safetensors", MnistVAE(hidden=32))
    io.save_model(root / "judge.safetensors", MLPJudge(hidden=32))
    return ["--model", str(root / "vae.safetensors"), "--judge", str(root / "judge.safetensors")]


def _uno(args: list[str], timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    """``python -m uno.cli <args>``: see :func:`_group`."""
    return _group(["-m", "uno.cli", *args], timeout)


def _group(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """``python <args>`` in its own process group (a timeout kills every rank)."""
    env = dict(os.environ, PYTHONPATH=PY, UNO_DIST_TIMEOUT_S="60", OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"python {' '.join(args)} did not finish in {timeout} s")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _run(files: list[str], out: Path, method: str, steps: int = 5, *extra: str) -> dict:
    args = [
        "unlearn", *files, "--method", method, "--steps", str(steps), "--batch", "16",
        "--monitor", "32", "--fid-n", "50", "--fresh-n", "0", "--ckpt-every", "1",
        "--threads", "1", "--quiet", "--out", str(out), *extra,
    ]  # fmt: skip
    r = _uno(args)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout)  # exactly one summary (rank 0's), or this fails


def _state(out: Path) -> tuple[dict[str, torch.Tensor], list[dict]]:
    tensors, _ = io.load_tensors(out / "ckpt.safetensors", require_checksum=True)
    rows = json.loads((out / "log.json").read_text())["rows"]
    return tensors, [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def _param_err(t1: dict[str, torch.Tensor], t2: dict[str, torch.Tensor]) -> tuple[float, float]:
    """(largest |difference|, largest |parameter|) over the model's floating tensors."""
    models = [k for k in t1 if k.startswith("model.") and t1[k].is_floating_point()]
    err = max(float((t1[k] - t2[k]).abs().max()) for k in models)
    return err, max(float(t1[k].abs().max()) for k in models)


@pytest.fixture(scope="module")
def two_rank_runs(files: list[str], tmp_path_factory: Any) -> dict[str, Path]:
    """The 2-rank runs the tests compare, by method (made once)."""
    root = tmp_path_factory.mktemp("two")
    outs = {}
    for method in ("uno", "uno-hat", "surgery-hat"):
        summary = _run(files, root / method, method, 5, "--nproc", "2")
        assert summary["nproc"] == 2 and summary["steps_run"] == 5
        assert summary["allreduce_bytes_per_step"] > 0
        outs[method] = root / method
    return outs


@pytest.mark.parametrize("method", ["uno", "uno-hat", "surgery-hat"])  # 2nd order, + U; projection
def test_two_ranks_equal_one_process(files, two_rank_runs, tmp_path, method):
    one = _run(files, tmp_path / "one", method)
    assert one["nproc"] == 1 and one["allreduce_bytes_per_step"] == 0
    t1, rows1 = _state(tmp_path / "one")
    t2, rows2 = _state(two_rank_runs[method])
    assert t1.keys() == t2.keys()
    err, scale = _param_err(t1, t2)
    assert err <= PARAM_RTOL * scale, (err, scale)
    original = io.load_tensors(tmp_path / "one" / "original.safetensors")[0]
    assert any(not torch.equal(t1[f"model.{k}"], v) for k, v in original.items())  # it moved
    assert len(rows1) == len(rows2) == 6
    for r1, r2 in zip(rows1, rows2):
        for k in ("loss_f", "loss_r", "cos2"):
            if r1[k] is None:  # not measured (step 0)
                assert r2[k] is None
                continue
            assert r2[k] == pytest.approx(r1[k], rel=1e-3, abs=1e-6), (k, r1["step"])


def test_under_torchrun_equals_nproc(files, two_rank_runs, tmp_path):
    """The same command under torchrun (its ranks, no --nproc) runs the same 2-rank computation
    (the default monitor batch: it changes f, not the steps of ``uno``)."""
    from distributed.launch import free_port

    out = tmp_path / "torchrun"
    r = _uno_torchrun(files, out, free_port())
    assert r.returncode == 0, r.stderr[-3000:]
    t_run, rows_run = _state(out)
    t_ref, rows_ref = _state(two_rank_runs["uno"])
    assert t_run.keys() == t_ref.keys()
    assert all(torch.equal(t_run[k], t_ref[k]) for k in t_ref)
    steps = ("loss_f", "loss_r", "cos2")
    assert [[r[k] for k in steps] for r in rows_run] == [[r[k] for k in steps] for r in rows_ref]


def _uno_torchrun(files: list[str], out: Path, port: int) -> subprocess.CompletedProcess[str]:
    args = [
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(port),
        "-m",
        "uno.cli",
        "unlearn",
        *files,
        "--method",
        "uno",
        "--steps",
        "5",
        "--batch",
        "16",
        "--fid-n",
        "50",
        "--fresh-n",
        "0",
        "--ckpt-every",
        "1",
        "--threads",
        "1",
        "--quiet",
        "--out",
        str(out),
    ]  # fmt: skip  (no --monitor: torchrun's parser finds it ambiguous with --monitor-interval)
    return _group(args, 300.0)


def test_only_rank0_writes_and_reports(files, two_rank_runs):
    """The 2-rank folder holds one run's files, as one process writes them (rank 1 writes none: its
    progress bar, summary and files would show up twice, or race with rank 0's)."""
    out = two_rank_runs["surgery-hat"]
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        ["after.png", "before.png", "ckpt.safetensors", "config.json", "curve.png", "log.csv",
         "log.json", "original.safetensors"]
    )  # fmt: skip


def test_resume_continues_like_the_uninterrupted_run(files, two_rank_runs, tmp_path):
    out = tmp_path / "resumed"
    _run(files, out, "surgery-hat", 3, "--nproc", "2")
    summary = _run(files, out, "surgery-hat", 5, "--nproc", "2", "--resume")
    assert summary["steps_run"] == 5
    t_res, rows_res = _state(out)
    t_ref, rows_ref = _state(two_rank_runs["surgery-hat"])
    assert t_res.keys() == t_ref.keys()
    assert all(torch.equal(t_res[k], t_ref[k]) for k in t_ref)  # bit-identical
    assert rows_res == rows_ref


def test_one_process_resumes_a_two_rank_run(files, tmp_path):
    """The checkpoint is the 1-process layout: one process continues a 2-rank run (to rounding)."""
    _run(files, tmp_path / "one", "surgery-hat")
    out = tmp_path / "mixed"
    _run(files, out, "surgery-hat", 3, "--nproc", "2")
    _run(files, out, "surgery-hat", 5, "--resume")
    t1, _ = _state(tmp_path / "one")
    t2, _ = _state(out)
    err, scale = _param_err(t1, t2)
    assert err <= PARAM_RTOL * scale, (err, scale)


@pytest.mark.parametrize(
    "extra, msg",
    [
        (["--method", "uno-subspace-ps"], "a global per-sample Gram is not implemented"),
        (["--method", "fill"], "method 'fill' does not run data-parallel"),
        (["--method", "fill", "--parallel", "fsdp2"], "--parallel fsdp2: method 'fill'"),
        (["--bn-train"], "--bn-train"),
        (["--batch", "1"], "gives a rank no samples"),
    ],
)
def test_unsupported_is_refused_before_anything_runs(files, tmp_path, extra, msg):
    out = tmp_path / "run"
    r = _uno(["unlearn", *files, "--nproc", "2", "--steps", "2", "--out", str(out), *extra])
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("uno: error: ") and msg in r.stderr and r.stderr.count("\n") == 1
    assert not out.exists()


def test_a_failing_rank_fails_the_run_without_a_hang(files, tmp_path):
    """An error the ranks meet after the launcher's checks (a model file that is not a model) ends
    the run with its status and message; no rank waits for the others, nothing is written."""
    bad = tmp_path / "not-a-model.safetensors"
    bad.write_text("not a model")
    out = tmp_path / "run"
    argv = ["unlearn", "--model", str(bad), *files[2:], "--nproc", "2", "--steps", "2"]
    r = _uno([*argv, "--out", str(out)], timeout=120)
    assert r.returncode == 2, r.stderr
    assert "uno: error: " in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()


def test_rank_rows_cover_the_batch_in_order():
    for n in (1, 5, 16, 17):
        for size in (1, 2, 3):
            rows = [World(r, size).rows(n) for r in range(size)]
            assert rows[0][0] == 0 and rows[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(rows, rows[1:]))
            assert max(h - lo for lo, h in rows) - min(h - lo for lo, h in rows) <= 1


def test_rank_noise_is_its_rows_of_one_process_draw():
    mu = torch.zeros(16, 3)
    torch.manual_seed(7)
    full = noise_like(mu)
    for lo, hi in World(0, 2).rows(16), World(1, 2).rows(16):
        torch.manual_seed(7)
        assert torch.equal(noise_like(mu[lo:hi], (16, lo, hi)), full[lo:hi])
    with pytest.raises(ValueError, match="rows 0:8 of 16"):
        noise_like(mu, (16, 0, 8))
