"""The run loop: outputs, resume equality, the NaN stop, atomic files."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from uno.unlearn import io, methods
from uno.unlearn.errors import CheckpointError, NonFiniteError, UnoUserError
from uno.unlearn.methods.base import Method, StepInfo, grads
from uno.unlearn.methods.registry import _REGISTRY
from uno.unlearn.run import Loaded, RunConfig, unlearn


def _cfg(**kw):
    base = dict(steps=6, batch=32, n_monitor=64, fid_n=300, fresh_n=256, quiet=True, ckpt_every=2)
    base.update(kw)
    return RunConfig(**base)


def _run(vae_judge, small, out, **kw):
    vae, judge = vae_judge
    cfg_kw = {k: v for k, v in kw.items() if k not in ("resume", "stop_after")}
    return unlearn(
        _cfg(**cfg_kw),
        str(out) if out else None,
        loaded=Loaded(copy.deepcopy(vae), judge),
        data=small,
        resume=kw.get("resume", False),
        stop_after=kw.get("stop_after"),
    )


def test_outputs(vae_judge, small, tmp_path):
    s = _run(vae_judge, small, tmp_path / "r", method="surgery")
    for f in (
        "config.json",
        "original.safetensors",
        "ckpt.safetensors",
        "log.csv",
        "log.json",
        "before.png",
        "after.png",
        "curve.png",
    ):
        assert (tmp_path / "r" / f).is_file(), f
    assert not list((tmp_path / "r").glob(".*tmp"))  # no temp files left
    log = json.loads((tmp_path / "r" / "log.json").read_text())
    assert len(log["rows"]) == 7 and log["rows"][0]["step"] == 0
    assert s["steps_run"] == 6 and 0.0 <= s["f_final"] <= 1.0
    assert (s["steps_to_forget"] is None) == (not s["reached"]) == (s["time_to_forget_s"] is None)
    assert s["per_step_s"] > 0 and 0.0 <= s["cos2_mean"] <= 1.0
    assert (tmp_path / "r" / "log.csv").read_text().count("\n") == 8  # header + steps 0..6
    with pytest.raises(UnoUserError, match="already holds a run"):
        _run(vae_judge, small, tmp_path / "r", method="surgery")


@pytest.mark.parametrize("method", ["uno", "salun", "uno-s-hat", "surgery"])
def test_resume_gives_the_same_result(vae_judge, small, tmp_path, method):
    full = _run(vae_judge, small, tmp_path / "full", method=method)
    part = _run(vae_judge, small, tmp_path / "part", method=method, stop_after=3)
    assert part == {"interrupted_at": 3}
    resumed = _run(vae_judge, small, tmp_path / "part", method=method, resume=True)
    a, _ = io.load_tensors(tmp_path / "full" / "ckpt.safetensors")
    b, _ = io.load_tensors(tmp_path / "part" / "ckpt.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ra = json.loads((tmp_path / "full" / "log.json").read_text())["rows"]
    rb = json.loads((tmp_path / "part" / "log.json").read_text())["rows"]
    drop = ("dt", "peak_mem")
    assert [{k: v for k, v in r.items() if k not in drop} for r in ra] == [
        {k: v for k, v in r.items() if k not in drop} for r in rb
    ]
    for k in ("f_final", "fid_after", "elbo_after", "steps_to_forget"):
        assert full[k] == resumed[k]


def test_resume_rejects_a_different_config(vae_judge, small, tmp_path):
    _run(vae_judge, small, tmp_path / "r", method="surgery", stop_after=2)
    with pytest.raises(CheckpointError, match="method"):
        _run(vae_judge, small, tmp_path / "r", method="uno", resume=True)
    with pytest.raises(CheckpointError, match="nothing to resume"):
        _run(vae_judge, small, tmp_path / "empty", method="uno", resume=True)


class _NaNAt4(Method):
    has_hat = False

    def direction(self, task, step):
        lr = task.retain_loss()
        d = grads(lr, task.params)
        if step == 4:
            d[0] = d[0] * float("nan")
        return d, StepInfo(loss_r=float(lr.detach()))


def test_nan_stop_keeps_last_good_checkpoint(vae_judge, small, tmp_path):
    methods.register("nan-at-4")(_NaNAt4)
    try:
        with pytest.raises(NonFiniteError, match="step 4") as e:
            _run(vae_judge, small, tmp_path / "r", method="nan-at-4", ckpt_every=1)
    finally:
        _REGISTRY.pop("nan-at-4", None)
    assert "the last checkpoint (step 3, finite and checksummed)" in str(e.value)
    assert "good checkpoint" not in str(e.value)
    t, meta = io.load_tensors(tmp_path / "r" / "ckpt.safetensors")
    assert meta["step"] == 3
    assert all(torch.isfinite(v).all() for v in t.values() if v.is_floating_point())


def test_bad_inputs(vae_judge, small, tmp_path):
    with pytest.raises(UnoUserError, match="unknown method"):
        _run(vae_judge, small, None, method="nope")
    with pytest.raises(UnoUserError, match="unknown class"):
        _run(vae_judge, small, None, forget=["12"])
    assert not (tmp_path / "x").exists()


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    def boom(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        io.atomic_write(tmp_path / "f.json", boom)
    assert list(tmp_path.iterdir()) == []


def test_load_model_errors(tmp_path, tiny_models):
    vae, judge = tiny_models
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a readable"):
        io.load_model(tmp_path / "bad.safetensors")
    with pytest.raises(CheckpointError, match="not found"):
        io.load_model(tmp_path / "missing.safetensors")
    io.save_model(tmp_path / "j.safetensors", judge)
    with pytest.raises(CheckpointError, match="expected mnist_vae"):
        io.load_model(tmp_path / "j.safetensors", "mnist_vae")
    io.save_tensors(
        tmp_path / "v.safetensors", dict(vae.state_dict()), {"config": {"kind": "mnist_vae"}}
    )
    with pytest.raises(
        CheckpointError, match="incompatible"
    ):  # hidden 32 weights into a hidden-400 VAE
        io.load_model(tmp_path / "v.safetensors")


def test_gan_run(tmp_path, small):
    from uno.unlearn.models import DCGANCritic, DCGANGenerator, MLPJudge

    torch.manual_seed(0)
    gen, critic, judge = (
        DCGANGenerator(latent=8, width=8),
        DCGANCritic(width=8),
        MLPJudge(hidden=16),
    )
    with (
        torch.no_grad()
    ):  # an untrained judge whose decisions depend on the (nearly constant) samples
        x = gen.eval()(torch.randn(512, 8))
        judge.fc1.weight.mul_(100.0)
        judge.fc1.bias.copy_(-judge.fc1.weight @ x.mean(0).flatten())
        counts = torch.bincount(judge(x).argmax(1), minlength=10)
    target = str(int(torch.argmin((counts - 256).abs())))
    cfg = _cfg(method="uno-hat", forget=[target], steps=3, w_c=0.1, fid_n=200)
    s = unlearn(cfg, str(tmp_path / "g"), loaded=Loaded(gen, judge, critic, "gan"), data=small)
    assert s["steps_run"] == 3 and s["f0"] > 0 and math.isnan(s["elbo_after"])
    assert (tmp_path / "g" / "after.png").is_file()


def test_celeba_attribute_run(tmp_path):
    """Forget an attribute with a conv VAE and a one-logit judge on a tiny synthetic CelebA folder."""
    import matplotlib.image as mpimg
    import numpy as np

    from uno.unlearn.models import ConvVAE, attribute_judge

    base = tmp_path / "data" / "celeba"
    (base / "img_align_celeba").mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = ["12", "Male Smiling"]
    for i in range(12):
        fn = f"{i + 1:06d}.jpg"
        mpimg.imsave(
            base / "img_align_celeba" / fn, (rng.random((218, 178, 3)) * 255).astype(np.uint8)
        )
        lines.append(f"{fn} {1 if i % 2 else -1} -1")
    (base / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    torch.manual_seed(0)
    vae = ConvVAE(3, 64, (8, 8, 16, 16, 16), latent=8)
    judge = attribute_judge(3, 64, width=4)
    with torch.no_grad():
        judge.head.bias.fill_(0.0)
    io.save_model(tmp_path / "vae.safetensors", vae)
    io.save_model(tmp_path / "judge.safetensors", judge)
    cfg = _cfg(
        model=str(tmp_path / "vae.safetensors"),
        judge=str(tmp_path / "judge.safetensors"),
        dataset="celeba",
        data=str(tmp_path / "data"),
        forget=["Male"],
        method="surgery-hat",
        steps=2,
        batch=4,
        n_monitor=16,
        fid_n=8,
    )
    s = unlearn(cfg, str(tmp_path / "out"))
    assert s["steps_run"] == 2 and 0.0 <= s["f_final"] <= 1.0
    with pytest.raises(UnoUserError, match="unknown attribute"):
        unlearn(RunConfig(**{**cfg.__dict__, "forget": ["Bald"]}), None)


def test_checkpoint_checksum_names_a_corrupt_file(tmp_path):
    t = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "n": torch.tensor(3)}
    io.save_tensors(tmp_path / "c.safetensors", t, {"step": 2, "x": float("nan")})
    back, meta = io.load_tensors(tmp_path / "c.safetensors", require_checksum=True)
    assert torch.equal(back["w"], t["w"]) and meta == {"step": 2, "x": None}
    raw = bytearray((tmp_path / "c.safetensors").read_bytes())
    raw[-5] ^= 0x01  # one bit of one tensor element
    (tmp_path / "c.safetensors").write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"c\.safetensors: checksum mismatch"):
        io.load_tensors(tmp_path / "c.safetensors")


def test_a_file_without_checksum_is_refused_where_one_is_required(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.ones(2)}, str(tmp_path / "old.safetensors"), metadata={"uno": "{}"})
    io.load_tensors(tmp_path / "old.safetensors")  # a model file from elsewhere: loads unverified
    with pytest.raises(CheckpointError, match="no checksum"):
        io.load_tensors(tmp_path / "old.safetensors", require_checksum=True)


@pytest.mark.parametrize(
    "field, value",
    [("lr", float("nan")), ("ckpt_every", 0), ("lam", -1.0), ("steps", -1), ("fid_n", 1)],
)
def test_bad_config_fails_before_anything_is_written(vae_judge, small, tmp_path, field, value):
    with pytest.raises(UnoUserError, match=field.replace("_", "-")):
        _run(vae_judge, small, tmp_path / "r", **{field: value})
    assert not (tmp_path / "r").exists()


def test_resume_past_the_budget_says_so(vae_judge, small, tmp_path):
    _run(vae_judge, small, tmp_path / "r", method="surgery")
    with pytest.raises(UnoUserError, match=r"nothing to do.*finished at step 6.*--steps 6 or more"):
        _run(vae_judge, small, tmp_path / "r", method="surgery", steps=3, resume=True)


def test_the_three_phases_are_unlearn(vae_judge, small, tmp_path):
    """prepare → loop → summarize, called one by one, write what ``unlearn`` writes."""
    from uno.unlearn.run import loop, prepare, summarize

    vae, judge = vae_judge
    cfg = _cfg(method="uno-hat")
    run = prepare(cfg, str(tmp_path / "a"), loaded=Loaded(copy.deepcopy(vae), judge), data=small)
    assert run.start == 0 and run.last_ckpt == 0 and len(run.rows) == 1
    progress = loop(run)
    assert progress.interrupted_at is None and len(run.rows) == cfg.steps + 1
    s = summarize(run, progress)
    full = _run(vae_judge, small, tmp_path / "b", method="uno-hat")
    a, _ = io.load_tensors(tmp_path / "a" / "ckpt.safetensors")
    b, _ = io.load_tensors(tmp_path / "b" / "ckpt.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a) and a.keys() == b.keys()
    assert {
        k: v for k, v in s.items() if "time" not in k and "step_" not in k and "mem" not in k
    } == {k: v for k, v in full.items() if "time" not in k and "step_" not in k and "mem" not in k}


def test_fid_at_forget_when_the_original_already_forgets(vae_judge, small, tmp_path):
    """f0 < tau: forgotten at step 0, so the FID at forget is the FID before (it was NaN)."""
    s = _run(vae_judge, small, tmp_path / "r", method="surgery", tau=1.0)
    assert s["steps_to_forget"] == 0
    assert s["fid_at_forget"] == s["fid_before"] and math.isfinite(s["fid_before"])
