"""Pruning rules: each takes a mask and returns a new, nested mask.

`fraction` is the share of the *remaining* prunable weights removed (the IMP
convention of Frankle & Carbin and open_lth). Already-pruned weights never
come back.

Exact counts: a group of n_alive remaining weights loses
``floor(fraction * n_alive + 0.5)`` of them (round half up). Ties: among equal
scores, the weight that comes first in the flattened order (leaf order of the
pytree, then row-major position) is removed first.

Scopes:
- ``"global"``: one ranking of raw |w| across all prunable leaves (open_lth's
  global pruning). This is not jaxpruner's "global_magnitude", which
  normalises each tensor and targets total sparsity.
- ``"layerwise"``: each prunable leaf loses `fraction` of its own remaining weights.

``layer_fractions`` overrides the rate of named leaves (e.g.
``{"output/kernel": 0.1}`` for Frankle & Carbin's output layer at half rate);
a leaf with an override is ranked on its own, in either scope; 0.0 excludes it.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lth_jax import masks as masks_lib
from lth_jax.errors import LthError

SCOPES = ("global", "layerwise")


def check_fraction(fraction, what="fraction", allow_zero=True) -> None:
    if isinstance(fraction, jax.core.Tracer):
        return  # checked by whoever made the traced value
    low_ok = fraction >= 0 if allow_zero else fraction > 0
    if not (low_ok and fraction < 1):
        bound = "[0, 1)" if allow_zero else "(0, 1)"
        raise LthError(f"{what} must be in {bound} (the share of remaining weights removed), got {fraction}")


def _keep_after_removing(scores, alive, fraction):
    """Flat bool: alive entries minus the round(fraction * n_alive) lowest-scoring ones."""
    n_alive = jnp.sum(alive)
    n_remove = jnp.floor(fraction * n_alive + 0.5).astype(jnp.int32)
    # Pruned entries rank first, so the removal budget starts after them.
    keyed = jnp.where(alive, scores, -jnp.inf)
    order = jnp.argsort(keyed, stable=True)
    rank = jnp.zeros_like(order).at[order].set(jnp.arange(order.size, dtype=order.dtype))
    n_dead = alive.size - n_alive
    return rank >= n_dead + n_remove


def _rank_groups(scores_tree, mask, fraction, scope, layer_fractions, which):
    """Apply `_keep_after_removing` per group of leaves; returns the new mask."""
    if scope not in SCOPES:
        raise LthError(f"unknown pruning scope {scope!r}; valid: {', '.join(SCOPES)}")
    check_fraction(fraction)
    names = masks_lib.named_leaves(mask)
    layer_fractions = dict(layer_fractions or {})
    for name, f in layer_fractions.items():
        if name not in names:
            raise LthError(f"layer_fractions names {name!r}, which is not a parameter; "
                           f"parameters are: {', '.join(names)}")
        check_fraction(f, what=f"layer_fractions[{name!r}]")
    which = which if which is not None else masks_lib.prunable(mask)
    chosen = dict(zip(names, jax.tree_util.tree_leaves(which)))
    score_leaves = masks_lib.named_leaves(scores_tree)
    new = dict(names)

    groups = []  # (fraction, [names])
    pooled = []
    for name in names:
        if not chosen[name] and name not in layer_fractions:
            continue
        if name in layer_fractions:
            groups.append((layer_fractions[name], [name]))
        elif scope == "layerwise":
            groups.append((fraction, [name]))
        else:
            pooled.append(name)
    if pooled:
        groups.append((fraction, pooled))

    for frac, group in groups:
        flat_scores = jnp.concatenate([jnp.ravel(score_leaves[n]).astype(jnp.float32) for n in group])
        flat_alive = jnp.concatenate([jnp.ravel(names[n]) for n in group])
        keep = _keep_after_removing(flat_scores, flat_alive, frac)
        offset = 0
        for n in group:
            size = int(np.size(names[n]))
            new[n] = keep[offset:offset + size].reshape(np.shape(names[n]))
            offset += size
    treedef = jax.tree_util.tree_structure(mask)
    return jax.tree_util.tree_unflatten(treedef, [new[n] for n in names])


def magnitude(params, mask, fraction, scope="global", layer_fractions=None, which=None):
    """Remove `fraction` of the remaining prunable weights with the smallest |w|."""
    scores = jax.tree_util.tree_map(jnp.abs, params)
    return _rank_groups(scores, mask, fraction, scope, layer_fractions, which)


def _uniform_like(key, tree):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(key, len(leaves))
    return jax.tree_util.tree_unflatten(
        treedef, [jax.random.uniform(k, jnp.shape(leaf)) for k, leaf in zip(keys, leaves)])


def random(key, mask, fraction, scope="layerwise", layer_fractions=None, which=None):
    """Remove `fraction` of the remaining prunable weights chosen uniformly at random."""
    return _rank_groups(_uniform_like(key, mask), mask, fraction, scope, layer_fractions, which)


def random_like(key, mask, which=None):
    """A fresh random mask with the same number of kept weights in every prunable
    leaf as `mask` (the "random pruning" control). Not nested in `mask`."""
    which = which if which is not None else masks_lib.prunable(mask)
    scores = _uniform_like(key, mask)

    def draw(m, s, chosen):
        if not chosen:
            return m
        n_remove = m.size - jnp.sum(m)
        order = jnp.argsort(jnp.ravel(s), stable=True)
        rank = jnp.zeros_like(order).at[order].set(jnp.arange(order.size, dtype=order.dtype))
        return (rank >= n_remove).reshape(m.shape)

    return jax.tree_util.tree_map(draw, mask, scores, which)


def units_to_weights(params, unit_masks: dict, mask=None):
    """Expand unit (node / channel) masks into a weight mask.

    unit_masks: {layer name: bool vector over the layer's output units}, e.g.
    ``{"dense_0": keep0, "dense_1": keep1}``. Removing unit j of a Dense or
    Conv layer clears column j of its kernel (the last axis), its bias j and
    the input rows of the next layer's kernel that read unit j (for a Dense
    after a flattened NHWC conv output, every row with index % channels == j).
    The next layer is the next kernel in parameter order, which holds for the
    sequential zoo models (mlp, lenet, conv, vgg); a unit masked this way
    outputs zero, so a BatchNorm between the layers passes only its shift,
    which the next layer's cleared rows ignore.
    """
    names = masks_lib.named_leaves(params)
    kernels = [n for n in names if n.endswith("/kernel") and np.ndim(names[n]) >= 2]
    layers = [n[: -len("/kernel")] for n in kernels]
    new = {n: np.ones(np.shape(v), dtype=bool) for n, v in names.items()}
    if mask is not None:
        new.update({n: np.asarray(v, dtype=bool) for n, v in masks_lib.named_leaves(mask).items()})
    for layer, keep in unit_masks.items():
        if layer not in layers:
            raise LthError(f"unit mask for {layer!r}, which is not a layer with a kernel; layers: {', '.join(layers)}")
        keep = np.asarray(keep, dtype=bool)
        kernel = f"{layer}/kernel"
        width = np.shape(names[kernel])[-1]
        if keep.shape != (width,):
            raise LthError(f"unit mask for {layer!r} has shape {keep.shape}, the layer has {width} units")
        new[kernel] &= keep
        if f"{layer}/bias" in new:
            new[f"{layer}/bias"] &= keep
        i = layers.index(layer)
        if i + 1 < len(layers):
            nxt = f"{layers[i + 1]}/kernel"
            fan_in = np.shape(names[nxt])[-2]
            if fan_in % width:
                raise LthError(f"cannot map units of {layer!r} ({width}) to the inputs of {nxt} ({fan_in})")
            rows = np.tile(keep, fan_in // width)
            new[nxt] &= rows.reshape((1,) * (np.ndim(names[nxt]) - 2) + (fan_in, 1))
    treedef = jax.tree_util.tree_structure(params)
    return jax.tree_util.tree_unflatten(treedef, [jnp.asarray(new[n]) for n in names])
