"""uno: fast machine unlearning for generative models by gradient orthogonalization."""

from uno._backends import backends

__version__ = "0.1.0"
__all__ = ["__version__", "backends"]
