"""Pruning rules: each takes a mask and returns a new, nested mask.

`fraction` is the share of the *remaining* prunable weights removed (the IMP
convention of Frankle & Carbin and open_lth). Already-pruned weights never
come back.

Exact counts: a group of n_alive remaining weights loses
``floor(fraction * n_alive + 0.5)`` of them (round half up). Ties: among equal
scores, the weight that comes first in the flattened order (leaf order of the
pytree, then row-major position) is removed first. Scores are ranked in their
own dtype (float64 ones stay float64: a cast to float32 would turn scores above
3.4e38 into ties).

Scopes:
- ``"global"``: one ranking of raw |w| across all prunable leaves (open_lth's
  global pruning). This is not jaxpruner's "global_magnitude", which
  normalises each tensor and targets total sparsity.
- ``"layerwise"``: each prunable leaf loses `fraction` of its own remaining weights.

``layer_fractions`` overrides the rate of named leaves (e.g.
``{"output/kernel": 0.1}`` for Frankle & Carbin's output layer at half rate);
a leaf with an override is ranked on its own, in either scope; 0.0 excludes it.

Target density instead of a fraction (`magnitude(..., target_density=d)`,
`random(..., target_density=d)`): the prunable weights keep
``floor(d * n + 0.5)`` of their n entries (dead ones included), distributed by

- ``"global"``: one budget over all prunable leaves, filled by score;
- ``"uniform"``: every prunable leaf keeps ``floor(d * n_leaf + 0.5)``;
- ``"erk"``: Erdős–Rényi-Kernel (Evci et al. 2020, RigL; jaxpruner's "erk"):
  leaf density proportional to ``sum(shape) / prod(shape)`` of its kernel,
  scaled so the kept total is ``d * n``, leaves that would exceed 1 kept
  dense and the rest rescaled; each leaf then keeps ``floor(d_leaf * n_leaf + 0.5)``
  (so the total can differ from the target by the rounding, a few weights).

Pruning never revives a weight: a leaf keeps ``min(budget, alive)``, and a
global target above the mask's density is an error.

Under `jax.jit`, a traced `fraction` is clipped into [0, 1] (1 removes every
remaining weight; a negative value removes none); concrete values outside
[0, 1) are an error. `target_density` must be a Python number (the budgets
are computed at trace time).

Every rule checks its mask against the parameters (`masks.check`).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lth_jax import masks as masks_lib
from lth_jax.errors import LthError, check

SCOPES = ("global", "layerwise")


DISTRIBUTIONS = ("global", "uniform", "erk")


def check_fraction(fraction, what="fraction", allow_zero=True) -> None:
    """LthError unless a concrete `fraction` is in [0, 1) ((0, 1) without
    `allow_zero`); traced values pass (they are clipped where used)."""
    if isinstance(fraction, jax.core.Tracer):
        return
    low_ok = fraction >= 0 if allow_zero else fraction > 0
    if not (low_ok and fraction < 1):
        bound = "[0, 1)" if allow_zero else "(0, 1)"
        raise LthError(f"{what} must be in {bound} (the share of remaining weights removed), got {fraction}")


def ranks(flat):
    """Rank of each entry of a flat array in ascending order; ties by position."""
    order = jnp.argsort(flat, stable=True)
    return jnp.zeros_like(order).at[order].set(jnp.arange(order.size, dtype=order.dtype))


def keep_top(scores, alive, n_keep):
    """Flat bool: the `n_keep` highest-scoring alive entries (at most all alive ones)."""
    keyed = jnp.where(alive, scores, -jnp.inf)  # pruned entries rank first
    return (ranks(keyed) >= alive.size - jnp.minimum(n_keep, jnp.sum(alive))) & alive


def _keep_after_removing(scores, alive, fraction):
    """Flat bool: alive entries minus the round(fraction * n_alive) lowest-scoring ones."""
    fraction = jnp.clip(fraction, 0.0, 1.0)
    n_alive = jnp.sum(alive)
    n_remove = jnp.floor(fraction * n_alive + 0.5).astype(jnp.int32)
    return keep_top(scores, alive, n_alive - n_remove)


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
        flat_scores = jnp.concatenate([jnp.ravel(score_leaves[n]) for n in group])
        flat_alive = jnp.concatenate([jnp.ravel(names[n]) for n in group])
        _unflatten_into(new, group, names, _keep_after_removing(flat_scores, flat_alive, frac))
    treedef = jax.tree_util.tree_structure(mask)
    return jax.tree_util.tree_unflatten(treedef, [new[n] for n in names])


def _check(params, mask):
    masks_lib.check(mask, params)


def magnitude(params, mask, fraction=None, scope="global", layer_fractions=None, which=None, *,
              target_density=None, distribution="global"):
    """A new mask: `mask` minus the prunable weights with the smallest |w|.

    Args:
      params: the weights whose magnitudes rank them.
      mask: the current mask (checked against `params`); the result is nested in it.
      fraction: share of the *remaining* prunable weights to remove (IMP);
        exactly one of `fraction` and `target_density` is given.
      scope: "global" (one ranking of raw |w| across leaves) or "layerwise".
      layer_fractions: {leaf name: fraction} overrides (with `fraction`).
      which: pytree of bools choosing the prunable leaves (default: kernels).
      target_density: keep this share of the prunable weights, spread over
        leaves by `distribution` ("global" | "uniform" | "erk", see the module).
    Returns:
      The new boolean mask. Pure; jit-able with `fraction` traced (clipped to
      [0, 1]) and `target_density`, `distribution`, `scope` static.
    """
    _check(params, mask)
    scores = jax.tree_util.tree_map(jnp.abs, params)
    if target_density is not None:
        check(fraction is None, "give either fraction or target_density, not both")
        return to_density(scores, mask, target_density, distribution, which)
    check(fraction is not None, "magnitude needs fraction= (share of the remaining weights) or target_density=")
    return _rank_groups(scores, mask, fraction, scope, layer_fractions, which)


def _uniform_like(key, tree):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(key, len(leaves))
    return jax.tree_util.tree_unflatten(
        treedef, [jax.random.uniform(k, jnp.shape(leaf)) for k, leaf in zip(keys, leaves)])


def random(key, mask, fraction=None, scope="layerwise", layer_fractions=None, which=None, *,
           target_density=None, distribution="uniform"):
    """Like `magnitude`, with scores drawn uniformly at random from `key`
    (so the removed weights are a uniform random choice within each group)."""
    _check(mask, mask)
    scores = _uniform_like(key, mask)
    if target_density is not None:
        check(fraction is None, "give either fraction or target_density, not both")
        return to_density(scores, mask, target_density, distribution, which)
    check(fraction is not None, "random needs fraction= (share of the remaining weights) or target_density=")
    return _rank_groups(scores, mask, fraction, scope, layer_fractions, which)


def random_like(key, mask, which=None):
    """A fresh random mask with the same number of kept weights in every prunable
    leaf as `mask` (the "random pruning" control). Not nested in `mask`."""
    _check(mask, mask)
    which = which if which is not None else masks_lib.prunable(mask)
    scores = _uniform_like(key, mask)

    def draw(m, s, chosen):
        if not chosen:
            return m
        n_remove = m.size - jnp.sum(m)
        return (ranks(jnp.ravel(s)) >= n_remove).reshape(m.shape)

    return jax.tree_util.tree_map(draw, mask, scores, which)


def layer_densities(shapes: dict, density: float, distribution: str) -> dict:
    """{leaf name: density} for prunable leaves of `shapes` ({name: shape})
    that keep `density` of their weights in total ("uniform" | "erk"; see the
    module). Pure Python: the budgets are static."""
    check(distribution in ("uniform", "erk"), f"layer_densities: distribution must be 'uniform' or 'erk', "
                                              f"got {distribution!r}")
    if distribution == "uniform":
        return {n: density for n in shapes}
    sizes = {n: int(np.prod(s)) for n, s in shapes.items()}
    raw = {n: sum(s) / sizes[n] for n, s in shapes.items()}
    dense: set = set()
    while True:  # RigL's procedure: leaves whose density would pass 1 are kept dense
        budget = density * sum(sizes.values()) - sum(sizes[n] for n in dense)
        free = [n for n in shapes if n not in dense]
        eps = budget / sum(raw[n] * sizes[n] for n in free) if free else 0.0
        over = [n for n in free if eps * raw[n] > 1.0]
        if not over:
            return {n: 1.0 if n in dense else eps * raw[n] for n in shapes}
        dense.update(over)


def to_density(scores_tree, mask, density, distribution="global", which=None):
    """`mask` keeping the highest `scores_tree` at `density` (the target-density
    rule of `magnitude`; see the module docstring)."""
    check(not isinstance(density, jax.core.Tracer), "target_density must be a Python number, not a traced value "
                                                    "(the per-layer budgets are computed at trace time)")
    check(0.0 <= density <= 1.0, f"target_density must be in [0, 1], got {density}")
    check(distribution in DISTRIBUTIONS, f"unknown distribution {distribution!r}; valid: {', '.join(DISTRIBUTIONS)}")
    names = masks_lib.named_leaves(mask)
    chosen = chosen_leaves(mask, which, "target_density")
    if distribution == "global":
        total = sum(int(np.size(names[n])) for n in chosen)
        if not isinstance(names[chosen[0]], jax.core.Tracer):
            alive = sum(int(np.asarray(names[n]).sum()) for n in chosen)
            check(int(np.floor(density * total + 0.5)) <= alive,
                  f"target_density {density} is above the mask's density {alive / total:.4g}; pruning never "
                  "revives weights")
        groups = [(chosen, int(np.floor(density * total + 0.5)))]
    else:
        per = layer_densities({n: tuple(np.shape(names[n])) for n in chosen}, density, distribution)
        groups = [([n], int(np.floor(per[n] * np.size(names[n]) + 0.5))) for n in chosen]
    for group, n_keep in groups:
        mask = with_flat(mask, group, keep_top(flat(scores_tree, group), flat(mask, group), n_keep))
    return mask


def chosen_leaves(mask, which=None, what="pruning") -> list:
    """Names of the prunable leaves (`which`, default `masks.prunable`), in leaf order."""
    names = masks_lib.named_leaves(mask)
    which = which if which is not None else masks_lib.prunable(mask)
    chosen = [n for n, c in zip(names, jax.tree_util.tree_leaves(which)) if c]
    check(chosen, f"{what}: no prunable leaves; pass `which` naming them")
    return chosen


def flat(tree, names):
    """The leaves `names` of `tree`, raveled and concatenated (in that order;
    mixed dtypes promote, as `jnp.concatenate` does)."""
    leaves = masks_lib.named_leaves(tree)
    return jnp.concatenate([jnp.ravel(leaves[n]) for n in names])


def with_flat(mask, group, keep):
    """`mask` with the leaves `group` replaced by the flat bool `keep` (the layout of `flat`)."""
    names = masks_lib.named_leaves(mask)
    new = dict(names)
    _unflatten_into(new, group, names, keep)
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(mask), [new[n] for n in names])


def _unflatten_into(new, group, names, keep):
    offset = 0
    for n in group:
        size = int(np.size(names[n]))
        new[n] = keep[offset:offset + size].reshape(np.shape(names[n]))
        offset += size


def activate_while_pruning(params_end, params_start, mask, n_remove, which=None):
    """AP (Liu et al. 2022): remove the `n_remove` alive prunable weights that
    are negative at the end of the round (`params_end`) and changed least
    over it, ``|w_end - w_start|`` smallest, ranked globally over the prunable
    leaves (ties: earlier in flattened order). Fewer negative alive weights
    than `n_remove`: all of them go. Pure; `n_remove` may be traced."""
    _check(params_end, mask)
    chosen = chosen_leaves(mask, which, "activate_while_pruning")
    alive = flat(mask, chosen)
    w_end, w_start = flat(params_end, chosen), flat(params_start, chosen)
    candidate = alive & (w_end < 0)
    order = ranks(jnp.where(candidate, jnp.abs(w_end - w_start), jnp.inf))
    return with_flat(mask, chosen, alive & ~(candidate & (order < n_remove)))
