"""Tasks: what a method sees — the parameters, the forget/retain losses of the current step, monitoring.

A task owns the model being unlearned, the frozen judge, the data (or latents) of both sides and the
fixed monitor batch z̄ ~ N(0, I). Each step begins with :meth:`begin_step`, which draws that step's
batches from a generator seeded by ``(seed, step)`` and reseeds torch's global RNG the same way, so a run
resumed from a checkpoint at step n draws exactly what the uninterrupted run drew.

Losses (docs/method.md §2): ``forget_loss() = ℓ_f + u_sign·w_u·U``, ``retain_loss() = ℓ_r + w_u·U``.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from uno.unlearn.data import ImageData
from uno.unlearn.models import sample_images, set_batchnorm

HIST_EPS = 1e-6


def step_seed(seed: int, step: int) -> int:
    return (int(seed) * 1_000_003 + int(step) * 7919 + 17) % (2**63 - 1)


def judge_probs(judge: nn.Module, x: Tensor) -> Tensor:
    """Class probabilities ``(N, K)``; a one-logit judge gives ``[1 − p, p]``."""
    logits = judge(x)
    if logits.shape[1] == 1:
        p = torch.sigmoid(logits[:, 0])
        return torch.stack([1 - p, p], dim=1)
    return torch.softmax(logits, dim=1)


def histogram_target(k: int, targets: Sequence[int], binary: bool) -> Tensor:
    """Target histogram t: 0 on the forget classes, equal mass on the others (binary: ``[1, 0]``)."""
    if binary:
        return torch.tensor([1.0, 0.0])
    t = torch.ones(k)
    t[list(targets)] = 0.0
    return t / t.sum()


def vae_loss_per_sample(model: Any, x: Tensor, eps: Tensor) -> Tensor:
    """(B,) negative ELBO per sample with the noise ``eps`` (the per-sample terms of ``vae_loss``)."""
    mu, logvar = model.encode(x)
    xr = model.decode(mu + eps * torch.exp(0.5 * logvar))
    if x.shape[1] == 1:
        rec = F.binary_cross_entropy(xr, x, reduction="none")
    else:
        rec = F.mse_loss(xr, x, reduction="none")
    kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp())
    return rec.flatten(1).sum(1) + model.beta * kl.sum(1)


def in_forget(judge: nn.Module, x: Tensor, targets: Sequence[int]) -> Tensor:
    """Bool ``(N,)``: the judge assigns the sample to a forget class (binary judge: p > 0.5)."""
    with torch.no_grad():
        logits = judge(x)
        if logits.shape[1] == 1:
            return logits[:, 0] > 0
        return torch.isin(logits.argmax(1), torch.as_tensor(list(targets)))


class Task:
    """Common parts of the VAE and GAN tasks."""

    model: nn.Module
    judge: nn.Module
    targets: list[int]

    def __init__(
        self,
        model: nn.Module,
        judge: nn.Module,
        targets: Sequence[int],
        *,
        batch: int = 128,
        n_monitor: int = 512,
        w_u: float = 0.0,
        seed: int = 0,
        bn_train: bool = False,
    ) -> None:
        self.model = model
        self.judge = judge.eval()
        for p in self.judge.parameters():
            p.requires_grad_(False)
        self.targets = list(targets)
        self.batch = batch
        self.w_u = w_u
        self.seed = seed
        self.bn_train = bn_train
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.zdim: int = model.latent_dim  # type: ignore[assignment]
        ref = self.params[0]
        self.dtype, self.device = ref.dtype, ref.device
        g = torch.Generator().manual_seed(step_seed(seed, -1))
        z = torch.randn(n_monitor, self.zdim, generator=g)
        self.z_monitor = z.to(self.dtype).to(self.device)
        with torch.no_grad():
            probe = torch.zeros(1, *model.image_shape, dtype=self.dtype, device=self.device)  # type: ignore[misc]
            n_out = int(self.judge(probe).shape[1])
        self.binary = n_out == 1
        k = 2 if self.binary else n_out
        self.hist_target = histogram_target(k, self.targets, self.binary)
        self._u: Optional[Tensor] = None
        self.step_generator = torch.Generator()
        self.original: Optional[nn.Module] = None  # the frozen model before unlearning, when given
        #: a data-parallel run's share of each step's batches (:class:`uno.unlearn.parallel.Share`)
        self.share: Any = None
        #: what the optimizer steps: ``params``, or their FSDP2 shards under ``--parallel fsdp2``
        #: (then ``params`` are the unsharded parameters, ``sharded`` drives FSDP2;
        #: :func:`uno.unlearn.parallel.shard`)
        self.step_params: list[Any] = self.params
        self.sharded: Any = None

    def frozen_original(self) -> nn.Module:
        """The frozen original model in eval mode (for methods that compare against it: fu, salun)."""
        if self.original is None:
            raise RuntimeError("this method needs the frozen original model (task.original)")
        return self.original.eval()

    # -- step protocol -------------------------------------------------------------------------
    def begin_step(self, step: int) -> None:
        """Draw the batches of ``step`` and seed the step's noise (deterministic in seed and step)."""
        s = step_seed(self.seed, step)
        self.step_generator.manual_seed(s)
        torch.manual_seed(s)
        self._u = None
        self.model.train()
        set_batchnorm(self.model, self.bn_train)
        self._draw()
        if self.share is not None:  # keep this rank's rows of the global batches
            self.share.begin(self)

    def end_step(self) -> None:
        self._u = None
        if self.share is not None:
            self.share.end(self)

    def _draw(self) -> None:
        raise NotImplementedError

    def histogram_loss(self) -> Tensor:
        """U = KL(p̄ ‖ t) on the monitor batch (cached within a step so L_f and L_r share it)."""
        if self._u is None:
            p = judge_probs(self.judge, self.model.decode(self.z_monitor)).mean(0)  # type: ignore[operator]
            t = self.hist_target.to(p)
            self._u = torch.sum(p * (torch.log(p + HIST_EPS) - torch.log(t + HIST_EPS)))
        return self._u

    def _counts_u(self) -> bool:
        """Whether this rank's losses add U: it is on the replicated monitor codes, so in a
        data-parallel run only rank 0 adds it (the ranks' gradients sum to one process's)."""
        from uno.unlearn.parallel import counts_replicated

        return bool(self.w_u) and counts_replicated()

    def forget_loss(self, u_sign: float = 1.0) -> Tensor:
        lf = self.ell_forget()
        return lf + u_sign * self.w_u * self.histogram_loss() if self._counts_u() else lf

    def retain_loss(self) -> Tensor:
        lr = self.ell_retain()
        return lr + self.w_u * self.histogram_loss() if self._counts_u() else lr

    def ell_forget(self) -> Tensor:
        raise NotImplementedError

    def ell_retain(self) -> Tensor:
        raise NotImplementedError

    def retain_loss_chunks(self, k: int) -> list[Tensor]:
        raise NotImplementedError

    def retain_per_sample(self) -> tuple[Any, tuple[Tensor, ...]]:
        """``(loss_fn, batch)`` for :mod:`uno.per_sample`: ``loss_fn(model, *batch)`` is the (B,)
        per-sample ℓ_r of this step's retain batch (its sum is ℓ_r; its noise is drawn here once, so
        every call sees the same per-sample losses)."""
        raise NotImplementedError

    # -- monitoring ----------------------------------------------------------------------------
    def monitor_images(self) -> Tensor:
        return sample_images(self.model, self.z_monitor)

    def forget_fraction(self) -> float:
        """Share of the monitor batch the judge assigns to a forget class (eval mode, no grad)."""
        return float(in_forget(self.judge, self.monitor_images(), self.targets).float().mean())


class VAETask(Task):
    """Unlearning a VAE: forget batches from D_f, retain batches from D_r, ℓ = negative ELBO."""

    def __init__(
        self,
        model: nn.Module,
        judge: nn.Module,
        train: ImageData,
        targets: Sequence[int],
        *,
        original: Optional[nn.Module] = None,
        **kw: Any,
    ) -> None:
        super().__init__(model, judge, targets, **kw)
        mask = train.forget_mask(targets)
        self.forget_x = train.x[mask]
        self.retain_x = train.x[~mask]
        if len(self.forget_x) == 0 or len(self.retain_x) == 0:
            from uno.unlearn.errors import DataError

            raise DataError(
                f"forget set has {len(self.forget_x)} and retain set {len(self.retain_x)} samples; "
                "both must be non-empty"
            )
        self.original = original
        self.x_f = self.forget_x[:1]
        self.x_r = self.retain_x[:1]

    def _draw(self) -> None:
        g = self.step_generator
        i_f = torch.randint(len(self.forget_x), (self.batch,), generator=g)
        i_r = torch.randint(len(self.retain_x), (self.batch,), generator=g)
        self.x_f, self.x_r = self.forget_x[i_f], self.retain_x[i_r]

    def ell_forget(self) -> Tensor:
        return self.model.loss(self.x_f)  # type: ignore[operator]

    def ell_retain(self) -> Tensor:
        return self.model.loss(self.x_r)  # type: ignore[operator]

    def retain_loss_chunks(self, k: int) -> list[Tensor]:
        if self.share is not None:  # each rank's rows of the 1-process micro-batches, their noise
            return [self._chunk_loss(c, rows) for c, rows in self.share.chunks("x_r", k)]
        return [self.model.loss(c) for c in self.x_r.chunk(k)]  # type: ignore[operator]

    def _chunk_loss(self, x: Tensor, rows: tuple[int, int, int]) -> Tensor:
        from uno.unlearn.parallel import noise_rows

        with noise_rows(self.model, rows):
            return self.model.loss(x)  # type: ignore[operator,no-any-return]

    def retain_per_sample(self) -> tuple[Any, tuple[Tensor, ...]]:
        eps = torch.randn(len(self.x_r), self.zdim, dtype=self.x_r.dtype, device=self.x_r.device)
        return vae_loss_per_sample, (self.x_r, eps)

    # -- quality -------------------------------------------------------------------------------
    def retain_elbo(self, heldout: ImageData, max_n: int = 2000) -> float:
        """Mean ELBO per held-out retain sample (higher is better): :func:`retain_elbo`."""
        return retain_elbo(self.model, heldout, self.targets, max_n)


def retain_elbo(
    model: nn.Module, heldout: ImageData, targets: Sequence[int], max_n: int = 2000
) -> float:
    """Mean ELBO per held-out retain sample (higher is better): the first ``max_n`` held-out samples
    outside ``targets``, fixed noise (seed 12345; torch's RNG restored), eval mode (modes restored)."""
    x = heldout.x[~heldout.forget_mask(targets)][:max_n]
    state = torch.get_rng_state()
    torch.manual_seed(12345)
    modes = [m.training for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            tot = 0.0
            for c in x.split(500):
                tot += float(model.loss(c))  # type: ignore[operator]
    finally:
        for m, t in zip(model.modules(), modes):
            m.training = t
        torch.set_rng_state(state)
    return -tot / max(1, len(x))


class GANTask(Task):
    """Unlearning a generator (no data needed at unlearning time; see docs/unlearning.md).

    Latents whose ORIGINAL output the judge assigns to a forget class form the forget side Z_f; the rest
    form Z_r. With the frozen original generator G₀ and the frozen critic D:
        ℓ_f(z_f) = Σ_i −log p_judge(forget | G(z_i))     (the generator's "likelihood" of the forget class;
                                                           ascent on it removes the class)
        ℓ_r(z_r) = Σ_i ‖G(z_i) − G₀(z_i)‖² − w_j·Σ_i log p_judge(y₀(z_i) | G(z_i)) + w_c·Σ_i −D(G(z_i))
    (stay on the original outputs and their classes y₀ = the judge's class of G₀(z_i); optionally stay
    realistic for the frozen critic).
    so every method (``uno``, ``surgery``, ...) applies unchanged. ``fu``/``salun`` use the same sides.
    """

    def __init__(
        self,
        model: nn.Module,
        judge: nn.Module,
        targets: Sequence[int],
        *,
        original: nn.Module,
        critic: Optional[nn.Module] = None,
        w_c: float = 0.0,
        w_j: float = 1.0,
        pool: int = 8192,
        **kw: Any,
    ) -> None:
        super().__init__(model, judge, targets, **kw)
        self.original = original.eval()
        for p in self.original.parameters():
            p.requires_grad_(False)
        self.critic = critic.eval() if critic is not None else None
        if self.critic is not None:
            for p in self.critic.parameters():
                p.requires_grad_(False)
        self.w_c = w_c
        self.w_j = w_j
        g = torch.Generator().manual_seed(step_seed(self.seed, -2))
        z = torch.randn(pool, self.zdim, generator=g)
        x0 = sample_images(self.original, z)
        mask = in_forget(self.judge, x0, self.targets)
        self.z_forget, self.z_retain = z[mask], z[~mask]
        with (
            torch.no_grad()
        ):  # the class the judge saw in the original output of each retain latent
            logits = self.judge(x0[~mask])
            self.y_retain = (logits[:, 0] > 0).long() if self.binary else logits.argmax(1)
        if len(self.z_forget) == 0 or len(self.z_retain) == 0:
            from uno.unlearn.errors import DataError

            raise DataError(
                f"the original generator produced {int(mask.sum())} forget samples of {pool}"
            )
        self.z_f = self.z_forget[:1]
        self.z_r, self.y_r = self.z_retain[:1], self.y_retain[:1]

    def _draw(self) -> None:
        g = self.step_generator
        self.z_f = self.z_forget[torch.randint(len(self.z_forget), (self.batch,), generator=g)]
        i_r = torch.randint(len(self.z_retain), (self.batch,), generator=g)
        self.z_r, self.y_r = self.z_retain[i_r], self.y_retain[i_r]

    def ell_forget_on(self, z: Tensor) -> Tensor:
        p = judge_probs(self.judge, self.model.decode(z))  # type: ignore[operator]
        p_f = p[:, 1] if self.binary else p[:, self.targets].sum(1)
        return -torch.log(p_f + HIST_EPS).sum()

    def _ell_r(self, z: Tensor, y: Tensor, per_sample: bool = False) -> Tensor:
        """ℓ_r on ``(z, y)``: summed, or (B,) per sample with ``per_sample``."""
        red = (lambda t: t.flatten(1).sum(1)) if per_sample else torch.sum
        x = self.model.decode(z)  # type: ignore[operator]
        with torch.no_grad():
            x0 = self.frozen_original().decode(z)  # type: ignore[operator]
        loss = red((x - x0) ** 2)
        if self.w_j:
            p = judge_probs(self.judge, x)
            loss = loss - self.w_j * red(torch.log(p.gather(1, y[:, None]) + HIST_EPS))
        if self.critic is not None and self.w_c:
            loss = loss - self.w_c * red(self.critic(x))
        return loss

    def ell_forget(self) -> Tensor:
        return self.ell_forget_on(self.z_f)

    def ell_retain(self) -> Tensor:
        return self._ell_r(self.z_r, self.y_r)

    def retain_loss_chunks(self, k: int) -> list[Tensor]:
        if self.share is not None:  # each rank's rows of the 1-process micro-batches
            zs, ys = self.share.chunks("z_r", k), self.share.chunks("y_r", k)
            return [self._ell_r(z, y) for (z, _), (y, _) in zip(zs, ys)]
        return [self._ell_r(c, y) for c, y in zip(self.z_r.chunk(k), self.y_r.chunk(k))]

    def retain_per_sample(self) -> tuple[Any, tuple[Tensor, ...]]:
        return (lambda model, z, y: self._ell_r(z, y, per_sample=True)), (self.z_r, self.y_r)
