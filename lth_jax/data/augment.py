"""Data augmentation on device: pure jax functions of (key, batch).

All shapes are static, so they jit, vmap (e.g. over ensemble members, one
key each) and shard like any other jax function. `pad` must be a Python int.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lth_jax.data.dataset import AUGMENTATIONS
from lth_jax.errors import LthError, unknown


def crop_flip_with(x: jax.Array, offsets: jax.Array, flips: jax.Array, pad: int = 4) -> jax.Array:
    """Crop each example of x (B, H, W, C), zero-padded by `pad` on each side,
    at `offsets` (B, 2) ints in [0, 2 * pad] (row, column; `pad` = no shift),
    then flip it left-right where `flips` (B,) is True."""
    if x.ndim != 4:
        raise LthError(f"crop_flip expects a batch of images (B, H, W, C), got shape {x.shape}; "
                       "add the batch/channel axis")
    _, h, w, c = x.shape
    padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))

    def one(image, offset, flip):
        crop = jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (h, w, c))
        return jnp.where(flip, crop[:, ::-1, :], crop)

    return jax.vmap(one)(padded, offsets, flips)


def crop_flip(key: jax.Array, x: jax.Array, pad: int = 4) -> jax.Array:
    """Random crop (zero padding `pad`, shift uniform in [-pad, pad] per axis)
    and random horizontal flip (probability 1/2), independently per example
    of the batch x (B, H, W, C)."""
    offset_key, flip_key = jax.random.split(key)
    batch = x.shape[0]
    offsets = jax.random.randint(offset_key, (batch, 2), 0, 2 * pad + 1)
    flips = jax.random.bernoulli(flip_key, 0.5, (batch,))
    return crop_flip_with(x, offsets, flips, pad)


def apply(name, key: jax.Array, x: jax.Array) -> jax.Array:
    """Augment a batch by name (`Dataset.augment`): None returns x unchanged."""
    if name is None:
        return x
    if name == "crop_flip":
        return crop_flip(key, x)
    raise unknown("augmentation", name, AUGMENTATIONS)
