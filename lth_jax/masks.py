"""Binary mask pytrees over parameters.

A mask has the tree structure of `params` with boolean leaves, True = kept.
Leaves that are not prunable stay all True. The default prunable set is the
kernels (leaves named ``kernel`` with ndim >= 2); biases and normalisation
scales are not pruned unless asked.

Leaves are named by their '/'-joined path (``dense_0/kernel``, see
`lth_jax.trees`), the same names used by `pruning` overrides and by the
``mask.npz`` files.

Every function here that takes a mask checks it and raises one LthError
naming the first leaf that is wrong: against the parameters with `check`
(same leaves, same shapes, boolean dtype), or, where no parameters are given
(`count`, `density`, `densities`, `save`), for boolean leaves with
`check_boolean` (a parameter tree passed where a mask belongs is refused, not
counted). The checks look only at shapes and dtypes, so they also run (once,
at trace time) inside `jax.jit` and `jax.vmap`.
"""
from __future__ import annotations

from typing import Iterable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lth_jax import npz
from lth_jax.errors import LthError
from lth_jax.trees import map_named, named_leaves


def check(mask, params, what: str = "mask") -> None:
    """Raise LthError unless `mask` fits `params`: the same leaves (by name and
    tree structure), each of the parameter's shape and of dtype bool.

    Works on concrete arrays, tracers and `jax.ShapeDtypeStruct`s alike."""
    got, want = named_leaves(mask), named_leaves(params)
    missing, extra = [n for n in want if n not in got], [n for n in got if n not in want]
    if missing or extra:
        raise LthError(f"{what} does not match the parameters: missing leaves {missing[:4]}, unexpected "
                       f"leaves {extra[:4]}; make it with masks.ones_like(params) or a pruning rule")
    for name, m in got.items():
        if np.shape(m) != np.shape(want[name]):
            raise LthError(f"{what} leaf {name!r} has shape {np.shape(m)}, the parameter has "
                           f"{np.shape(want[name])}; a mask leaf must have its parameter's shape")
        dtype = getattr(m, "dtype", None) or np.asarray(m).dtype
        if dtype != jnp.bool_:
            raise LthError(f"{what} leaf {name!r} has dtype {dtype}; masks are boolean (True = kept): "
                           "convert with jax.tree_util.tree_map(lambda m: m > 0, mask) if that is what you mean")
    if jax.tree_util.tree_structure(mask) != jax.tree_util.tree_structure(params):
        raise LthError(f"{what} has the parameters' leaf names but another container structure "
                       "(dict vs FrozenDict?); build it with masks.ones_like(params)")


def check_boolean(mask, what: str = "mask") -> None:
    """Raise LthError unless every leaf of `mask` is boolean (True = kept):
    for the functions that take a mask without its parameters."""
    for name, m in named_leaves(mask).items():
        dtype = getattr(m, "dtype", None) or np.asarray(m).dtype
        if dtype != jnp.bool_:
            raise LthError(f"{what}: leaf {name!r} has dtype {dtype}, a mask has boolean leaves (True = kept); "
                           "were the parameters passed? make a mask with masks.ones_like(params) or a pruning rule")


def default_prunable(name: str, leaf) -> bool:
    return name.split("/")[-1] == "kernel" and np.ndim(leaf) >= 2


def prunable(params, include: Iterable[str] | None = None, exclude: Iterable[str] = ()):
    """Pytree of Python bools: which leaves pruning may touch.

    Args:
      params: the parameters (or a mask of them).
      include: leaf names to treat as prunable instead of the default (kernels).
      exclude: leaf names never pruned (for example ``output/kernel``).
    Raises:
      LthError: a name in `include` or `exclude` is not a leaf.
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
    """The all-kept mask of `params` (boolean leaves of the parameters' shapes)."""
    return jax.tree_util.tree_map(lambda p: jnp.ones(jnp.shape(p), dtype=bool), params)


def apply(params, mask):
    """`params` with the pruned weights set to exactly 0.0 (in each leaf's dtype).

    Pure and jit/vmap-safe. Also used on gradients and updates (any tree of the
    parameters' shapes)."""
    check(mask, params)
    return jax.tree_util.tree_map(lambda p, m: jnp.where(m, p, jnp.zeros((), p.dtype)), params, mask)


def _traced(tree) -> bool:
    return any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(tree))


def _selected(mask, which):
    leaves = jax.tree_util.tree_leaves(mask)
    chosen = jax.tree_util.tree_leaves(which)
    if len(chosen) != len(leaves):
        raise LthError(f"`which` has {len(chosen)} leaves, the mask {len(leaves)}; build it with masks.prunable")
    return [m for m, c in zip(leaves, chosen) if c]


def count(mask, which=None):
    """(kept, total) over the leaves selected by `which` (default: all leaves).

    Returns Python ints for concrete masks (for logging) and, under
    `jax.jit` / `jax.vmap`, `kept` as an int32 array (`total` is static).
    Raises LthError for a leaf that is not boolean (see `check_boolean`)."""
    check_boolean(mask, "masks.count")
    which = which if which is not None else jax.tree_util.tree_map(lambda _: True, mask)
    chosen = _selected(mask, which)
    total = sum(int(np.size(m)) for m in chosen)
    if _traced(mask):
        kept = sum((jnp.sum(m, dtype=jnp.int32) for m in chosen), jnp.zeros((), jnp.int32))
        return kept, total
    return sum(int(np.asarray(m).sum()) for m in chosen), total


def density(mask, which=None):
    """Kept share of the prunable weights (`which` defaults to the kernels).

    A Python float for a concrete mask, a float32 array under tracing."""
    check_boolean(mask, "masks.density")
    which = which if which is not None else prunable(mask)
    kept, total = count(mask, which)
    if total == 0:
        raise LthError("the mask has no prunable leaves; pass `which` naming the leaves to count")
    return kept / total


def densities(mask, which=None) -> dict:
    """Density over prunable weights, over all parameters, and per prunable leaf
    (Python floats: for logging; use `density` under jit)."""
    check_boolean(mask, "masks.densities")
    which = which if which is not None else prunable(mask)
    kept_all, total_all = count(mask)
    per_leaf = {n: float(np.asarray(m).mean()) for (n, m), c in
                zip(named_leaves(mask).items(), jax.tree_util.tree_leaves(which)) if c}
    return {"prunable": density(mask, which), "all": kept_all / total_all, "per_leaf": per_leaf}


def masked_update(tx: optax.GradientTransformation, mask, grads, opt_state, params, **extra_args):
    """`tx`'s update of the masked gradient: (updates, new opt_state).

    Pruned weights get a zero gradient, so their optimizer state (momentum,
    Adam moments) stays 0; their update may still be non-zero (weight decay),
    which `wrap` and the train step then cancel."""
    updates = apply(grads, mask)
    return optax.with_extra_args_support(tx).update(updates, opt_state, params, **extra_args)


def wrap(tx: optax.GradientTransformation, mask) -> optax.GradientTransformationExtraArgs:
    """An optax optimizer that keeps pruned weights at exactly 0.0.

    The gradient is masked before `tx` sees it (so momentum, Adam moments and
    any other state of a pruned weight stay 0), and the update of a pruned
    weight is set to ``-param``, so ``optax.apply_updates`` leaves it at 0.0
    whatever `tx` adds (decoupled weight decay included). Works with any
    optax transformation; `update` must be given `params`.

        tx = masks.wrap(optax.adamw(1e-3, weight_decay=1e-4), mask)
        opt_state = tx.init(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)

    The state is `tx`'s own state, so a wrapped optimizer can be built inside a
    vmapped function with each member's mask. `init` starts `tx` from the
    masked parameters; the first update also zeroes pruned weights that were
    not zero yet. (lth_jax's own train step uses `masked_update` and then
    re-applies the mask to the new parameters: the same result, computed in
    the order that keeps earlier runs' numbers bit for bit.)
    """
    def init(params):
        return tx.init(apply(params, mask))

    def update(updates, state, params=None, **extra_args):
        if params is None:
            raise LthError("masks.wrap(...).update needs params (tx.update(grads, state, params)): the pruned "
                           "weights' updates are set from them")
        updates, state = masked_update(tx, mask, updates, state, params, **extra_args)
        updates = jax.tree_util.tree_map(lambda u, p, m: jnp.where(m, u, (-p).astype(u.dtype)),
                                         updates, params, mask)
        return updates, state

    return optax.GradientTransformationExtraArgs(init, update)


def save(path: str, mask) -> None:
    """Write a mask as .npz (keys: '/'-joined parameter paths, boolean arrays), atomically."""
    check_boolean(mask, "masks.save")
    npz.save(path, mask, dtype=bool)


def load(path: str, like):
    """Read a mask saved by `save` into the structure of `like` (params or a mask).

    Raises LthError (one line) when the file is not a mask of these parameters."""
    return npz.load(path, like, dtype=bool, what="mask file")
