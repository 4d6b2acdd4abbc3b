"""Pytrees as .npz files keyed by '/'-joined paths, written atomically."""
from __future__ import annotations

import io
import os

import jax.numpy as jnp
import numpy as np

from lth_jax.errors import LthError
from lth_jax.masks import map_named, named_leaves


def save(path: str, tree, dtype=None) -> None:
    arrays = {n: np.asarray(v, dtype=dtype) for n, v in named_leaves(tree).items()}
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(buf.getvalue())
    os.replace(tmp, path)


def load(path: str, like, dtype=None, what: str = "file"):
    """Read into the structure of `like`; names and shapes must match."""
    if not os.path.exists(path):
        raise LthError(f"{what} {path} does not exist; give the path of a .npz written by lth_jax")
    with np.load(path) as data:
        stored = {k: data[k] for k in data.files}
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
