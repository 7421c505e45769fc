"""The diffusion unlearning task (``uno unlearn --model diffusion``): forget class c of a conditional model.

Per step (batches from the step's generator, as in :class:`~uno.unlearn.tasks.VAETask`): a forget batch
x_f of class-c digits with label c, a retain batch (x_r, y_r) of the other digits, and for each a fresh
draw of timesteps t and noises ε. With ℓ_d(x, y) the training loss (the Min-SNR-weighted ε-MSE of
:func:`~uno.unlearn.diffusion.train.denoising_loss`, a mean over the batch):

    ℓ_f = ℓ_d(x_f, c)                          the forget data's denoising loss (g_f)
    ℓ_r = ℓ_d(x_r, y_r) + ℓ_d(x_r, c)          retain denoising + the remapping term: retain images
                                               carrying label c (the paper's DiT objective; other t, ε)

so ``uno`` descends ℓ_r + λ·c²(g_f, g_r) exactly as the paper's ``ℓ_d(x_r, y_r) + ℓ_d(x_r, y_f) + λ·c²``,
and every method of :mod:`uno.unlearn.methods` applies unchanged. The histogram loss U of the ``-hat``
variants is judged on the model's one-step predictions x̂₀ of noised forget images, conditioned on c, at
t ∈ [T/4, 3T/4) (:meth:`DiffusionTask.histogram_loss`): cheap and differentiable, and no sampling chain.
The forget fraction f is measured on full DDIM chains from fixed codes (the monitor batch) conditioned on
c; those codes enter no loss. The task sets the model's ``decode_labels`` to the forget classes, so
``model.decode(z)``, and with it every measure of the run loop that decodes codes (the before/after
grids), draws class-c samples.
"""

from __future__ import annotations

import hashlib
from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn

from uno.unlearn.data import ImageData
from uno.unlearn.diffusion.sampling import model_chain
from uno.unlearn.diffusion.schedule import (
    alpha_bar,
    loss_weight,
    predict_x0,
    q_sample,
    to_image,
    to_model,
)
from uno.unlearn.diffusion.train import per_sample_loss
from uno.unlearn.errors import DataError
from uno.unlearn.tasks import HIST_EPS, Task, in_forget, judge_probs, step_seed

#: timesteps of the histogram loss's one-step predictions, as fractions of T
U_T_RANGE = (0.25, 0.75)
#: retain images (and samples) of the classifier FID by default (each sample is a DDIM chain)
FID_N = 1000


def _mse(pred: Tensor, eps: Tensor) -> Tensor:
    """(B,) mean squared error per sample."""
    return (pred - eps).pow(2).flatten(1).mean(1)


class DiffusionTask(Task):
    """Unlearning the classes ``targets`` of a class-conditional denoiser (see the module docstring)."""

    def __init__(self, model: nn.Module, judge: nn.Module, train: ImageData, targets: Sequence[int], *,
                 original: Optional[nn.Module] = None, fid_n: Optional[int] = None,
                 judge2: Optional[nn.Module] = None, **kw: Any) -> None:  # fmt: skip
        """``original``: the frozen model before unlearning (esd's target); ``fid_n``: the FID's size
        (default :data:`FID_N`); ``judge2``: the second judge, whose features give
        ``classifier_fid2``; ``kw``: :class:`~uno.unlearn.tasks.Task`'s."""
        super().__init__(model, judge, targets, **kw)
        side = train.forget_mask(targets)
        n_f, n_r = int(side.sum()), int((~side).sum())
        if not n_f or not n_r:
            raise DataError(
                f"forget set has {n_f} and retain set {n_r} samples; both must be non-empty"
            )
        self.forget_x, self.forget_y = to_model(train.x[side]), train.y[side]
        self.retain_x, self.retain_y = to_model(train.x[~side]), train.y[~side]
        self.original = original
        for m in (
            model,
            original,
        ):  # decode(z) draws the forget classes (see _Denoiser.decode_labels)
            if m is not None:
                m.decode_labels = list(self.targets)  # type: ignore[assignment]
        self.ab = alpha_bar(model.T, model.schedule)  # type: ignore[arg-type]
        self.T: int = model.T  # type: ignore[assignment]
        self._draw_from(torch.Generator().manual_seed(step_seed(self.seed, -3)))
        n_fid = FID_N if fid_n is None else fid_n
        self.classifier_fid = RetainFID(judge, train, self.targets, n_fid, self.zdim)
        self.classifier_fid2 = (
            RetainFID(judge2, train, self.targets, n_fid, self.zdim) if judge2 is not None else None
        )

    # -- batches -------------------------------------------------------------------------------
    def _t(self, g: torch.Generator, lo: float = 0.0, hi: float = 1.0) -> Tensor:
        a, b = int(lo * self.T), max(int(lo * self.T) + 1, int(hi * self.T))
        return torch.randint(a, b, (self.batch,), generator=g)

    def _draw_from(self, g: torch.Generator) -> None:
        B = self.batch
        i_f = torch.randint(len(self.forget_x), (B,), generator=g)
        i_r = torch.randint(len(self.retain_x), (B,), generator=g)
        self.x_f, self.y_f = self.forget_x[i_f], self.forget_y[i_f]
        self.x_r, self.y_r = self.retain_x[i_r], self.retain_y[i_r]
        shape = self.x_f.shape
        self.t_f, self.eps_f = self._t(g), torch.randn(shape, generator=g)
        self.t_r, self.eps_r = self._t(g), torch.randn(shape, generator=g)
        # the remapping term: the retain images with a forget label, their own t and ε
        targets = torch.as_tensor(self.targets)
        self.y_m = targets[torch.randint(len(targets), (B,), generator=g)]
        self.t_m, self.eps_m = self._t(g), torch.randn(shape, generator=g)
        self.t_u, self.eps_u = self._t(g, *U_T_RANGE), torch.randn(shape, generator=g)

    def _draw(self) -> None:
        self._draw_from(self.step_generator)

    # -- losses --------------------------------------------------------------------------------
    def denoise(self, x0: Tensor, y: Optional[Tensor], t: Tensor, eps: Tensor) -> Tensor:
        """(B,) per-sample ℓ_d of ``x0`` (in [-1, 1]) with labels ``y`` at timesteps ``t``, noise ``eps``
        (the training loss, Min-SNR weighted)."""
        return per_sample_loss(self.model, x0, y, t, eps, self.ab)

    def ell_forget(self) -> Tensor:
        return self.denoise(self.x_f, self.y_f, self.t_f, self.eps_f).mean()

    def _ell_r(self, sl: slice = slice(None), per_sample: bool = False) -> Tensor:
        """ℓ_r on the rows ``sl`` of the retain batch (summed over the two terms, /B per sample)."""
        x = self.x_r[sl]
        both = self.denoise(
            torch.cat([x, x]),
            torch.cat([self.y_r[sl], self.y_m[sl]]),
            torch.cat([self.t_r[sl], self.t_m[sl]]),
            torch.cat([self.eps_r[sl], self.eps_m[sl]]),
        )
        a, b = both.chunk(2)
        if per_sample:
            return (a + b) / self.batch
        return a.mean() + b.mean()

    def ell_retain(self) -> Tensor:
        return self._ell_r()

    def retain_loss_chunks(self, k: int) -> list[Tensor]:
        """ℓ_r split over ``k`` micro-batches of the retain batch (their sum is ℓ_r)."""
        n = self.batch
        m = (n + k - 1) // k
        return [self._ell_r(slice(i, i + m), per_sample=True).sum() for i in range(0, n, m)]

    def retain_per_sample(self) -> tuple[Any, tuple[Tensor, ...]]:
        """``(loss_fn, batch)`` for :mod:`uno.per_sample`: 2B rows, the B retain terms then the B
        remapping terms, each /B, so that their sum is ℓ_r."""

        def loss_fn(model: nn.Module, x: Tensor, y: Tensor, t: Tensor, e: Tensor) -> Tensor:
            return per_sample_loss(model, x, y, t, e, self.ab) / self.batch

        x = torch.cat([self.x_r, self.x_r])
        return loss_fn, (
            x,
            torch.cat([self.y_r, self.y_m]),
            torch.cat([self.t_r, self.t_m]),
            torch.cat([self.eps_r, self.eps_m]),
        )

    def histogram_loss(self) -> Tensor:
        """U = KL(p̄ ‖ t), p̄ the judge's mean softmax on x̂₀ of noised forget images conditioned on c."""
        if self._u is None:
            xt = q_sample(self.ab, self.x_f, self.t_u, self.eps_u)
            x0 = predict_x0(self.ab, xt, self.t_u, self.model(xt, self.t_u, self.y_f))
            p = judge_probs(self.judge, to_image(x0)).mean(0)
            t = self.hist_target.to(p)
            self._u = torch.sum(p * (torch.log(p + HIST_EPS) - torch.log(t + HIST_EPS)))
        return self._u

    # -- baselines' losses ---------------------------------------------------------------------
    def saliency_loss(self, n: int = 1024) -> Tensor:
        """SalUn's saliency loss: ℓ_d of the first ``n`` forget images with their label (fixed t, ε)."""
        g = torch.Generator().manual_seed(step_seed(self.seed, -4))
        x = self.forget_x[:n]
        t = torch.randint(self.T, (len(x),), generator=g)
        return self.denoise(x, self.forget_y[:n], t, torch.randn(x.shape, generator=g)).mean()

    def salun_loss(self) -> Tensor:
        """SalUn's step loss here: the remapping objective ℓ_r (masked and clipped by ``salun``)."""
        return self.ell_retain()

    def esd_loss(self, eta: float) -> Tensor:
        """ESD-style negative guidance on noised forget images, plus the plain retain ℓ_d.

        Target ε* = ε₀(x_t, ∅) − η·(ε₀(x_t, c) − ε₀(x_t, ∅)) from the frozen original ε₀:
        mean w_t·‖ε_θ(x_t, c) − ε*‖² + ℓ_d(x_r, y_r) (w_t: ℓ_d's Min-SNR weight).
        """
        orig = self.frozen_original()
        xt = q_sample(self.ab, self.x_f, self.t_f, self.eps_f)
        with torch.no_grad():
            e_c = orig(xt, self.t_f, self.y_f)
            e_u = orig(xt, self.t_f, None)
            target = e_u - eta * (e_c - e_u)
        w = loss_weight(self.ab, self.t_f)  # the same weighting as ℓ_d
        esd = (w * _mse(self.model(xt, self.t_f, self.y_f), target)).mean()
        return esd + self.denoise(self.x_r, self.y_r, self.t_r, self.eps_r).mean()

    # -- monitoring ----------------------------------------------------------------------------
    def labels_for(self, n: int) -> Tensor:
        """Forget labels for ``n`` codes (cycling over the forget classes)."""
        return torch.as_tensor(self.targets)[torch.arange(n) % len(self.targets)]

    def sample(self, z: Tensor, y: Tensor, model: Optional[nn.Module] = None) -> Tensor:
        """DDIM images from codes ``z (N, H·W)`` with labels ``y`` (the model's default chain)."""
        return model_chain(self.model if model is None else model, z, y)

    def monitor_images(self) -> Tensor:
        return self.sample(self.z_monitor, self.labels_for(len(self.z_monitor)))

    def forget_fraction(self) -> float:
        """Share of the class-c-conditioned monitor samples the judge assigns to a forget class."""
        return float(in_forget(self.judge, self.monitor_images(), self.targets).float().mean())


#: the last few RetainFID sample sets, keyed by (model weights, codes, labels): see :class:`RetainFID`
_SAMPLES: dict[tuple[str, ...], Tensor] = {}
_SAMPLES_KEPT = 4


def _digest(*tensors: Tensor) -> str:
    """A content hash of tensors (a few ms for the 2M-parameter model; the chain costs seconds)."""
    h = hashlib.sha1()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class RetainFID:
    """Classifier FID on the retain classes: ``judge``'s features of ``n`` real retain training images
    against ``n`` samples (the model's default chain) from fixed codes (seed 1234) with the same labels,
    so the same class mix. Any judge with ``features`` works (the MLP judge's 200-d layer by default).

    The samples are a deterministic function of the weights, the codes and the labels, so the last few
    sample sets are kept by a hash of all three: the FIDs of both judges of the same model, and a run's
    FID before unlearning (the same original every run), sample once.
    """

    def __init__(
        self, judge: nn.Module, train: ImageData, targets: Sequence[int], n: int, zdim: int = 784
    ) -> None:
        from uno.unlearn.metrics import features

        keep = ~train.forget_mask(targets)
        x, y = train.x[keep], train.y[keep]
        n = min(int(n), len(x))
        self.judge = judge
        self.real_feat = features(judge, x[:n])
        self.y = y[:n]
        self.z = torch.randn(n, zdim, generator=torch.Generator().manual_seed(1234))

    def samples(self, model: nn.Module) -> Tensor:
        """The ``n`` samples of ``model`` (kept for the next call on the same weights)."""
        state = list(model.state_dict().values())
        key = (_digest(*state), _digest(self.z, self.y), str(getattr(model, "config", "")))
        if key not in _SAMPLES:
            while len(_SAMPLES) >= _SAMPLES_KEPT:
                _SAMPLES.pop(next(iter(_SAMPLES)))
            _SAMPLES[key] = model_chain(model, self.z, self.y)
        return _SAMPLES[key]

    def __call__(self, model: nn.Module) -> float:
        from uno.unlearn.metrics import features, frechet_distance

        return frechet_distance(self.real_feat, features(self.judge, self.samples(model)))
