"""Parameter shape lists of realistic models, scaled to a target size (the benches' workloads).

The projection and the optimizer step see a model as a list of parameter tensors: the piece sizes and
their count matter (one large embedding, many small biases), not the layer types.
"""

from __future__ import annotations

import math
from typing import List, Tuple

import torch

Shape = Tuple[int, ...]


def conv_vae_shapes() -> List[Shape]:
    """A conv VAE in the paper's CelebA layout (5 conv blocks 32..512, latent 512)."""
    shapes: List[Shape] = []
    ch = [3, 32, 64, 128, 256, 512]
    for a, b in zip(ch, ch[1:]):
        shapes += [(b, a, 3, 3), (b,), (b,), (b,)]  # conv weight, bias, BN weight, BN bias
    shapes += [(512, 2048), (512,), (512, 2048), (512,), (2048, 512), (2048,)]
    rev = ch[::-1]
    for a, b in zip(rev, rev[1:]):
        shapes += [(a, b, 3, 3), (b,), (b,), (b,)]
    shapes += [(3, 3, 3, 3), (3,)]
    return shapes


def transformer_shapes(d: int = 768, layers: int = 12, vocab: int = 32000) -> List[Shape]:
    """A GPT-2-small-like list: the embedding, ``layers`` blocks (attention, MLP, norms), a final norm."""
    shapes: List[Shape] = [(vocab, d)]
    for _ in range(layers):
        shapes += [(d,), (d,), (3 * d, d), (3 * d,), (d, d), (d,), (d,), (d,)]
        shapes += [(4 * d, d), (4 * d,), (d, 4 * d), (d,)]
    shapes += [(d,), (d,)]
    return shapes


#: The MNIST VAE of the paper (docs/method.md §5, 632,788 parameters in 14 tensors).
MNIST_VAE_SHAPES: List[Shape] = [
    (400, 784), (400,), (400,), (400,), (2, 400), (2,), (2, 400), (2,),
    (400, 2), (400,), (400,), (400,), (784, 400), (784,),
]  # fmt: skip

MODELS = {"convvae": conv_vae_shapes, "transformer": transformer_shapes}


def scaled_shapes(model: str, numel: int) -> List[Shape]:
    """``model``'s shape list with every leading dimension scaled so that the total is about ``numel``.

    Raises:
        ValueError: an unknown ``model`` or a ``numel`` below 1.
    """
    if model not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {model!r}")
    if numel < 1:
        raise ValueError(f"numel must be >= 1, got {numel}")
    base = MODELS[model]()
    f = numel / sum(math.prod(s) for s in base)
    return [(max(1, round(s[0] * f)), *s[1:]) for s in base]


def numel(shapes: List[Shape]) -> int:
    return sum(math.prod(s) for s in shapes)


def random_pieces(
    shapes: List[Shape], dtype: torch.dtype, device: torch.device, gen: torch.Generator
) -> List[torch.Tensor]:
    """One standard-normal tensor per shape (drawn on the CPU generator, then moved)."""
    return [torch.randn(s, generator=gen).to(device, dtype) for s in shapes]
