"""Stacks of K networks on a leading "member" axis, trained and evaluated with vmap."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def stack(trees: list):
    """K pytrees of the same structure -> one pytree with a leading axis of size K."""
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)


def unstack(tree) -> list:
    """Inverse of `stack`."""
    k = jax.tree_util.tree_leaves(tree)[0].shape[0]
    return [take(tree, i) for i in range(k)]


def take(tree, i):
    """Member i (or the members selected by an index array) of a stacked pytree."""
    return jax.tree_util.tree_map(lambda x: x[i], tree)
