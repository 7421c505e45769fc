"""``uno unlearn --nproc 2`` beyond the first-order DDP methods: ``--parallel fsdp2`` (sharded
parameters, a projection method and ``uno``'s double backward), the methods made data-parallel
since (retain, kick, salun, fu, uno-subspace), a GAN, and the launcher under SIGTERM.

The runs are the real entry point in child process groups (bounded, killed on a timeout), on the
small seeded VAE (33 hidden units: uneven shards) and judge below; each 2-rank run is compared with
the 1-process run of the same command.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist

from distributed.test_unlearn import PARAM_RTOL, PY, _param_err, _run, _state
from uno.unlearn import io
from uno.unlearn.models import DCGANGenerator, MLPJudge, MnistVAE

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="torch without gloo"
)


@pytest.fixture(scope="module")
def files(tmp_path_factory: Any) -> list[str]:
    """A small seeded VAE with 33 hidden units: FSDP2 shards its first layers unevenly (17 + 16
    rows on 2 ranks), and a judge."""
    root = tmp_path_factory.mktemp("dp33")
    torch.manual_seed(0)
    io.save_model(root / "vae.safetensors", MnistVAE(hidden=33))
    io.save_model(root / "judge.safetensors", MLPJudge(hidden=32))
    return ["--model", str(root / "vae.safetensors"), "--judge", str(root / "judge.safetensors")]


@pytest.fixture(scope="module")
def one_process(files, tmp_path_factory):
    """1-process runs by method (made once, on demand)."""
    root = tmp_path_factory.mktemp("one")
    made: dict[str, Path] = {}

    def get(method: str) -> Path:
        if method not in made:
            _run(files, root / method, method)
            made[method] = root / method
        return made[method]

    return get


def _assert_equal_runs(one: Path, two: Path) -> None:
    t1, rows1 = _state(one)
    t2, rows2 = _state(two)
    assert t1.keys() == t2.keys()
    err, scale = _param_err(t1, t2)
    assert err <= PARAM_RTOL * scale, (err, scale)
    original = io.load_tensors(one / "original.safetensors")[0]
    assert any(not torch.equal(t1[f"model.{k}"], v) for k, v in original.items())  # it moved
    opt = [k for k in t1 if k.startswith("opt.")]
    assert opt and all(t1[k].shape == t2[k].shape for k in opt)  # the 1-process layout
    for r1, r2 in zip(rows1, rows2):
        for k in ("loss_f", "loss_r", "cos2"):
            if r1[k] is None:
                assert r2[k] is None
                continue
            assert r2[k] == pytest.approx(r1[k], rel=1e-3, abs=1e-6), (k, r1["step"])


@pytest.mark.parametrize("method", ["surgery", "uno-hat"])  # a projection; double backward + U
def test_fsdp2_equals_one_process(files, one_process, tmp_path, method):
    out = tmp_path / "fsdp2"
    summary = _run(files, out, method, 5, "--nproc", "2", "--parallel", "fsdp2")
    assert summary["nproc"] == 2
    # bytes per step and rank (docs/distributed.md): the gradients travel as reduce-scatters of
    # whole vectors (rows padded to a multiple of 2, + the 2 loss values in each rank's segment),
    # the parameters (and uno's two coefficient vectors) as all-gathers, and the checkpoint of
    # every step (--ckpt-every 1) gathers the two Adam states; the all-reduces carry only the uno
    # ops' float64 partial sums (k numbers a pass) and the agreed finite-check (4 bytes)
    model, _ = io.load_model(files[1])
    shapes = [p.shape for p in model.parameters()]
    n = sum(s.numel() for s in shapes)
    padded = sum(-(-s[0] // 2) * 2 * (s.numel() // s[0]) for s in shapes)
    assert padded > n == summary["n_params"]  # uneven shards
    vectors, gathered, partial = (2, 1, 24 + 24) if method == "surgery" else (3, 3, 24)
    comm = summary["comm_bytes_per_step"]
    assert comm["reduce_scatter"] == (vectors * padded + 2 * 2) * 4
    assert comm["all_gather"] == (gathered * padded + 2 * n) * 4
    assert comm["all_reduce"] == summary["allreduce_bytes_per_step"] == partial + 4
    _assert_equal_runs(one_process(method), out)


def test_fsdp2_checkpoint_resumes_in_one_process_and_sharded(files, one_process, tmp_path):
    """The fsdp2 checkpoint is the 1-process layout: one process continues it, and so do 2
    sharded ranks (from a 1-process checkpoint too)."""
    ref = one_process("surgery")
    mixed = tmp_path / "mixed"
    _run(files, mixed, "surgery", 3, "--nproc", "2", "--parallel", "fsdp2")
    _run(files, mixed, "surgery", 5, "--resume")
    _assert_equal_runs(ref, mixed)
    back = tmp_path / "back"
    _run(files, back, "surgery", 3)
    _run(files, back, "surgery", 5, "--resume", "--nproc", "2", "--parallel", "fsdp2")
    _assert_equal_runs(ref, back)


@pytest.mark.parametrize("method", ["retain-hat", "kick-hat", "salun", "fu", "uno-subspace-hat"])
def test_newly_data_parallel_methods_equal_one_process(files, one_process, tmp_path, method):
    out = tmp_path / "ddp"
    _run(files, out, method, 5, "--nproc", "2")
    _assert_equal_runs(one_process(method), out)


@pytest.mark.parametrize("method", ["salun", "uno-subspace-hat"])
def test_method_state_and_bases_under_fsdp2(files, one_process, tmp_path, method):
    """salun's saliency mask (from the global forget gradient, its median over every entry) is
    sharded like the parameters; uno-subspace's basis of k micro-batch gradients is a sharded
    basis."""
    out = tmp_path / "fsdp2"
    _run(files, out, method, 5, "--nproc", "2", "--parallel", "fsdp2")
    _assert_equal_runs(one_process(method), out)


@pytest.fixture(scope="module")
def gan_files(tmp_path_factory: Any) -> list[str]:
    """A tiny generator and a judge centred on its outputs (so that some of them fall in class
    ``forget`` and some not); the last two entries are ``--forget <class>``."""
    root = tmp_path_factory.mktemp("gan")
    torch.manual_seed(0)
    gen, judge = DCGANGenerator(latent=8, width=8), MLPJudge(hidden=16)
    with torch.no_grad():
        x = gen.eval()(torch.randn(512, 8))
        judge.fc1.weight.mul_(100.0)
        judge.fc1.bias.copy_(-judge.fc1.weight @ x.mean(0).flatten())
        counts = torch.bincount(judge(x).argmax(1), minlength=10)
    target = int(torch.argmin((counts - 256).abs()))
    io.save_model(root / "gan.safetensors", gen)
    io.save_model(root / "judge.safetensors", judge)
    return [
        "--model", str(root / "gan.safetensors"), "--judge", str(root / "judge.safetensors"),
        "--forget", str(target),
    ]  # fmt: skip


@pytest.mark.parametrize("parallel", ["ddp", "fsdp2"])
def test_gan_two_ranks_equal_one_process(gan_files, tmp_path, parallel):
    one, two = tmp_path / "one", tmp_path / "two"
    _run(gan_files, one, "surgery-hat", 3)
    _run(gan_files, two, "surgery-hat", 3, "--nproc", "2", "--parallel", parallel)
    _assert_equal_runs(one, two)


def test_the_gan_default_method_is_refused_with_what_to_pass(gan_files, tmp_path):
    """A GAN's default method (``--method auto``: uno-subspace-ps) needs a global per-sample Gram:
    refused before anything runs, naming the method, where it came from and what to pass."""
    from distributed.test_unlearn import _uno

    out = tmp_path / "run"
    r = _uno(["unlearn", *gan_files, "--nproc", "2", "--steps", "2", "--out", str(out)])
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "method 'uno-subspace-ps' (the default of a gan model) does not run" in r.stderr
    assert "pass --method with one of" in r.stderr
    assert not out.exists()


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize(
    "sig, status, says",
    [
        (signal.SIGTERM, 128 + signal.SIGTERM, b"uno: terminated"),
        (signal.SIGINT, 130, b"interrupted"),
    ],
)
def test_a_signal_to_the_launcher_stops_every_rank(files, tmp_path, sig, status, says):
    """SIGTERM or SIGINT to ``uno unlearn --nproc 2`` stops both ranks (none is left running or
    orphaned) and the launcher exits non-zero: 128 + 15, or 130 (what a shell reports)."""
    args = [
        sys.executable, "-m", "uno.cli", "unlearn", *files, "--method", "surgery", "--steps",
        "100000", "--batch", "16", "--monitor", "32", "--fid-n", "50", "--fresh-n", "0",
        "--threads", "1", "--quiet", "--nproc", "2", "--out", str(tmp_path / "run"),
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=PY, UNO_DIST_TIMEOUT_S="60", OMP_NUM_THREADS="1")
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    kids: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while len(kids) < 2 and time.monotonic() < deadline and proc.poll() is None:
            kids = _children(proc.pid)
            time.sleep(0.1)
        assert len(kids) == 2, "the launcher did not start its two ranks"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == status, err[-2000:]
        assert says in err
        for k in kids:  # reaped by the launcher: gone, not orphaned under init
            assert not Path(f"/proc/{k}").exists() or _state_of(k) == "Z"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        for k in kids:
            if Path(f"/proc/{k}").exists() and _state_of(k) != "Z":
                os.kill(k, signal.SIGKILL)


def _state_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return "?"


def test_summary_counts_one_process_traffic_as_zero(files, one_process):
    summary = json.loads((one_process("surgery") / "log.json").read_text())["summary"]
    assert summary["nproc"] == 1 and summary["allreduce_bytes_per_step"] == 0
    assert "comm_bytes_per_step" not in summary  # a 1-process summary keeps its columns
