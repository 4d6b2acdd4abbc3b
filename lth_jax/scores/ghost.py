"""Per-example squared gradient norms of a flax model in one forward and one
backward pass of the summed loss ("ghost norms").

How: while `apply_fn` runs, `flax.linen.intercept_methods` sees every call of
an `nn.Dense`, `nn.Conv` or (evaluation-mode) `nn.BatchNorm`. It records the
layer's input and adds a zero perturbation `e` to its output. The gradient of
the summed loss with respect to `e` is the output gradient `g` of every
example at once (examples do not interact in evaluation mode, so example n's
slice of it is the gradient of example n's own loss). The parameters are
constants of that gradient: no weight gradient is ever formed. Then, per
example n (P = positions: 1 for a Dense on (N, D), the other axes of a Dense
on (N, ..., D), the output pixels of a conv):

- Dense kernel: grad_n = sum_p a_np (x) g_np (a = the layer's input). P == 1:
  |a_n|^2 |g_n|^2. Else the cheaper of forming grad_n (batched matmul) and
  the Gram form sum_pq (a_np . a_nq)(g_np . g_nq).
- Conv kernel: the same with a_np = the input patch under output position p,
  computed the cheapest of three ways (estimated from shapes):
  Gram form with the patch Gram built from the padded input's pixel Gram
  (small spatial size, many channels: late layers); else on CPU one
  example at a time, its weight gradient as a channels-last convolution
  (lax.map; a vmap over it folds into the mapped axis); else (GPU/TPU)
  patches + batched matmul (`lax.platform_dependent` picks).
- Dense / Conv bias: |sum_p g_np|^2.
- BatchNorm (running statistics, so y = xhat * scale + bias per channel):
  scale: |sum_p g_np * xhat_np|^2, bias: |sum_p g_np|^2.

`plan()` decides at trace time (shapes only, so it is free under jit)
whether these layers cover every leaf of variables["params"] exactly once,
with the shapes the layer implies. Anything else returns a one-line reason
instead and the caller falls back to vmap(grad): another layer type with
parameters, a layer called twice, a layer inside a lifted transform
(nn.remat, nn.scan, ...), a Dense/Conv with a mask, custom dot_general or
conv function, feature groups, input dilation, circular/reflect/causal
padding, BatchNorm in training mode or not on the last axis, an input whose
leading axis is not the N examples, or an apply_fn whose layers the
interceptor can't see (a jax.jit-wrapped apply_fn replays a cached trace).

Assumption: the leading axis of every intercepted layer's input is the
example axis and examples do not interact (true of every model in
lth_jax.models in evaluation mode). A model that mixes examples (e.g.
reshapes (N, T, D) to (N*T, D) — caught only when N*T's axis isn't N — or
normalises over the batch) would get wrong fast-path norms: use
method="vmap" for such models.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util
from flax.core import tracers
from flax.linen.linear import canonicalize_padding
from jax import lax

from lth_jax.models import fast_conv

__all__ = ["plan", "sq_norms"]

_PLAIN_CONVS = (None, lax.conv_general_dilated, fast_conv.conv_general_dilated)
_PLAIN_DOTS = (None, lax.dot_general)
_BASE = object()  # key in the discovery dict: the trace apply_fn is called in


@dataclasses.dataclass(frozen=True)
class Layer:
    kind: str                 # "dense" | "conv" | "bn"
    path: tuple[str, ...]     # module path inside variables["params"]
    params: tuple[tuple[str, tuple[int, ...]], ...]  # (leaf name, shape) it owns
    out: jax.ShapeDtypeStruct
    geometry: tuple = ()      # conv: (kernel_size, strides, pads, dilation)


def _kind(module) -> str | None:
    cls = type(module)
    for kind, base in (("dense", nn.Dense), ("conv", nn.Conv), ("bn", nn.BatchNorm)):
        if isinstance(module, base) and cls.__call__ is base.__call__:
            return kind
    return None


def _arg(args, kwargs, index, name, default=None):
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def _conv_geometry(module, x):
    """(kernel_size, strides, pads, dilation) or a reason string."""
    ks = module.kernel_size
    ks = (ks,) if isinstance(ks, int) else tuple(ks)
    nd = len(ks)

    def bcast(v):
        v = 1 if v is None else v
        return (v,) * nd if isinstance(v, int) else tuple(v)

    if x.ndim != nd + 2:
        return "conv input without exactly one batch axis"
    if module.feature_group_count != 1:
        return "grouped conv"
    if module.mask is not None:
        return "conv with a mask"
    if module.conv_general_dilated_cls is not None or module.conv_general_dilated not in _PLAIN_CONVS:
        return "conv with a custom conv_general_dilated"
    if any(d != 1 for d in bcast(module.input_dilation)):
        return "conv with input dilation"
    strides, dilation = bcast(module.strides), bcast(module.kernel_dilation)
    padding = canonicalize_padding(module.padding, nd)
    if isinstance(padding, str):
        if padding not in ("SAME", "VALID"):
            return f"conv with {padding} padding"
        dilated = [(k - 1) * d + 1 for k, d in zip(ks, dilation)]
        padding = lax.padtype_to_pads(x.shape[1:-1], dilated, strides, padding)
    pads = tuple((int(lo), int(hi)) for lo, hi in padding)
    return ks, strides, pads, dilation


def _describe(kind, module, args, kwargs, out, n):
    """A Layer for this call, or a reason string why it can't be covered."""
    x = _arg(args, kwargs, 0, "x" if kind == "bn" else "inputs")
    name = "/".join(module.path)
    if not hasattr(x, "ndim") or x.ndim < 2 or x.shape[0] != n:
        return f"{name}: input's leading axis is not the {n} examples"
    geometry = ()
    d, f = x.shape[-1], out.shape[-1]
    if kind == "dense":
        if module.dot_general_cls is not None or module.dot_general not in _PLAIN_DOTS:
            return f"{name}: Dense with a custom dot_general"
        params = (("kernel", (d, f)), ("bias", (f,))) if module.use_bias else (("kernel", (d, f)),)
    elif kind == "conv":
        geometry = _conv_geometry(module, x)
        if isinstance(geometry, str):
            return f"{name}: {geometry}"
        kernel = ("kernel", tuple(geometry[0]) + (d, f))
        params = (kernel, ("bias", (f,))) if module.use_bias else (kernel,)
    else:
        ura = _arg(args, kwargs, 1, "use_running_average")
        if not (ura if ura is not None else module.use_running_average):
            return f"{name}: BatchNorm in training mode"
        axis = module.axis
        if not (isinstance(axis, int) and axis % x.ndim == x.ndim - 1):
            return f"{name}: BatchNorm over an axis other than the last"
        params = tuple((p, (d,)) for p, on in (("scale", module.use_scale), ("bias", module.use_bias)) if on)
    return Layer(kind, tuple(module.path), params, jax.ShapeDtypeStruct(out.shape, out.dtype), geometry)


class _NotSeen(Exception):
    """A planned layer was not called in the run."""


def _interceptor(n, layers, perts, captured):
    """Discovery mode (perts is None): fill `layers` (key -> list of Layer |
    reason). Run mode: capture inputs, add perturbations."""

    def intercept(next_fun, args, kwargs, ctx):
        kind = _kind(ctx.module) if ctx.method_name == "__call__" else None
        if kind is None:
            return next_fun(*args, **kwargs)
        out = next_fun(*args, **kwargs)
        key = "/".join(ctx.module.path)
        if perts is None:
            if tracers.current_trace() != layers[_BASE]:
                layer = f"{key}: runs inside an inner transform (nn.remat, nn.scan, nn.vmap, ...)"
            else:
                layer = _describe(kind, ctx.module, args, kwargs, out, n)
            layers.setdefault(key, []).append(layer)
            return out
        x = _arg(args, kwargs, 0, "x" if kind == "bn" else "inputs")
        if kind == "bn":
            m = ctx.module
            mean = m.get_variable("batch_stats", "mean")
            var = m.get_variable("batch_stats", "var")
            x = (x - mean) * lax.rsqrt(var + m.epsilon)
        captured[key] = x
        return out + perts[key]

    return intercept


def plan(apply_fn, variables, x):
    """The intercepted layers (a tuple of Layer) if they cover every leaf of
    variables["params"] exactly once, else a one-line reason (str)."""
    layers: dict = {}
    n = x.shape[0]
    # A fresh function each time: jax.eval_shape caches traces by function,
    # and a cached trace would not call the interceptor.
    def discover(v, x):
        layers[_BASE] = tracers.current_trace()
        return apply_fn(v, x)

    with nn.intercept_methods(_interceptor(n, layers, None, None)):
        jax.eval_shape(discover, variables, x)
    del layers[_BASE]
    found, reasons = [], []
    for key, calls in layers.items():
        if len(calls) != 1:
            reasons.append(f"{key}: called {len(calls)} times")
        elif isinstance(calls[0], str):
            reasons.append(calls[0])
        else:
            found.append(calls[0])
    params = variables.get("params", {}) if hasattr(variables, "get") else {}
    wanted = {"/".join(k): tuple(np.shape(v)) for k, v in traverse_util.flatten_dict(params).items()}
    covered = {"/".join(layer.path + (p,)): shape for layer in found for p, shape in layer.params}
    missing = sorted(set(wanted) - set(covered))
    if missing and not layers:
        reasons.append("no Dense/Conv/BatchNorm call seen (is apply_fn jax.jit-wrapped, or not a flax model?)")
    elif missing:
        more = f" (+{len(missing) - 3} more)" if len(missing) > 3 else ""
        reasons.append("not inside a Dense/Conv/BatchNorm call: " + ", ".join(missing[:3]) + more)
    odd = sorted(k for k in set(wanted) & set(covered) if wanted[k] != covered[k])
    if odd:  # e.g. layers under nn.scan: stacked parameters, one traced call
        reasons.append(f"{odd[0]}: parameter shape {wanted[odd[0]]} is not the layer's {covered[odd[0]]}")
    if reasons:
        return "; ".join(reasons)
    found = tuple(found)
    # Dry run (shapes only) of the real computation: it must see the same
    # calls (a jax.jit-wrapped apply_fn's cached trace would skip the
    # interceptor).
    y = jax.ShapeDtypeStruct((n,), jnp.int32)
    try:
        jax.eval_shape(lambda v, x, y: sq_norms(apply_fn, v, x, y, found), variables, x, y)
    except _NotSeen:
        return "apply_fn does not call its layers visibly on every trace (is it jax.jit-wrapped?)"
    return found


def _patches(x, geometry):
    """(N, *spatial, C) -> (N, P, prod(kernel) * C): the input patch under
    each output position (the row order need not match the kernel's: only
    norms are taken)."""
    ks, strides, pads, dilation = geometry
    x = lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0)] + [(lo, hi, 0) for lo, hi in pads] + [(0, 0, 0)])
    spatial = x.shape[1:-1]
    out = [(s - (k - 1) * d - 1) // st + 1 for s, k, d, st in zip(spatial, ks, dilation, strides)]
    pieces = []
    for offset in itertools.product(*(range(k) for k in ks)):
        start = [0] + [o * d for o, d in zip(offset, dilation)] + [0]
        limit = [x.shape[0]] + [s + (o - 1) * st + 1 for s, o, st in zip(start[1:-1], out, strides)] + [x.shape[-1]]
        pieces.append(lax.slice(x, start, limit, [1, *strides, 1]))
    p = jnp.concatenate(pieces, axis=-1) if len(pieces) > 1 else pieces[0]
    return p.reshape(x.shape[0], math.prod(out), -1)


def _conv_sq_patches(geometry, x, g):
    """Conv kernel: patches + batched matmul (or Gram form); for GPU/TPU."""
    n = x.shape[0]
    return _outer_sq(_patches(x, geometry).astype(g.dtype), g.reshape(n, -1, g.shape[-1]))


def _conv_sq_scan(geometry, x, g):
    """Conv kernel: one example at a time (lax.map), its weight gradient as
    a channels-last convolution (XLA:CPU's fast path): lhs = the example's
    input with channels as the batch (C, *H, 1), kernel = its output
    gradient (*H', 1, O), window strides = the kernel dilation, kernel
    dilation = the strides -> (C, *K, O). Several times faster on CPU than
    patches + matmul, which is memory-bound there. A vmap over this (e.g. of
    ensemble members) folds into the mapped example axis (custom_vmap), so
    it never becomes a grouped convolution."""
    ks, strides, pads, dilation = geometry
    nd = len(ks)
    dn = fast_conv.channels_last_dn(nd)
    in_spatial, out_spatial = x.shape[1:-1], g.shape[1:-1]
    x_pads = [(lo, (k - 1) * d + (ho - 1) * s + 1 - h - lo)
              for h, k, d, s, (lo, _), ho in zip(in_spatial, ks, dilation, strides, pads, out_spatial)]
    crop = [(min(lo, 0), min(hi, 0), 0) for lo, hi in x_pads]
    keep = [(max(lo, 0), max(hi, 0)) for lo, hi in x_pads]

    def one(xg):
        xn, gn = xg
        lhs = jnp.moveaxis(xn, -1, 0)[..., None].astype(gn.dtype)
        if any(c != (0, 0, 0) for c in crop):
            lhs = lax.pad(lhs, jnp.zeros((), lhs.dtype), [(0, 0, 0)] + crop + [(0, 0, 0)])
        w = lax.conv_general_dilated(lhs, gn[..., None, :], dilation, keep, rhs_dilation=strides, dimension_numbers=dn)
        return jnp.sum(jnp.square(w))

    @jax.custom_batching.custom_vmap
    def per_example(x, g):
        return lax.map(one, (x, g))

    @per_example.def_vmap
    def _fold(axis_size, in_batched, x, g):
        x, g = (a if b else jnp.broadcast_to(a, (axis_size,) + a.shape) for a, b in zip((x, g), in_batched))
        out = per_example(x.reshape((-1,) + x.shape[2:]), g.reshape((-1,) + g.shape[2:]))
        return out.reshape(axis_size, -1), True

    return per_example(x, g)


def _conv_sq_gram(geometry, x, g):
    """Conv kernel, Gram form without patches: |grad_n|^2 = sum_pq
    (a_np . a_nq)(g_np . g_nq), and the patch Gram a_np . a_nq is a sum over
    kernel offsets o of the padded input's pixel Gram S[p + o, q + o]. Cheap
    when the spatial size is small and the channels many (late layers)."""
    ks, strides, pads, dilation = geometry
    n, o = g.shape[0], g.shape[-1]
    xp = lax.pad(x.astype(g.dtype), jnp.zeros((), g.dtype), [(0, 0, 0)] + [(lo, hi, 0) for lo, hi in pads] + [(0, 0, 0)])
    sp, out = xp.shape[1:-1], g.shape[1:-1]
    xf = xp.reshape(n, -1, xp.shape[-1])
    pixel_gram = jnp.einsum("nuc,nvc->nuv", xf, xf).reshape((n,) + sp + sp)
    patch_gram = None
    for offset in itertools.product(*(range(k) for k in ks)):
        start = [k * d for k, d in zip(offset, dilation)]
        limit = [st + (h - 1) * s + 1 for st, h, s in zip(start, out, strides)]
        piece = lax.slice(pixel_gram, [0] + start + start, [n] + limit + limit, [1] + list(strides) * 2)
        patch_gram = piece if patch_gram is None else patch_gram + piece
    p = math.prod(out)
    gf = g.reshape(n, p, o)
    out_gram = jnp.einsum("npo,nqo->npq", gf, gf)
    return jnp.sum(patch_gram.reshape(n, p, p) * out_gram, axis=(1, 2))


# Cost of one element of a strided slice-add of the pixel Gram, in
# multiply-adds (measured on XLA:CPU: Conv-6's 16x16 layers are 3x slower
# in Gram form despite fewer multiply-adds; its 8x8 layers 5x faster).
_SLICE_COST = 128


def _conv_costs(geometry, x_shape, g_shape):
    """Estimated cost per example: (explicit per-example gradient, Gram form)."""
    ks, _, pads, _ = geometry
    c, o = x_shape[-1], g_shape[-1]
    p = math.prod(g_shape[1:-1])
    sp = math.prod(h + lo + hi for h, (lo, hi) in zip(x_shape[1:-1], pads))
    k = math.prod(ks)
    return p * k * c * o, sp * sp * c + p * p * o + _SLICE_COST * k * p * p


def _conv_kernel_sq(geometry, x, g):
    explicit, gram = _conv_costs(geometry, x.shape, g.shape)
    if gram < explicit:
        return _conv_sq_gram(geometry, x, g)
    return lax.platform_dependent(
        x, g,
        cpu=functools.partial(_conv_sq_scan, geometry),
        default=functools.partial(_conv_sq_patches, geometry),
    )


def _outer_sq(a, g):
    """a (N, P, D), g (N, P, F) -> (N,): |sum_p a_p (x) g_p|_F^2."""
    n, p, d = a.shape
    f = g.shape[-1]
    if p == 1:
        return jnp.sum(jnp.square(a), axis=(1, 2)) * jnp.sum(jnp.square(g), axis=(1, 2))
    if p * (d + f) < d * f:  # Gram form: P^2 (D + F) vs P D F multiply-adds
        ga = jnp.einsum("npd,nqd->npq", a, a)
        gg = jnp.einsum("npf,nqf->npq", g, g)
        return jnp.sum(ga * gg, axis=(1, 2))
    w = jnp.einsum("npd,npf->ndf", a, g)
    return jnp.sum(jnp.square(w), axis=(1, 2))


def _layer_sq(layer, x, g):
    x, g = x.astype(jnp.float32), g.astype(jnp.float32)  # low-precision models: norms in f32
    n = g.shape[0]
    total = jnp.zeros((n,), jnp.float32)
    c = g.shape[-1]
    gp = g.reshape(n, -1, c)
    names = {p for p, _ in layer.params}
    if "bias" in names:
        total += jnp.sum(jnp.square(jnp.sum(gp, axis=1)), axis=1)
    if layer.kind == "bn":
        if "scale" in names:
            s = jnp.sum(gp * x.reshape(n, -1, c), axis=1)
            total += jnp.sum(jnp.square(s), axis=1)
        return total
    if layer.kind == "conv":
        return total + _conv_kernel_sq(layer.geometry, x, g)
    return total + _outer_sq(x.reshape(n, -1, x.shape[-1]), gp)


def sq_norms(apply_fn, variables, x, y, layers):
    """(N,) squared norm of each example's cross-entropy gradient over all
    parameters; `layers` from plan()."""
    n = x.shape[0]
    perts = {"/".join(l.path): jnp.zeros(l.out.shape, l.out.dtype) for l in layers}

    def loss(perts):
        captured: dict = {}
        with nn.intercept_methods(_interceptor(n, None, perts, captured)):
            logits = apply_fn(variables, x)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        return jnp.sum(ce), captured

    grads, captured = jax.grad(loss, has_aux=True)(perts)
    if set(captured) != set(perts):
        raise _NotSeen()
    total = jnp.zeros((n,), jnp.float32)
    for layer in layers:
        key = "/".join(layer.path)
        total += _layer_sq(layer, captured[key], grads[key])
    return total
