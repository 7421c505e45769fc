"""Every method on the diffusion task through the run loop: two steps, resume, outputs."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from uno.unlearn.run import RunConfig, unlearn

METHODS = ["uno", "uno-s", "surgery", "retain", "uno-hat", "surgery-hat", "retain-hat", "esd",
           "salun", "uno-subspace", "uno-subspace-ps", "ascent", "surgery-ascent"]  # fmt: skip


def cfg(method, **kw):
    base = dict(model="diffusion", method=method, steps=2, batch=4, n_monitor=4, fid_n=4,
                lr=1e-3, quiet=True, ckpt_every=1, fresh_n=8)  # fmt: skip
    base.update(kw)
    return RunConfig(**base)


@pytest.mark.parametrize("method", METHODS)
def test_each_method_runs_two_steps(method, loaded, digits, tmp_path):
    ld = loaded()
    before = [p.detach().clone() for p in ld.model.parameters()]
    s = unlearn(cfg(method), str(tmp_path / method), loaded=ld, data=digits, write_pngs=False)
    assert s["steps_run"] == 2 and s["n_params"] == sum(p.numel() for p in before)
    assert math.isfinite(s["fid_after"]) and 0.0 <= s["f_final"] <= 1.0
    assert math.isfinite(s["fid2_after"])  # judge 2's FID: the task's, on the retain classes
    assert any(not torch.equal(a, b) for a, b in zip(before, ld.model.parameters()))
    rows = json.loads((tmp_path / method / "log.json").read_text())["rows"]
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert all(r["dt"] > 0 for r in rows[1:])


def test_resume_equals_the_uninterrupted_run(loaded, digits, tmp_path):
    c = cfg("uno-hat", steps=3, w_u=10.0)
    full = loaded()
    s_full = unlearn(c, str(tmp_path / "full"), loaded=full, data=digits, write_pngs=False)
    part = loaded()
    out = str(tmp_path / "part")
    assert unlearn(c, out, loaded=part, data=digits, stop_after=1, write_pngs=False) == {
        "interrupted_at": 1
    }
    again = loaded()  # a fresh process: the model from the original file, state from the checkpoint
    s_part = unlearn(c, out, loaded=again, data=digits, resume=True, write_pngs=False)
    for a, b in zip(full.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(a, b)
    keys = ("f_final", "fid_after", "steps_run")
    assert {k: s_full[k] for k in keys} == {k: s_part[k] for k in keys}


def test_pictures_are_written(loaded, digits, tmp_path):
    unlearn(cfg("retain", steps=1), str(tmp_path / "r"), loaded=loaded(), data=digits)
    for name in ("before.png", "after.png", "curve.png"):
        assert (tmp_path / "r" / name).stat().st_size > 0


def test_the_original_model_is_not_changed(loaded, digits):
    ld = loaded()
    ref = copy.deepcopy(ld.model)
    run_model = ld.model
    unlearn(cfg("esd"), None, loaded=ld, data=digits, write_pngs=False)
    assert any(not torch.equal(a, b) for a, b in zip(ref.parameters(), run_model.parameters()))


def test_esd_refuses_a_task_without_a_diffusion_model(judge, digits):
    from uno.unlearn import methods
    from uno.unlearn.errors import UnoUserError
    from uno.unlearn.models import MnistVAE
    from uno.unlearn.tasks import VAETask

    task = VAETask(MnistVAE(hidden=8), judge, digits[0], [1], batch=4, n_monitor=4)
    with pytest.raises(UnoUserError, match="esd needs a diffusion model"):
        methods.create("esd").setup(task)
