"""Pretraining (VAE, judge, WGAN-GP) and the model cache.

Cached models live in ``$UNO_CACHE_DIR`` (default ``$XDG_CACHE_HOME/uno`` or ``~/.cache/uno``), one
safetensors file per (kind, data, budget, seed), written atomically. ``get_or_train`` reuses them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence, TypedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from uno.unlearn.data import ImageData, load_mnist
from uno.unlearn.io import load_model, save_model
from uno.unlearn.models import CNNJudge, DCGANCritic, DCGANGenerator, MLPJudge, MnistVAE

if TYPE_CHECKING:
    from typing_extensions import Unpack

log = logging.getLogger("uno.unlearn")


def cache_dir() -> Path:
    """``$UNO_CACHE_DIR``, else ``$XDG_CACHE_HOME/uno``, else ``~/.cache/uno``."""
    env = os.environ.get("UNO_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "uno"


def progress(iterable: Any = None, *, quiet: bool = False, **kw: Any) -> Any:
    """A tqdm bar on stderr (none when ``quiet``); off a terminal (logs, pipes) it updates every 30 s."""
    from tqdm.auto import tqdm

    tty = sys.stderr.isatty()
    kw.setdefault("mininterval", 0.1 if tty else 30.0)
    return tqdm(iterable, disable=quiet, leave=not tty, ascii=not tty, **kw)


def _seed(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


class FitOptions(TypedDict, total=False):
    """Keyword options of :func:`train_vae` and :func:`train_judge`."""

    epochs: int  # passes over the data (train_vae 50, train_judge 10)
    batch: int  # 128
    lr: float  # Adam's, 1e-3
    seed: int  # the shuffling and initial torch seed, 0
    quiet: bool  # no progress bar, False


def _adam_epochs(
    model: nn.Module,
    data: ImageData,
    loss_of: Callable[[Tensor], Tensor],
    desc: str,
    epochs: int,
    opts: FitOptions,
) -> nn.Module:
    """Shuffled passes of Adam over ``data`` minimising ``loss_of(indices)``; returns it in eval mode."""
    g = _seed(opts.get("seed", 0))
    opt = torch.optim.Adam(model.parameters(), lr=opts.get("lr", 1e-3))
    model.train()
    for _ in progress(range(opts.get("epochs", epochs)), quiet=opts.get("quiet", False), desc=desc):
        for idx in torch.randperm(len(data), generator=g).split(opts.get("batch", 128)):
            opt.zero_grad(set_to_none=True)
            loss_of(idx).backward()
            opt.step()
    return model.eval()


def train_vae(model: nn.Module, data: ImageData, **opts: Unpack[FitOptions]) -> nn.Module:
    """Train a VAE on ``data.x`` with Adam on the sum-reduced negative ELBO (50 epochs by default)."""
    return _adam_epochs(model, data, lambda idx: model.loss(data.x[idx]), "train vae", 50, opts)  # type: ignore[operator]


def train_judge(judge: nn.Module, data: ImageData, **opts: Unpack[FitOptions]) -> nn.Module:
    """Train a classifier judge (cross-entropy; a one-logit judge uses the first attribute column;
    10 epochs by default)."""

    def loss_of(idx: Tensor) -> Tensor:
        logits = judge(data.x[idx])
        if logits.shape[1] == 1:
            y = data.y[idx].float().reshape(len(idx), -1)[:, 0]
            return F.binary_cross_entropy_with_logits(logits[:, 0], y)
        return F.cross_entropy(logits, data.y[idx])

    return _adam_epochs(judge, data, loss_of, "train judge", 10, opts)


def judge_accuracy(judge: nn.Module, data: ImageData) -> float:
    with torch.no_grad():
        return float((judge(data.x).argmax(1) == data.y).float().mean())


def train_gan(
    gen: nn.Module,
    critic: nn.Module,
    data: ImageData,
    steps: int = 2000,
    batch: int = 64,
    n_critic: int = 5,
    gp: float = 10.0,
    lr: float = 2e-4,
    seed: int = 0,
    quiet: bool = False,
) -> tuple[nn.Module, nn.Module]:
    """WGAN-GP training (Gulrajani et al. 2017): ``steps`` generator updates, ``n_critic`` critic updates each."""
    g = _seed(seed)
    opt_g = torch.optim.Adam(gen.parameters(), lr=lr, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(critic.parameters(), lr=lr, betas=(0.5, 0.9))
    gen.train()
    critic.train()
    for _ in progress(range(steps), quiet=quiet, desc="train gan"):
        wgan_gp_update(
            gen, critic, (opt_g, opt_d), data.x, g, batch=batch, n_critic=n_critic, gp=gp
        )
    return gen.eval(), critic.eval()


def wgan_gp_update(
    gen: nn.Module,
    critic: nn.Module,
    opts: tuple[torch.optim.Optimizer, torch.optim.Optimizer],
    real_x: Tensor,
    g: torch.Generator,
    *,
    batch: int = 64,
    n_critic: int = 5,
    gp: float = 10.0,
) -> None:
    """One WGAN-GP generator update after ``n_critic`` critic updates; real batches drawn (with
    replacement, from ``g``) from ``real_x``, latents and mixing weights from ``g`` too."""
    opt_g, opt_d = opts
    zdim: int = gen.latent_dim  # type: ignore[assignment]
    for _ in range(n_critic):
        real = real_x[torch.randint(len(real_x), (batch,), generator=g)]
        with torch.no_grad():
            fake = gen.decode(torch.randn(batch, zdim, generator=g))  # type: ignore[operator]
        eps = torch.rand(batch, 1, 1, 1, generator=g)
        mix = (eps * real + (1 - eps) * fake).requires_grad_(True)
        grad = torch.autograd.grad(critic(mix).sum(), mix, create_graph=True)[0]
        penalty = ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
        loss_d = critic(fake).mean() - critic(real).mean() + gp * penalty
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
    loss_g = -critic(gen.decode(torch.randn(batch, zdim, generator=g))).mean()  # type: ignore[operator]
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()


#: Default pretraining budgets (the embedded 8,000 digits).
DEFAULTS: dict[str, dict[str, Any]] = {
    "vae": {"epochs": 50},
    "judge": {"epochs": 10},
    "judge2": {"epochs": 30, "width": 16},
    "gan": {"steps": 1000, "width": 32},
    "vae-retain": {"epochs": 50},
    "gan-retain": {"steps": 1000, "width": 32},
}


def _announce(kind: str, budget: dict[str, Any], path: Path) -> None:
    """Check the cache can take the model (before minutes of training are lost to a failed save), then
    say in one line, even with ``quiet`` (a first GAN takes minutes), what is trained and where it goes."""
    from uno.unlearn import preflight

    preflight.out_dir("the model cache ($UNO_CACHE_DIR)", str(path.parent))
    what = ", ".join(f"{k} {v}" for k, v in budget.items())
    log.warning(
        "no cached %s for this data and budget: training one (%s), cached at %s", kind, what, path
    )


def _key(kind: str, data_id: str, budget: dict[str, Any], seed: int) -> str:
    blob = json.dumps(
        {"kind": kind, "data": data_id, "budget": budget, "seed": seed}, sort_keys=True
    )
    h = hashlib.sha256(blob.encode()).hexdigest()[:10]
    return f"{kind}-{h}"


#: Kinds retrained from scratch on the retain classes only (the gold standard of docs/method.md §4b): the
#: original kind's model and recipe, with the forget classes (``forget=``) in the cache key.
RETAIN_KINDS = {"vae-retain": "vae", "gan-retain": "gan"}
#: A kind's seed when none is given (the second judge is seeded apart from the first).
DEFAULT_SEEDS = {"judge2": 1}


def trained_meta(path: Path) -> dict[str, Any]:
    """The metadata a cached model was saved with (``kind``, ``budget``, ``seed``, ``train_time_s``: the
    wall time of its training, kept so a model loaded from the cache still says what it cost;
    ``heldout_accuracy`` for a judge)."""
    from uno.unlearn.io import load_tensors

    return load_tensors(path)[1]


def get_or_train(
    kind: str,
    *,
    data_root: Optional[str] = None,
    seed: Optional[int] = None,
    quiet: bool = False,
    retrain: bool = False,
    forget: Optional[Sequence[str]] = None,
    **budget: Any,
) -> tuple[Any, Path]:
    """Load ``kind`` from the cache or train it on MNIST and cache it.

    Kinds: ``vae``, ``judge`` (the MLP judge), ``judge2`` (the second, independent judge: a CNN, seed 1),
    ``gan``, and ``vae-retain`` / ``gan-retain`` (the same recipe on the digits outside ``forget``).

    Args:
        kind: what to load or train.
        data_root: MNIST root (default: the embedded digits).
        seed: the training seed (default 0; ``judge2``: 1).
        quiet: no progress bar.
        retrain: ignore the cache (train and overwrite).
        forget: the forget classes of a ``*-retain`` kind (labels such as ``"1"``); part of the cache key.
        **budget: overrides of :data:`DEFAULTS` (``epochs``, ``steps``, ``n_train``, ...).

    Returns:
        ``(model, path)``; for ``gan`` kinds the model is ``(generator, critic)`` and two files are written.
    """
    from uno.unlearn.errors import UnoUserError

    if kind not in DEFAULTS:
        raise UnoUserError(f"unknown model kind {kind!r}; choose from {', '.join(DEFAULTS)}")
    b = {**DEFAULTS[kind], **{k: v for k, v in budget.items() if v is not None}}
    if kind in RETAIN_KINDS:
        if not forget:
            raise UnoUserError(f"model kind {kind!r} needs the forget classes (--forget)")
        b["forget"] = sorted(str(c) for c in forget)
    elif forget:
        raise UnoUserError(
            f"model kind {kind!r} takes no forget classes (only {', '.join(RETAIN_KINDS)})"
        )
    seed = DEFAULT_SEEDS.get(kind, 0) if seed is None else seed
    data_id = "embedded-mnist" if data_root is None else str(Path(data_root).expanduser().resolve())
    name = _key(kind, data_id, b, seed)
    path = cache_dir() / f"{name}.safetensors"
    meta: dict[str, Any] = {"kind": kind, "data": data_id, "budget": b, "seed": seed}
    base = RETAIN_KINDS.get(kind, kind)
    if base == "gan":
        cpath = cache_dir() / f"{name}-critic.safetensors"
        if path.is_file() and cpath.is_file() and not retrain:
            return (
                load_model(path, "dcgan_g")[0].eval(),
                load_model(cpath, "dcgan_d")[0].eval(),
            ), path
        gb = dict(b)
        train = _training_digits(
            data_root, gb.pop("forget", None)
        )  # a bad class: before the notice
        _announce(kind, b, path)
        torch.manual_seed(seed)
        width = int(gb.pop("width", 32))
        t0 = time.perf_counter()
        gen, critic = train_gan(
            DCGANGenerator(width=width),
            DCGANCritic(width=width),
            train,
            seed=seed,
            quiet=quiet,
            **gb,
        )
        meta["train_time_s"] = time.perf_counter() - t0
        save_model(cpath, critic, meta)
        save_model(path, gen, meta)
        return (gen, critic), path
    if path.is_file() and not retrain:
        return load_model(path)[0].eval(), path
    b = dict(b)
    train = _training_digits(data_root, b.pop("forget", None))  # a bad class: before the notice
    _announce(kind, meta["budget"], path)
    n_train = b.pop("n_train", None)  # only in the cache key when given (study: data-size sweep)
    if n_train is not None:
        train = train.random_subset(int(n_train))
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    if base == "vae":
        model = train_vae(MnistVAE(), train, seed=seed, quiet=quiet, **b)
    elif kind == "judge2":
        width = int(b.pop("width"))
        model = train_judge(CNNJudge(width=width), train, seed=seed, quiet=quiet, **b)
    else:
        model = train_judge(MLPJudge(), train, seed=seed, quiet=quiet, **b)
    meta["train_time_s"] = time.perf_counter() - t0
    if kind.startswith("judge"):
        meta["heldout_accuracy"] = judge_accuracy(model, load_mnist(data_root)[1])
    save_model(path, model, meta)
    return model, path


def time_training(
    kind: str,
    *,
    data_root: Optional[str] = None,
    seed: Optional[int] = None,
    quiet: bool = False,
    forget: Optional[Sequence[str]] = None,
    **budget: Any,
) -> tuple[float, Path]:
    """Train ``kind``'s recipe once more and return its wall time, leaving the cache alone.

    The speed-up vs retraining divides by the training time stored in the cached model, measured when
    it was trained (maybe under load); this re-times the same recipe (same data, budget and seed, the
    same code path as :func:`get_or_train`) on the machine as it is now. The model is trained into a
    temporary cache directory that is deleted afterwards: the cached model is neither read nor replaced.

    Returns:
        ``(seconds, path)``: the wall time of the training and the cached model's path it re-times.
    """
    import tempfile

    args: dict[str, Any] = dict(data_root=data_root, seed=seed, quiet=quiet, forget=forget)
    real, old, level = cache_dir(), os.environ.get("UNO_CACHE_DIR"), log.level
    with tempfile.TemporaryDirectory(prefix="uno-retime-") as tmp:
        os.environ["UNO_CACHE_DIR"] = tmp
        log.setLevel(logging.ERROR)  # not get_or_train's "no cached model: training one" notice
        try:
            _, p = get_or_train(kind, retrain=True, **args, **budget)
            seconds = float(trained_meta(p)["train_time_s"])
        finally:
            log.setLevel(level)
            if old is None:
                del os.environ["UNO_CACHE_DIR"]
            else:
                os.environ["UNO_CACHE_DIR"] = old
    return seconds, real / p.name


def _training_digits(data_root: Optional[str], forget: Optional[Sequence[str]]) -> ImageData:
    """The training digits; without the ``forget`` classes when given (a retrain kind)."""
    train, _ = load_mnist(data_root)
    if forget:
        from uno.unlearn.data import resolve_targets

        train = train.subset(
            torch.nonzero(~train.forget_mask(resolve_targets(train, forget)))[:, 0]
        )
    return train
