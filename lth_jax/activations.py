"""Dead neurons: how many ReLU outputs of a network are exactly zero.

The ReLUs are found in the model's own computation, with no change to the
model: `apply_fn` is traced to a jaxpr and evaluated by a small interpreter
that records the output of every ReLU it meets, in call order:
``jax.nn.relu`` / ``flax.linen.relu`` (a custom-JVP call of ``max(x, 0)``) and
a bare ``jnp.maximum(x, 0)``, also inside nested ``jax.jit`` calls. Each
recorded output is one *layer* of units: its last axis indexes the units
(hidden units of a Dense layer, channels of a Conv), the other axes are the
examples and, for convolutions, the positions.

Definitions, per layer and over the network:

- **dynamic dead-neuron rate** (DNR): the share of (example, position, unit)
  entries whose ReLU output is exactly 0.0;
- **static dead rate**: the share of units whose output is 0.0 for every
  example (and position) of the evaluation set: units that never fire.

Over the network, both are pooled over all layers' entries / units. In the
lth_jax ResNets the ReLUs seen are the stem's, the one inside each block
(after ``bn_0``) and the one after each residual add: 1 + 2 x blocks.
"""
from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore


def _is_zero(v) -> bool:
    return isinstance(v, jcore.Literal) and np.ndim(v.val) == 0 and float(v.val) == 0.0


def _is_relu(eqn) -> bool:
    if eqn.primitive.name == "max" and any(_is_zero(v) for v in eqn.invars):
        return True
    inner = None
    if eqn.primitive.name == "custom_jvp_call":  # jax.nn.relu: custom_jvp_call(jit[name=relu](max(x, 0)))
        inner = eqn.params["call_jaxpr"].jaxpr
    elif eqn.primitive.name in ("jit", "pjit") and eqn.params.get("name") == "relu":
        inner = eqn.params["jaxpr"].jaxpr
    return inner is not None and len(inner.eqns) == 1 and _is_relu(inner.eqns[0])


def _evaluate(jaxpr, consts, args, record):
    env = {}

    def read(v):
        return v.val if isinstance(v, jcore.Literal) else env[v]
    for var, val in zip(jaxpr.constvars, consts):
        env[var] = val
    for var, val in zip(jaxpr.invars, args):
        env[var] = val
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        if eqn.primitive.name in ("jit", "pjit") and not _is_relu(eqn):
            closed = eqn.params["jaxpr"]
            outvals = _evaluate(closed.jaxpr, closed.consts, invals, record)
        else:
            bound = eqn.primitive.get_bind_params(eqn.params)  # (subfuns, params) before jax 0.7
            subfuns, params = bound if isinstance(bound, tuple) else ((), bound)
            with getattr(getattr(eqn, "ctx", None), "manager", contextlib.nullcontext()):
                outvals = eqn.primitive.bind(*subfuns, *invals, **params)
            if not eqn.primitive.multiple_results:
                outvals = [outvals]
            if _is_relu(eqn):
                record.append(outvals[0])
        for var, val in zip(eqn.outvars, outvals):
            env[var] = val
    return [read(v) for v in jaxpr.outvars]


def relu_outputs(apply_fn, variables, x) -> list:
    """The output of every ReLU that ``apply_fn(variables, x)`` computes, in call order."""
    closed = jax.make_jaxpr(apply_fn)(variables, x)
    record = []
    _evaluate(closed.jaxpr, closed.consts, jax.tree_util.tree_leaves((variables, x)), record)
    return record


def dead_rates(apply_fn, variables, x) -> dict:
    """Dead-neuron rates of the ReLUs of ``apply_fn(variables, x)`` (evaluation
    mode is the caller's choice: pass an apply_fn with ``train=False``).

    Returns {"dynamic": [per layer], "static": [per layer], "units": [per
    layer], "dynamic_all": float, "static_all": float} as arrays (jit-safe);
    layers in call order (see the module docstring)."""
    outs = relu_outputs(apply_fn, variables, x)
    dynamic, static, units, zeros, entries, dead_units = [], [], [], 0, 0, 0
    for out in outs:
        is_zero = out == 0
        per_unit_dead = jnp.all(is_zero.reshape(-1, out.shape[-1]), axis=0)
        dynamic.append(jnp.mean(is_zero))
        static.append(jnp.mean(per_unit_dead))
        units.append(out.shape[-1])
        zeros = zeros + jnp.sum(is_zero)
        entries += out.size
        dead_units = dead_units + jnp.sum(per_unit_dead)
    total_units = sum(units)
    return {"dynamic": dynamic, "static": static, "units": units,
            "dynamic_all": zeros / max(entries, 1), "static_all": dead_units / max(total_units, 1)}
