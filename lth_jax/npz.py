"""Pytrees as .npz files keyed by '/'-joined paths, written atomically."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from lth_jax import files
from lth_jax.errors import LthError
from lth_jax.trees import map_named, named_leaves


def save(path: str, tree, dtype=None) -> None:
    files.write_npz(path, {n: np.asarray(v, dtype=dtype) for n, v in named_leaves(tree).items()})


def load(path: str, like, dtype=None, what: str = "file"):
    """Read into the structure of `like`; names and shapes must match."""
    stored = files.read_npz(path, what)
    wanted = named_leaves(like)
    missing = sorted(set(wanted) - set(stored))
    extra = sorted(set(stored) - set(wanted))
    if missing or extra:
        raise LthError(f"{what} {path} does not match the model: missing {missing[:5]}, "
                       f"unexpected {extra[:5]}; was it saved for another model?")

    def pick(name, leaf):
        if stored[name].shape != np.shape(leaf):
            raise LthError(f"{what} {path}: {name} has shape {stored[name].shape}, the model's parameter "
                           f"has {np.shape(leaf)}; was it saved for another model?")
        return jnp.asarray(stored[name], dtype=dtype)

    return map_named(pick, like)
