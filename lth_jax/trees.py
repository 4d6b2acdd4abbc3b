"""Names of pytree leaves: the '/'-joined key path (``dense_0/kernel``).

The same names are used by pruning overrides, mask and checkpoint ``.npz``
files and error messages, so every module that names a leaf imports them
from here.
"""
from __future__ import annotations

from typing import Callable

import jax


def path_name(path) -> str:
    """'/'-joined name of a key path from `jax.tree_util.tree_flatten_with_path`."""
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
