"""Issue 14's measures: fresh codes and a second judge, the stable rule, median time, retraining, attacks."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from uno.unlearn import attacks, evaluation, metrics
from uno.unlearn.errors import UnoUserError
from uno.unlearn.models import CNNJudge, MLPJudge, MnistVAE
from uno.unlearn.run import Loaded, RunConfig, unlearn
from uno.unlearn.tasks import in_forget
from uno.unlearn.train import train_judge


@pytest.mark.parametrize(
    "fs, stable, first",
    [
        ([0.1] * 3 + [0.0] * 10, 3, 3),
        ([0.1, 0.0, 0.1] + [0.0] * 10, 3, 1),  # the first crossing is not stable
        ([0.1] + [0.0] * 9, None, 1),  # below for only 9 logged steps: not confirmed
        ([0.0] * 10, 0, 0),  # the original already below
        ([0.1, float("nan")] + [0.0] * 10, 2, 2),  # NaN is not below
        ([0.1] * 20, None, None),
    ],
)
def test_stable_rule_and_first_crossing(fs, stable, first):
    assert metrics.stable_steps_to_forget(fs, 0.02) == stable
    assert metrics.steps_to_forget(fs, 0.02) == first


def test_time_to_forget_is_median_times_steps():
    dts = [0.1, 0.1, 5.0, 0.1, 0.2]  # one step slowed by load
    assert metrics.time_to_forget_median(dts, 3) == pytest.approx(0.3)
    assert metrics.time_to_forget_median(dts, None) is None
    assert metrics.time_to_forget_median(dts, 0) == 0.0


def test_fresh_codes_are_fixed_and_apart_from_the_monitor_batch(vae_judge, small):
    from uno.unlearn.tasks import VAETask

    vae, judge = vae_judge
    z = evaluation.fresh_codes(2, 100)
    assert torch.equal(z, evaluation.fresh_codes(2, 100))
    task = VAETask(vae, judge, small[0], [1], n_monitor=100)
    assert not torch.allclose(z, task.z_monitor)
    state = torch.get_rng_state()
    evaluation.FreshForget([judge], [1], 2, n=300)(vae)
    assert torch.equal(state, torch.get_rng_state())  # measuring draws nothing from torch's RNG


def test_fresh_forget_counts_each_judge_on_the_same_images(vae_judge):
    vae, _ = vae_judge
    judges = [_BrightnessJudge(vae, 0.3), _BrightnessJudge(vae, 0.6)]
    ev = evaluation.FreshForget([*judges, None], [1], 2, n=2500, chunk=1000)
    f = ev(vae)
    from uno.unlearn.models import sample_images

    x = sample_images(vae, ev.z)
    want = [float(in_forget(j, x, [1]).float().mean()) for j in judges]
    assert f[:2] == pytest.approx(want) and math.isnan(f[2])
    # about 0.7 and 0.4 (the judges' quantiles come from other codes)
    assert 0.5 < want[0] < 0.9 and 0.2 < want[1] < 0.6
    assert ev(vae, 1000)[:2] == ev(vae, 1000)[:2] and len(ev(vae, 10)) == 3
    assert evaluation.both([0.1, 0.3]) == 0.3 and evaluation.both([0.1, float("nan")]) == 0.1


def test_run_logs_both_judges_on_fresh_codes(vae_judge, small, tmp_path):
    vae, judge = vae_judge
    torch.manual_seed(3)
    j2 = train_judge(CNNJudge(width=4), small[0], epochs=1, quiet=True)
    cfg = RunConfig(
        method="retain-hat", steps=4, batch=16, n_monitor=32, fid_n=100, fresh_n=500, quiet=True
    )
    s = unlearn(
        cfg, str(tmp_path / "r"), loaded=Loaded(copy.deepcopy(vae), judge, judge2=j2), data=small
    )
    import json

    rows = json.loads((tmp_path / "r" / "log.json").read_text())["rows"]
    assert all(0 <= r["f_fresh"] <= 1 and 0 <= r["f_fresh2"] <= 1 for r in rows)
    ev = evaluation.FreshForget([judge, j2], [1], 2, n=500)
    assert [rows[0]["f_fresh"], rows[0]["f_fresh2"]] == ev(vae)  # step 0: the original model
    assert s["f_fresh2_0"] == rows[0]["f_fresh2"] and s["f_fresh_final"] == rows[-1]["f_fresh"]
    assert math.isfinite(s["fid2_before"]) and math.isfinite(s["fid2_after"])
    fb = [max(r["f_fresh"], r["f_fresh2"]) for r in rows]
    assert s["first_crossing"] == metrics.steps_to_forget(fb, cfg.tau)
    # no second judge: its columns are "not measured"; no fresh codes: the monitor batch's f instead
    s1 = unlearn(
        RunConfig(**{**cfg.__dict__, "fresh_n": 0}),
        None,
        loaded=Loaded(copy.deepcopy(vae), judge),
        data=small,
    )
    assert s1["fid2_after"] is None and s1["f_fresh_final"] is None
    assert s1["stable_steps"] == s1["stable_steps_monitor"]


def _retain_vae(small):
    tr, _ = small
    torch.manual_seed(0)
    from uno.unlearn.train import train_vae

    return train_vae(MnistVAE(hidden=16), tr, epochs=1, quiet=True)


def test_attacks_are_seeded_leave_the_model_and_the_rng_alone(vae_judge, small):
    vae, _ = vae_judge
    tr, _ = small
    ev = evaluation.FreshForget([_BrightnessJudge(vae), None], [1], 2, n=400)  # 0 < f < 1
    before = copy.deepcopy(vae.state_dict())
    state = torch.get_rng_state()
    r = attacks.retain_finetune(vae, ev, tr.x[tr.y != 1], steps=5, batch=32, n_step=200)
    assert torch.equal(state, torch.get_rng_state())
    assert all(torch.equal(before[k], v) for k, v in vae.state_dict().items())
    assert len(r.f1) == 6 and all(math.isnan(x) for x in r.f2) and r.f == r.f1
    assert r.final[0] == ev(attacks_copy_after(vae, tr, 5))[0]
    again = attacks.retain_finetune(vae, ev, tr.x[tr.y != 1], steps=5, batch=32, n_step=200)
    assert again.f1 == r.f1 and again.final[0] == r.final[0] and 0 < r.final[0] < 1
    other = attacks.retain_finetune(vae, ev, tr.x[tr.y != 1], steps=5, batch=32, seed=1, n_step=200)
    assert other.f1[0] == r.f1[0] and other.f1 != r.f1  # step 0 is the model itself
    k = attacks.forget_finetune(vae, ev, tr.x[tr.y == 1], steps=3, n_images=8, n_step=200)
    assert len(k.f) == 4 and k.steps_until(-1.0) == 1 and k.steps_until(2.0) is None


class _BrightnessJudge(torch.nn.Module):
    """Class 1 for images brighter than the ``q``-quantile of ``vae``'s samples: f ≈ 1 − q, moved by
    any update of the model."""

    def __init__(self, vae, q=0.5):
        super().__init__()
        from uno.unlearn.models import sample_images

        m = sample_images(vae, evaluation.fresh_codes(2, 400, seed=99)).mean((1, 2, 3))
        self.t = float(m.quantile(q))

    def forward(self, x):
        m = x.flatten(1).mean(1)
        return torch.stack([self.t - m, m - self.t], 1)


def attacks_copy_after(vae, tr, steps):
    """The retain attack's model, rebuilt by hand: Adam on the ELBO, BatchNorm frozen, same seeds."""
    from uno.unlearn.models import set_batchnorm

    m = copy.deepcopy(vae)
    x = tr.x[tr.y != 1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(attacks._mix(0, 1))
        g = torch.Generator().manual_seed(attacks._mix(0, 0))
        opt = torch.optim.Adam(m.parameters(), lr=1e-3)
        for _ in range(steps):
            m.train()
            set_batchnorm(m, False)
            opt.zero_grad()
            m.loss(x[torch.randint(len(x), (32,), generator=g)]).backward()
            opt.step()
    return m.eval()


def test_forget_attack_teaches_the_class_back(small):
    """Attack (ii) really trains on the forgotten class: a VAE that never saw a 1 starts drawing more."""
    tr, _ = small
    torch.manual_seed(0)
    judge = train_judge(MLPJudge(hidden=32), tr, epochs=3, quiet=True)
    vae = _retain_vae((tr.subset(torch.nonzero(tr.y != 1)[:, 0]), None))
    ev = evaluation.FreshForget([judge], [1], 2, n=1000)
    k = attacks.forget_finetune(vae, ev, tr.x[tr.y == 1], steps=10, lr=1e-2, n_step=1000)
    assert k.f[-1] > k.f[0] + 0.005  # 0 -> 0.013 on this tiny model


def test_gan_attacks_run_wgan_gp_against_a_copy_of_the_critic(small):
    from uno.unlearn.models import DCGANCritic, DCGANGenerator

    tr, _ = small
    torch.manual_seed(0)
    gen, critic = DCGANGenerator(latent=8, width=4), DCGANCritic(width=4)
    judge = MLPJudge(hidden=8)
    c0 = copy.deepcopy(critic.state_dict())
    ev = evaluation.FreshForget([judge], [1], 8, n=100)
    r = attacks.retain_finetune(
        gen, ev, tr.x[tr.y != 1], critic=critic, steps=2, batch=8, n_step=50
    )
    assert len(r.f) == 3 and all(torch.equal(c0[k], v) for k, v in critic.state_dict().items())
    k = attacks.forget_finetune(gen, ev, tr.x[tr.y == 1], critic=critic, steps=2, n_images=8)
    assert len(k.f) == 3


def test_retrain_kinds_leave_the_forget_class_out_and_keep_their_time(small, monkeypatch):
    from uno.unlearn import train as tr_mod
    from uno.unlearn.errors import UnoUserError

    seen = []

    def fake_vae(model, data, **kw):
        seen.append(data)
        return model.eval()

    monkeypatch.setattr(tr_mod, "train_vae", fake_vae)
    _, p1 = tr_mod.get_or_train("vae-retain", forget=["1"], quiet=True, epochs=1)
    assert len(seen) == 1 and not bool((seen[0].y == 1).any()) and bool((seen[0].y == 7).any())
    meta = tr_mod.trained_meta(p1)
    assert meta["budget"]["forget"] == ["1"] and meta["train_time_s"] >= 0
    _, again = tr_mod.get_or_train("vae-retain", forget=["1"], quiet=True, epochs=1)
    assert again == p1 and len(seen) == 1  # cached: not trained again, the time still known
    _, p7 = tr_mod.get_or_train("vae-retain", forget=["7"], quiet=True, epochs=1)
    assert p7 != p1
    with pytest.raises(UnoUserError, match="needs the forget classes"):
        tr_mod.get_or_train("vae-retain", quiet=True)
    with pytest.raises(UnoUserError, match="takes no forget classes"):
        tr_mod.get_or_train("vae", forget=["1"], quiet=True)


def test_second_judge_is_a_cnn_seeded_apart_with_its_accuracy(monkeypatch):
    from uno.unlearn import train as tr_mod

    calls = []

    def fake_judge(judge, data, **kw):
        calls.append((type(judge).__name__, kw["seed"], kw["epochs"]))
        return judge.eval()

    monkeypatch.setattr(tr_mod, "train_judge", fake_judge)
    j, p = tr_mod.get_or_train("judge2", quiet=True, epochs=1)
    assert isinstance(j, CNNJudge) and calls == [("CNNJudge", 1, 1)]
    assert 0.0 <= tr_mod.trained_meta(p)["heldout_accuracy"] <= 1.0


@pytest.mark.parametrize(
    "argv, msg",
    [
        (["train", "vae-retain"], "--forget goes with (and only with)"),
        (["train", "judge2", "--forget", "1"], "--forget goes with (and only with)"),
        (["train", "gan-retain", "--forget", "1", "--epochs", "2"], "--epochs is the vae's"),
        (["unlearn", "--fresh-n", "-1"], "--fresh-n"),
        (["unlearn", "--judge2", "/no/such/judge"], "--judge2"),
    ],
)
def test_cli_rejects_bad_evaluation_options(capsys, tmp_path, argv, msg):
    from uno.cli import main

    assert main([*argv, "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("uno: error:") and msg in err[0]


def test_train_retain_kind_with_an_unknown_class_is_one_line(tmp_path):
    """A bad class is rejected before the "training one" notice: one line, exit 2, no cache folder."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import uno

    env = dict(os.environ, UNO_CACHE_DIR=str(tmp_path / "cache"))
    env["PYTHONPATH"] = str(Path(uno.__file__).parents[1])
    argv = [sys.executable, "-m", "uno.cli", "train", "vae-retain", "--forget", "12", "--quiet"]
    r = subprocess.run(argv, env=env, capture_output=True, text=True)
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert err == ["uno: error: unknown class '12'; choose from 0, 1, 2, 3, 4, 5, 6, 7, 8, 9"]
    assert not (tmp_path / "cache").exists()


def test_fresh_code_count_defaults_by_model():
    """``--fresh-n`` unset: 10,000 codes for the VAE/GAN, fewer for diffusion (each code is a DDIM
    chain per update); set, it is taken as given (0: off) and checked."""
    from uno.unlearn.config import DIFFUSION_FRESH_N

    assert RunConfig().fresh_count() == evaluation.N_FRESH == 10_000
    assert RunConfig(model="gan").fresh_count() == 10_000
    assert RunConfig(model="diffusion").fresh_count() == DIFFUSION_FRESH_N < 10_000
    assert RunConfig(model="diffusion", fresh_n=0).fresh_count() == 0
    assert RunConfig(fresh_n=123).fresh_count() == 123
    with pytest.raises(UnoUserError, match="--fresh-n"):
        RunConfig(fresh_n=-1).validate()
