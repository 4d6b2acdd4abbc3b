"""lth_jax: switch parts of overparameterised networks off (weights, units,
training examples) and study what is left, in JAX."""

__version__ = "0.1.0"
