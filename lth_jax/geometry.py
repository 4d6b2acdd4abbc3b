"""The geometry of the last layer (Li et al. 2022, "Understanding Robustness
Lottery"): for penultimate features h and the output layer's weight column
W_c of class c,

    logit_c = ||W_c|| ||h|| cos(theta_c) + b_c,

so a prediction moves with the feature norm ||h||, the angles theta_c and the
class-weight norms. Per example: ||h||, theta_y (the angle to the true
class's weights, radians), the margin logit_y - max_{c != y} logit_c.

`features` finds h without changing the model: it intercepts the call of the
classifier layer (named ``output`` in every lth_jax model; any name can be
given) and records its input, flattened.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from lth_jax.errors import check
from lth_jax.train import mode_kwargs


def features(model, variables, x, layer: str = "output"):
    """(h, logits): the input of `layer` (N, D) and the model's outputs, in evaluation mode."""
    seen = []

    def interceptor(next_fun, args, kwargs, context):
        if context.method_name == "__call__" and "/".join(context.module.path) == layer:
            seen.append(args[0])
        return next_fun(*args, **kwargs)
    with nn.intercept_methods(interceptor):
        logits = model.apply(variables, x, **mode_kwargs(model.__call__, False))
    check(len(seen) == 1, f"geometry.features: the model calls no layer named {layer!r} exactly once "
                          f"({len(seen)} calls); pass layer= the classifier's name")
    h = seen[0]
    return jnp.reshape(h, (h.shape[0], -1)), logits


def decompose(h, kernel, bias, y) -> dict:
    """The last layer's terms per example and class: ``w_norm`` (C,), ``h_norm``
    (N,), ``cos`` (N, C), ``theta_y`` (N,), ``margin`` (N,) and ``logits`` (N,
    C) rebuilt from them (``w_norm * h_norm * cos + bias``)."""
    kernel = jnp.reshape(kernel, (-1, kernel.shape[-1]))
    w_norm = jnp.linalg.norm(kernel, axis=0)
    h_norm = jnp.linalg.norm(h, axis=1)
    dots = h @ kernel
    denom = h_norm[:, None] * w_norm[None, :]
    cos = jnp.where(denom > 0, dots / jnp.where(denom > 0, denom, 1.0), 0.0)
    logits = w_norm[None, :] * h_norm[:, None] * cos + (0.0 if bias is None else bias)
    true = jnp.take_along_axis(logits, y[:, None], axis=1)[:, 0]
    other = jnp.where(jax.nn.one_hot(y, logits.shape[1], dtype=bool), -jnp.inf, logits).max(1)
    theta_y = jnp.arccos(jnp.clip(jnp.take_along_axis(cos, y[:, None], axis=1)[:, 0], -1.0, 1.0))
    return {"w_norm": w_norm, "h_norm": h_norm, "cos": cos, "theta_y": theta_y, "margin": true - other,
            "logits": logits}


def of_model(model, variables, x, y, layer: str = "output") -> dict:
    """`decompose` of a model's classifier layer on (x, y); also ``model_logits``."""
    h, logits = features(model, variables, x, layer)
    params = variables["params"]
    for part in layer.split("/"):
        params = params[part]
    out = decompose(h, params["kernel"], params.get("bias"), y)
    out["model_logits"] = logits
    return out
