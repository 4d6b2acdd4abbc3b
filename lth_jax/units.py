"""Unit masks (hidden units of a Dense layer, channels of a Conv) and the
weight masks they stand for, found from the model's data flow.

A unit mask names the layer whose outputs it removes: ``{"enc": keep}`` with
``keep`` a bool vector over the last axis of ``enc/kernel``. Removing unit j
clears column j of that kernel and bias j, the scale and bias j of every
normalisation layer that reads the output (BatchNorm, LayerNorm, ...), and the
input rows of every layer that consumes it. Which layers consume an output is
never guessed from names: `flow` traces the model.

How `flow` traces: every layer with a kernel ("kernel layer") gets a
perturbation t_L added to its output, and its output is otherwise cut from
the gradient (`stop_gradient`), so a path from t_L reaches only the layers
that read L's output directly (through activations, pooling, reshapes,
normalisations and residual adds, but not through another kernel layer).
The Jacobian of every kernel or normalisation layer's input (projected on a
random direction) with respect to every t_L (reverse mode, one `jax.jacrev`,
so custom-VJP layers such as lth_jax's fast convolutions are fine) says which
layer reads which. It runs once, eagerly, on a small batch of the model's
input in evaluation mode; the result is plain data and can be reused.

Residual adds: when one layer's input is reached by several producers of the
same width, their outputs are added, so unit j of each is the same channel
of the sum: they form a **tied group** and share one unit mask (a mask given
for any member applies to all; masks given for several members are combined
with AND). Concatenated outputs (widths adding up to the input) are refused:
the order of the channels is not known.

Rows of a consumer's kernel: a consumer whose fan-in equals the producer's
width reads unit j at row j (Dense, or input channel j of a Conv); a fan-in
that is a multiple of it is a flattened NHWC map, where unit j is every row
with index % width == j. Anything else is refused.

    fl = units.flow(model, variables, x[:4])
    weight_mask = units.to_weights(params, {"enc": keep}, fl)   # jit-safe in the unit masks

Or without tracing, name the consumers yourself:
``units.Flow.from_consumers(params, {"enc": ["dec"], "dec": ["out"]})``.
"""
from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lth_jax import masks as masks_lib
from lth_jax import pruning
from lth_jax.errors import check
from lth_jax.train import mode_kwargs
from lth_jax.trees import named_leaves


@dataclasses.dataclass(frozen=True)
class Flow:
    """Who reads whose outputs.

    width: {kernel layer: number of output units}.
    consumers: {kernel layer: kernel layers whose input rows read its outputs}.
    norms: {kernel layer: normalisation layers (scale/bias per unit) on its outputs}.
    groups: tied producers (residual adds), each a tuple of layer names.
    concatenated: layers whose outputs reach a layer concatenated with others.
    """
    width: dict
    consumers: dict
    norms: dict
    groups: tuple
    concatenated: frozenset = frozenset()

    @classmethod
    def from_consumers(cls, params, consumers: dict) -> "Flow":
        """A Flow from {layer: [layers that read its outputs]} (kernel layers, or
        normalisation layers with a per-unit scale/bias), without tracing."""
        kernels, norms_ = _layers(params)
        for layer, readers in consumers.items():
            check(layer in kernels, f"consumers names {layer!r}, which is not a layer with a kernel; "
                                    f"layers: {', '.join(kernels)}")
            for r in readers:
                check(r in kernels or r in norms_, f"consumers[{layer!r}] names {r!r}, which is not a layer "
                                                  f"with a kernel or a normalisation layer")
        return cls(width={k: v[-1] for k, v in kernels.items()},
                   consumers={k: tuple(r for r in consumers.get(k, ()) if r in kernels) for k in kernels},
                   norms={k: tuple(r for r in consumers.get(k, ()) if r in norms_) for k in kernels},
                   groups=tuple((k,) for k in kernels))

    def group_of(self, layer: str) -> tuple:
        return next(g for g in self.groups if layer in g)


def _layers(params):
    """({kernel layer: kernel shape}, {norm layer: per-unit size}) from parameter names."""
    names = named_leaves(params)
    kernels = {n[: -len("/kernel")]: np.shape(v) for n, v in names.items()
               if n.endswith("/kernel") and np.ndim(v) >= 2}
    norms_ = {}
    for n, v in names.items():
        layer, _, leaf = n.rpartition("/")
        if leaf in ("scale", "bias") and layer not in kernels and np.ndim(v) == 1:
            norms_[layer] = np.shape(v)[0]
    return kernels, norms_


def flow(model, variables, x, *, rngs=None) -> Flow:
    """Trace which layers read which layer's outputs (see the module docstring).

    model: the flax Module (its layers are found by intercepting their calls).
    variables: its variables; x: a small batch of inputs (2-8 examples suffice).
    rngs: RNG streams the model needs in evaluation mode (always-on Dropout).
    """
    params = variables["params"]
    kernels, norms_ = _layers(params)
    check(kernels, "flow: the model has no layers with a kernel")
    watched = set(kernels) | set(norms_)
    x = jnp.asarray(x)

    def inputs_of(t):
        seen = {}

        def interceptor(next_fun, args, kwargs, context):
            if context.method_name != "__call__":
                return next_fun(*args, **kwargs)
            name = "/".join(context.module.path)
            if name in watched and args:
                seen.setdefault(name, []).append(args[0])
            out = next_fun(*args, **kwargs)
            if name in kernels and name in t:
                out = jax.lax.stop_gradient(out) + t[name].astype(out.dtype)
            return out

        with nn.intercept_methods(interceptor):
            model.apply(variables, x, rngs=rngs, **mode_kwargs(model.__call__, False))
        return seen

    shapes = jax.eval_shape(inputs_of, {k: jnp.zeros(v[-1]) for k, v in kernels.items()})
    missing = sorted(set(kernels) - set(shapes))
    check(not missing, f"flow: layers {missing[:4]} were never called by the model; is it the model that "
                       "owns these variables?")
    directions = {n: [jax.random.normal(jax.random.fold_in(jax.random.key(0), i * 97 + j), s.shape)
                      for j, s in enumerate(calls)] for i, (n, calls) in enumerate(sorted(shapes.items()))}

    def projections(t):
        seen = inputs_of(t)
        return {n: sum(jnp.sum(a * r) for a, r in zip(seen[n], directions[n])) for n in seen}

    zeros = {k: jnp.zeros(v[-1]) for k, v in kernels.items()}
    jac = jax.jit(jax.jacrev(projections))(zeros)

    def rows_read(reader, producers):
        """{producer: the reader's input rows (last axis) that its outputs reach}."""
        def per_row(t):
            seen = inputs_of(t)[reader]
            return sum(jnp.sum((a * r).reshape(-1, a.shape[-1]), axis=0) for a, r in zip(seen, directions[reader]))
        rows = jax.jacrev(per_row)(zeros)
        return {p: frozenset(np.flatnonzero(np.any(np.asarray(rows[p]) != 0, axis=1)).tolist()) for p in producers}

    readers = {}  # reader -> producers that reach it
    for reader, by_producer in jac.items():
        readers[reader] = [p for p, g in by_producer.items() if np.any(np.asarray(g) != 0)]
    width = {k: v[-1] for k, v in kernels.items()}
    parent = {k: k for k in kernels}

    def root(k):
        while parent[k] != k:
            k = parent[k]
        return k
    concatenated = set()
    for reader, producers in readers.items():
        if len(producers) < 2:
            continue
        fan_in = kernels[reader][-2] if reader in kernels else norms_[reader]
        widths = [width[p] for p in producers]
        added = all(w == widths[0] for w in widths) and fan_in % widths[0] == 0
        if added and fan_in >= len(producers) * widths[0]:  # could also be a concatenation: look at the rows
            rows = rows_read(reader, producers)
            added = all(rows[p] & rows[producers[0]] for p in producers[1:])
        if added:
            for p in producers[1:]:
                parent[root(p)] = root(producers[0])
        else:
            concatenated.update(producers)
    groups = {}
    for k in kernels:
        groups.setdefault(root(k), []).append(k)
    return Flow(width=width,
                consumers={k: tuple(r for r, ps in readers.items() if k in ps and r in kernels) for k in kernels},
                norms={k: tuple(r for r, ps in readers.items() if k in ps and r in norms_) for k in kernels},
                groups=tuple(tuple(g) for g in groups.values()), concatenated=frozenset(concatenated))


def to_weights(params, unit_masks: dict, flow_: Flow, mask=None):
    """The weight mask that removes the units of `unit_masks` ({layer: bool
    vector over its outputs}), starting from `mask` (default: all kept).

    Pure and jit-safe in the unit masks (and `mask`); `flow_` is static.
    Raises LthError for an unknown layer, a wrong length or dtype, a
    concatenated output, or a consumer whose fan-in does not fit."""
    names = named_leaves(params)
    new = dict(named_leaves(mask if mask is not None else masks_lib.ones_like(params)))
    if mask is not None:
        masks_lib.check(mask, params)
    shared = {}
    for layer, keep in unit_masks.items():
        check(layer in flow_.width, f"unit mask for {layer!r}, which is not a layer with a kernel; "
                                    f"layers: {', '.join(flow_.width)}")
        check(layer not in flow_.concatenated,
              f"the outputs of {layer!r} are concatenated with other layers' before they are read; unit masks "
              "can't be mapped through a concatenation (the channel order is unknown)")
        keep = jnp.asarray(keep)
        check(keep.shape == (flow_.width[layer],), f"unit mask for {layer!r} has shape {keep.shape}, the layer "
                                                   f"has {flow_.width[layer]} units")
        check(keep.dtype == jnp.bool_, f"unit mask for {layer!r} has dtype {keep.dtype}; unit masks are boolean")
        group = flow_.group_of(layer)
        shared[group] = keep if group not in shared else shared[group] & keep
    for group, keep in shared.items():
        width = flow_.width[group[0]]
        for layer in group:
            new[f"{layer}/kernel"] = new[f"{layer}/kernel"] & keep
            if f"{layer}/bias" in new:
                new[f"{layer}/bias"] = new[f"{layer}/bias"] & keep
        for norm in sorted({n for layer in group for n in flow_.norms.get(layer, ())}):
            for leaf in ("scale", "bias"):
                if f"{norm}/{leaf}" in new:
                    new[f"{norm}/{leaf}"] = new[f"{norm}/{leaf}"] & keep
        for reader in sorted({r for layer in group for r in flow_.consumers.get(layer, ())}):
            kernel = f"{reader}/kernel"
            fan_in = np.shape(names[kernel])[-2]
            check(fan_in % width == 0, f"cannot map the {width} units of {group[0]!r} to the {fan_in} inputs "
                                       f"of {reader!r}")
            rows = jnp.tile(keep, fan_in // width)
            new[kernel] = new[kernel] & rows.reshape((1,) * (np.ndim(names[kernel]) - 2) + (fan_in, 1))
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(params), [new[n] for n in names])


# ---- structured pruning: units ranked by their incoming weights --------------------------------
def hidden_groups(flow_: Flow) -> tuple:
    """The tied groups whose outputs another kernel layer reads: the hidden units."""
    return tuple(g for g in flow_.groups if any(flow_.consumers[layer] for layer in g))


def _per_unit(tree, flow_, group, reduce):
    leaves = named_leaves(tree)
    width = flow_.width[group[0]]
    return [reduce(jnp.reshape(leaves[f"{layer}/kernel"], (-1, width))) for layer in group]


def alive_units(mask, flow_: Flow) -> dict:
    """{first layer of each hidden group: bool vector}: a unit is alive while
    any of its incoming weights is (in any layer of its group)."""
    masks_lib.check_boolean(mask, "units.alive_units")
    return {g[0]: functools.reduce(jnp.logical_or, _per_unit(mask, flow_, g, lambda k: k.any(0)))
            for g in hidden_groups(flow_)}


def incoming_l1(params, flow_: Flow, mask=None) -> dict:
    """{first layer of each hidden group: float vector}: the L1 norm of each
    unit's incoming weights (alive ones where `mask` is given; for a Conv, its
    whole kernel slice), summed over the layers of its group."""
    kept = params if mask is None else masks_lib.apply(params, mask)
    # summed in at least float32 (bfloat16 weights), in float64 under x64: ranked in the norms' own dtype
    return {g[0]: sum(_per_unit(kept, flow_, g, lambda k: jnp.abs(k).astype(jnp.promote_types(k.dtype, jnp.float32))
                                .sum(0)))
            for g in hidden_groups(flow_)}


def magnitude(params, mask, fraction, flow_: Flow):
    """Structured magnitude pruning: every hidden group loses
    ``floor(fraction * n_alive + 0.5)`` of its n_alive alive units (keeping at
    least one), those whose incoming weights have the smallest L1 norm
    (`incoming_l1`; ties: lower index first), and the weight mask is `mask`
    minus the removed units (`to_weights`). Pure; jit-safe with `fraction` traced."""
    masks_lib.check(mask, params)
    fraction = jnp.clip(fraction, 0.0, 1.0)
    alive, norms = alive_units(mask, flow_), incoming_l1(params, flow_, mask)
    keep = {}
    for layer, a in alive.items():
        n_alive = jnp.sum(a)
        n_keep = jnp.maximum(1, n_alive - jnp.floor(fraction * n_alive + 0.5).astype(n_alive.dtype))
        keep[layer] = pruning.keep_top(norms[layer], a, n_keep)
    return to_weights(params, keep, flow_, mask)


def random_like(key, mask, flow_: Flow):
    """The random-units control: as many alive units in every hidden group as
    `mask` has, chosen uniformly at random, as a weight mask on an all-kept
    mask (not nested in `mask`). Pure and jit-safe."""
    alive = alive_units(mask, flow_)
    keys = jax.random.split(key, len(alive))
    keep = {layer: pruning.keep_top(jax.random.uniform(k, a.shape), jnp.ones_like(a), jnp.sum(a))
            for k, (layer, a) in zip(keys, alive.items())}
    return to_weights(mask, keep, flow_)
