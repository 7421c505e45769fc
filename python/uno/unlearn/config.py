"""The configuration of one unlearning run: ``RunConfig`` (the ``uno unlearn`` flags, 1:1) and its checks.

A method's own hyper-parameters (``lam`` of ``uno``/``uno-s``, ``k`` of ``uno-subspace``) are fields here
because they are flags; which method reads which field is the method's business
(``Method.defaults``/``Method.options``), not this module's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from uno.unlearn import methods, preflight
from uno.unlearn.diffusion.checks import check_config as check_diffusion_config
from uno.unlearn.errors import UnoUserError
from uno.unlearn.methods.defaults import AUTO, model_kind, resolve

#: ``--fresh-n``'s default for ``--model diffusion`` (docs/diffusion.md: 20 DDIM steps × 2 guided
#: forwards per code, so 10,000 codes per update would cost 400,000 denoiser forwards).
DIFFUSION_FRESH_N = 500


@dataclass
class RunConfig:
    """Configuration of one unlearning run (CLI flags map 1:1)."""

    model: str = "vae"  # "vae", "gan", "diffusion" or a path to a saved model
    # "auto": the model's default (methods/defaults.py: the lead of its honest table), set on creation
    method: str = AUTO
    forget: list[str] = field(default_factory=lambda: ["1"])
    steps: int = 100
    tau: float = 0.02
    seed: int = 0
    lr: float = 1e-3
    lam: float = 1e3
    w_u: float = 1e3  # histogram-loss weight of the -hat variants
    batch: int = 128
    n_monitor: int = 512
    bn_train: bool = False
    ckpt_every: int = 10
    stop_on_forget: bool = False
    judge: Optional[str] = None  # path; default: the cached MLP judge
    judge2: Optional[str] = (
        None  # path; default: the cached CNN judge (with the default judge only)
    )
    # fresh codes f is measured on after every step (0: not measured; None: the model's default,
    # :meth:`fresh_count`)
    fresh_n: Optional[int] = None
    data: Optional[str] = None  # data root; default: the embedded MNIST digits
    dataset: str = "mnist"  # "mnist" or "celeba" (torchvision layout under --data; 64×64)
    fid_n: Optional[int] = None  # number of images for FID (None = all real retain images)
    k: int = 8  # uno-subspace: retain micro-batches
    w_c: float = 0.0  # GAN retain loss: critic weight
    w_j: float = 1.0  # GAN retain loss: weight of the judge term (keep each retain latent's class)
    critic: Optional[str] = None  # GAN: critic path (default: the cached one for --model gan)
    vae_epochs: Optional[int] = None
    judge_epochs: Optional[int] = None
    gan_steps: Optional[int] = None
    quiet: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.model, str) and self.method == AUTO:
            self.method = resolve(self.method, self.model)

    def fresh_count(self) -> int:
        """The number of fresh codes f is measured on after every step: ``--fresh-n``, else the
        model's default, 10,000 (:data:`~uno.unlearn.evaluation.N_FRESH`) and
        :data:`DIFFUSION_FRESH_N` for ``--model diffusion``, whose every code costs a DDIM chain."""
        if self.fresh_n is not None:
            return int(self.fresh_n)
        from uno.unlearn.evaluation import N_FRESH

        return DIFFUSION_FRESH_N if self.model == "diffusion" else N_FRESH

    def validate(self) -> None:
        """Check every option (named by its ``uno unlearn`` flag) without loading anything.

        Raises:
            UnoUserError: the first bad option, with the value seen.
        """
        method = methods.from_config(self)  # an unknown method: the message lists the known ones
        if not isinstance(self.forget, (list, tuple)) or not self.forget:
            raise UnoUserError(f"--forget needs at least one class, got {self.forget!r}")
        ints: list[tuple[str, Any, int]] = [
            ("--steps", self.steps, 0),
            ("--batch", self.batch, 1),
            ("--monitor", self.n_monitor, 1),
            ("--ckpt-every", self.ckpt_every, 1),
            ("--k", self.k, 1),
        ]
        for flag, v, low in ints:
            preflight.int_at_least(flag, v, low)
        optional: list[tuple[str, Any, int]] = [
            ("--fresh-n", self.fresh_n, 0),
            ("--fid-n", self.fid_n, 2),  # a covariance needs two samples
            ("vae_epochs", self.vae_epochs, 1),
            ("judge_epochs", self.judge_epochs, 1),
            ("gan_steps", self.gan_steps, 1),
        ]
        for flag, v, low in optional:
            preflight.int_at_least(flag, v, low, optional=True)
        preflight.seed("--seed", self.seed)
        preflight.real("--tau", self.tau, low=0.0, high=1.0, low_open=True)
        preflight.real("--lr", self.lr, low=0.0, low_open=True)
        weights: list[tuple[str, Any]] = [
            ("--lam", self.lam),
            ("--w-u", self.w_u),
            ("--w-c", self.w_c),
            ("--w-j", self.w_j),
        ]
        for flag, w in weights:
            preflight.real(flag, w, low=0.0)
        if self.dataset not in ("mnist", "celeba"):
            raise UnoUserError(f"unknown dataset {self.dataset!r}; choose mnist or celeba")
        if self.model not in ("vae", "gan", "diffusion") and not preflight.is_file(
            "--model", self.model
        ):
            raise UnoUserError(
                f"unknown model {self.model!r}: not 'vae', 'gan', 'diffusion' or an existing file"
            )
        kind = model_kind(self.model)
        allowed = method.models
        if kind not in allowed:
            raise UnoUserError(
                f"--method {self.method} needs a {' or '.join(allowed)} model, not a {kind} "
                f"(--model {self.model})"
            )
        check_diffusion_config(self)
        preflight.existing_file("--judge", self.judge)
        preflight.existing_file("--judge2", self.judge2)
        preflight.existing_file("--critic", self.critic)
        preflight.existing_path("--data", self.data)
