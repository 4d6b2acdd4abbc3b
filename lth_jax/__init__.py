"""lth_jax: switch parts of overparameterised networks off (weights, units,
training examples) and study what is left, in JAX.

    from lth_jax import fit, masks, pruning, scores
"""

__version__ = "0.1.0"

from lth_jax.trainer import fit  # noqa: E402  (the one training call, see lth_jax.trainer)

__all__ = ["fit"]
