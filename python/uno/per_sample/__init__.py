"""Per-sample gradients, their norms, Gram matrices (ghost products) and basis coefficients."""

from uno.per_sample._api import coefficients, cross_gram, grads, gram, norms, weighted_sum
from uno.per_sample._ghost_op import ghost_gram

__all__ = ["coefficients", "cross_gram", "ghost_gram", "grads", "gram", "norms", "weighted_sum"]
