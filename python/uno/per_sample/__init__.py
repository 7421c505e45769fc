"""Per-sample gradients, their norms, Gram matrices (ghost products), basis coefficients, weighted
sums and principal directions."""

from uno.per_sample._api import coefficients, cross_gram, grads, gram, norms
from uno.per_sample._directions import principal_directions, principal_weights, weighted_sum
from uno.per_sample._ghost_op import ghost_gram

__all__ = [
    "coefficients",
    "cross_gram",
    "ghost_gram",
    "grads",
    "gram",
    "norms",
    "principal_directions",
    "principal_weights",
    "weighted_sum",
]
