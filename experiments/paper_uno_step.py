"""The paper-faithful ``uno`` step: flattened gradients, ``create_graph`` and one full double backprop.

This is the formulation of the paper's reference code (arXiv 2506.04712): both mini-batch gradients are
built with ``create_graph=True`` and concatenated with ``torch.cat`` into one flat vector each, the squared
cosine is formed from the flat vectors, and ``(ℓ(x_r) + λ·c²).backward()`` backpropagates through the
whole double graph. That recomputes ``∇ℓ(x_r)`` (already equal to ``g_r``), keeps both first-order graphs
alive until the end, and copies every gradient once more into the flat vectors.

It is kept in ``experiments/`` as
  * the baseline of the step-cost experiment (``experiments/step_cost.py``), and
  * a cross-check of the package's fast step (``uno.unlearn.methods.uno.uno_direction``):
    ``python experiments/paper_uno_step.py`` prints the relative difference of the two directions on one batch.

Importing this module registers the method ``uno-paper`` (and ``uno-paper-hat``) in the drivers' registry
at run time, so ``uno.unlearn.run.unlearn`` can run it like any other method. Nothing in ``python/uno``
is modified.

Note on the public reference code: some versions of it call ``torch.autograd.grad`` for ``g_f``/``g_r``
WITHOUT ``create_graph=True``; the flat vectors then carry no graph, ``c²`` is a constant and the step is
plain descent on ``ℓ(x_r) + w_u·U`` (the ``retain-hat`` method here). ``NOGRAPH`` below reproduces that
variant (method ``uno-paper-nograph``) for the study.
"""

from __future__ import annotations

import argparse
from typing import Any, Optional, Sequence

import torch
from torch import Tensor

from uno.unlearn.methods.base import StepInfo
from uno.unlearn.methods.registry import _REGISTRY, register
from uno.unlearn.methods.uno import Uno


def paper_uno_direction(
    task: Any, lam: float, create_graph: bool = True
) -> tuple[list[Tensor], StepInfo]:
    """The gradient of ``L_r + λ·c²`` computed the paper's way (flat vectors, full double backprop).

    Args:
        task: a drivers' task after ``begin_step`` (its ``forget_loss``/``retain_loss``/``params``).
        lam: λ.
        create_graph: ``False`` reproduces the reference-code versions whose ``c²`` has no gradient.

    Returns:
        One gradient tensor per parameter (what ``loss.backward()`` leaves in ``p.grad``) and the step info.
    """
    params = task.params
    lf = task.forget_loss()
    lr = task.retain_loss()
    gf = torch.cat(
        [
            g.view(-1)
            for g in torch.autograd.grad(lf, params, create_graph=create_graph, retain_graph=True)
        ]
    )
    gr = torch.cat(
        [
            g.view(-1)
            for g in torch.autograd.grad(lr, params, create_graph=create_graph, retain_graph=True)
        ]
    )
    gfgr, gfgf, grgr = gf @ gr, gf @ gf, gr @ gr
    orth = gfgr**2 / (gfgf * grgr)  # no ε, as in the paper
    loss = lr + lam * orth
    for p in params:
        p.grad = None
    loss.backward()
    out = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    for p in params:
        p.grad = None
    info = StepInfo(cos2=float(orth.detach()), loss_f=float(lf.detach()), loss_r=float(lr.detach()))
    info.extra.update(a=float(gfgr.detach()), F=float(gfgf.detach()), R=float(grgr.detach()))
    return out, info


if "uno-paper" not in _REGISTRY:

    @register("uno-paper")
    class UnoPaper(Uno):
        """``uno`` computed the paper's way (same update as ``uno`` up to rounding; slower).

        ``uno``'s hyperparameters (λ) and set-up, only the direction computed differently.
        """

        def direction(self, task: Any, step: int) -> tuple[list[Tensor], StepInfo]:
            return paper_uno_direction(task, self.lam)

    @register("uno-paper-nograph")
    class UnoPaperNoGraph(UnoPaper):
        """The reference-code variant without ``create_graph``: c² is a constant, the step is retain descent."""

        def direction(self, task: Any, step: int) -> tuple[list[Tensor], StepInfo]:
            return paper_uno_direction(task, self.lam, create_graph=False)


def method_kwargs(name: str, lam: float) -> dict[str, Any]:
    """Keyword arguments for ``methods.create``: λ for every method that declares it (``uno``,
    ``uno-s``, ``uno-paper``, ``uno-paper-nograph`` and their ``-hat`` forms), nothing for the others."""
    cls, _ = _REGISTRY[name]
    return {"lam": lam} if "lam" in cls.defaults else {}


def cross_check(
    lam: float = 1e3, seed: int = 0, hat: bool = False, cache: Optional[str] = None
) -> dict[str, float]:
    """Relative difference ‖d_fast − d_paper‖ / ‖d_paper‖ on one batch of the MNIST task (float64 too)."""
    import copy
    import os

    from uno.unlearn.data import load_mnist
    from uno.unlearn.methods.uno import uno_direction
    from uno.unlearn.tasks import VAETask
    from uno.unlearn.train import get_or_train

    if cache:
        os.environ["UNO_CACHE_DIR"] = cache
    train, _ = load_mnist()
    vae, _ = get_or_train("vae", quiet=True)
    judge, _ = get_or_train("judge", quiet=True)
    out: dict[str, float] = {}
    for dtype in (torch.float32, torch.float64):
        model = copy.deepcopy(vae).to(dtype).requires_grad_(True)
        j = copy.deepcopy(judge).to(dtype)
        tr = copy.deepcopy(train)
        tr.x = tr.x.to(dtype)
        task = VAETask(model, j, tr, [1], w_u=1e3 if hat else 0.0, seed=seed)
        task.begin_step(1)
        d_fast, _ = uno_direction(task, lam)
        task.begin_step(1)
        d_paper, info = paper_uno_direction(task, lam)
        num = sum(float(((a - b) ** 2).sum()) for a, b in zip(d_fast, d_paper)) ** 0.5
        den = sum(float((b**2).sum()) for b in d_paper) ** 0.5
        out[str(dtype).removeprefix("torch.")] = num / den
        out[f"cos2_{str(dtype).removeprefix('torch.')}"] = info.cos2
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lam", type=float, default=1e3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hat", action="store_true")
    ap.add_argument("--cache", default=None, help="UNO_CACHE_DIR")
    a = ap.parse_args(argv)
    r = cross_check(a.lam, a.seed, a.hat, a.cache)
    for k, v in r.items():
        print(f"{k:14s} {v:.3e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
