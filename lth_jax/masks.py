"""Binary mask pytrees over parameters.

A mask has the tree structure of `params` with boolean leaves, True = kept.
Leaves that are not prunable stay all True. The default prunable set is the
kernels (leaves named ``kernel`` with ndim >= 2); biases and normalisation
scales are not pruned unless asked.

Leaves are named by their '/'-joined path (``dense_0/kernel``), the same
names used by `pruning` overrides and by the ``mask.npz`` files.
"""
from __future__ import annotations

from typing import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np

from lth_jax.errors import LthError


def path_name(path) -> str:
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


def named_leaves(tree) -> dict:
    """{'/'-joined path: leaf} in tree-flattening order."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {path_name(p): leaf for p, leaf in flat}


def map_named(fn: Callable, tree, *rest):
    """tree_map with the leaf's '/'-joined name as the first argument."""
    return jax.tree_util.tree_map_with_path(lambda p, *xs: fn(path_name(p), *xs), tree, *rest)


def default_prunable(name: str, leaf) -> bool:
    return name.split("/")[-1] == "kernel" and np.ndim(leaf) >= 2


def prunable(params, include: Iterable[str] | None = None, exclude: Iterable[str] = ()):
    """Pytree of Python bools: which leaves pruning may touch.

    include: leaf names to treat as prunable instead of the default (kernels).
    exclude: leaf names never pruned (for example ``output/kernel``).
    """
    names = named_leaves(params)
    for given in list(include or []) + list(exclude):
        if given not in names:
            raise LthError(f"no parameter named {given!r}; parameters are: {', '.join(names)}")
    include = set(include) if include is not None else None
    exclude = set(exclude)

    def rule(name, leaf):
        chosen = name in include if include is not None else default_prunable(name, leaf)
        return bool(chosen and name not in exclude)

    return map_named(rule, params)


def ones_like(params):
    return jax.tree_util.tree_map(lambda p: jnp.ones(jnp.shape(p), dtype=bool), params)


def apply(params, mask):
    """Zero the pruned weights (exactly 0.0, in the parameter's dtype)."""
    return jax.tree_util.tree_map(lambda p, m: jnp.where(m, p, jnp.zeros((), p.dtype)), params, mask)


def _counts(mask, which):
    leaves = jax.tree_util.tree_leaves(mask)
    chosen = jax.tree_util.tree_leaves(which)
    kept = sum(int(np.sum(m)) for m, c in zip(leaves, chosen) if c)
    total = sum(int(np.size(m)) for m, c in zip(leaves, chosen) if c)
    return kept, total


def count(mask, which=None) -> tuple[int, int]:
    """(kept, total) over the leaves selected by `which` (default: all parameters)."""
    which = which if which is not None else jax.tree_util.tree_map(lambda _: True, mask)
    return _counts(mask, which)


def density(mask, which=None) -> float:
    """Kept share of the prunable weights (`which` defaults to the kernels)."""
    which = which if which is not None else prunable(mask)
    kept, total = _counts(mask, which)
    if total == 0:
        raise LthError("the mask has no prunable leaves; pass `which` naming the leaves to count")
    return kept / total


def densities(mask, which=None) -> dict:
    """Density over prunable weights, over all parameters, and per prunable leaf."""
    which = which if which is not None else prunable(mask)
    kept_all, total_all = count(mask)
    per_leaf = {n: float(np.mean(m)) for (n, m), c in
                zip(named_leaves(mask).items(), jax.tree_util.tree_leaves(which)) if c}
    return {"prunable": density(mask, which), "all": kept_all / total_all, "per_leaf": per_leaf}


def save(path: str, mask) -> None:
    """Write a mask as .npz (keys: '/'-joined parameter paths, boolean arrays), atomically."""
    from lth_jax import npz
    npz.save(path, mask, dtype=bool)


def load(path: str, like):
    """Read a mask saved by `save` into the structure of `like` (params or a mask)."""
    from lth_jax import npz
    return npz.load(path, like, dtype=bool, what="mask file")
