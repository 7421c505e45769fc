"""The package's own kernels are on the main job's path: ``uno demo``'s projection method and the GAN's
default method step through ``uno.optim.ProjectedAdam``, and the GAN's default (``uno-subspace-ps``)
takes its retain subspace from ``uno.per_sample.gram`` — counted through the run loop, the path of
``uno unlearn`` and ``uno demo`` (issue 15's "done when")."""

from __future__ import annotations

import copy
from collections import Counter

import uno
from uno.optim import ProjectedAdam
from uno.unlearn.demo import DEMO_METHODS
from uno.unlearn.methods import create
from uno.unlearn.methods.defaults import DEFAULTS
from uno.unlearn.run import Loaded, RunConfig, unlearn


def test_demo_and_defaults_run_on_uno_optim_and_per_sample(vae_judge, small, monkeypatch):
    calls: Counter[str] = Counter()
    real_step, real_gram = ProjectedAdam.step, uno.per_sample.gram

    def step(self, *a, **kw):
        calls["ProjectedAdam.step"] += 1
        return real_step(self, *a, **kw)

    def gram(*a, **kw):
        calls["per_sample.gram"] += 1
        return real_gram(*a, **kw)

    monkeypatch.setattr(ProjectedAdam, "step", step)
    monkeypatch.setattr(uno.per_sample, "gram", gram)
    vae, judge = vae_judge
    seen = {}
    for m in dict.fromkeys([*DEMO_METHODS, DEFAULTS["gan"], DEFAULTS["diffusion"]]):
        calls.clear()
        cfg = RunConfig(method=m, steps=2, batch=32, n_monitor=64, fid_n=300, quiet=True)
        unlearn(cfg, None, loaded=Loaded(copy.deepcopy(vae), judge), data=small)
        seen[m] = dict(calls)
    for m, c in seen.items():  # every projection method steps ProjectedAdam once per update
        projects = create(m).project is not None
        assert c.get("ProjectedAdam.step", 0) == (2 if projects else 0), (m, c)
    assert any(create(m).project for m in DEMO_METHODS)  # the demo runs one (surgery)
    assert seen[DEFAULTS["gan"]] == {"ProjectedAdam.step": 2, "per_sample.gram": 2}
    assert seen[DEFAULTS["diffusion"]] == {"ProjectedAdam.step": 2}
