"""Generalization measures (Jiang et al. 2020, "Fantastic Generalization
Measures and Where to Find Them") as pure functions of a trained network,
its initial (or rewind-point) weights, its mask and its training data.

Conventions, as in the reference code (nitarshan/robust-generalization-measures,
``data/generation/measures.py``) except where noted:

- **Weights** are the kernels (leaves named ``kernel``, ndim >= 2), each
  seen as a matrix ``(fan_in, units)``: a Dense kernel as it is, a Conv
  kernel ``(kh, kw, c_in, c_out)`` reshaped to ``(kh * kw * c_in, c_out)``
  (so a conv's spectral norm is that of its reshaped kernel, not of the
  convolution operator). Biases and normalisation parameters are not weights.
- **Masks**: pruned weights are absent. Norms see them as 0, the parameter
  count counts only alive weights, distances from initialisation are taken
  on alive weights, and the PAC-Bayes noise touches only alive parameters.
- **BatchNorm** (`fold_batchnorm`): a BatchNorm that reads only one kernel
  layer's outputs is folded into it: the layer's weight matrix is scaled by
  ``gamma / sqrt(var + eps)`` per unit, and the BatchNorm becomes that
  per-unit affine map with the layer's bias moved into its shift (mean 0,
  variance 1 - eps), so the network computes the same function and the path
  norm squares the folded weights.
- **Margin** gamma: the (m // 10)-th smallest of ``f(x)[y] - max_{j != y}
  f(x)[j]`` over the m training examples, i.e. the 10th percentile, signed.
  The reference (``_margin`` in ``get_all_measures``) takes its absolute
  value, which is harmless there because every model it ranks was trained
  to cross-entropy 0.01 (``load_data`` in
  ``experiments/coupled_networks/common.py`` discards the others): at that
  loss fewer than 1.5% of the examples can be misclassified (each costs at
  least log 2), so the 10th percentile is positive. On a network that
  misclassifies 10% or more of its training set it is <= 0, and its absolute
  value would *flip* the margin-normalised measures (a worse fit would look
  like a wider margin). Here a margin <= 0 makes every measure that divides
  by it (``MARGIN_MEASURES``) NaN: undefined, not flipped.
- **Spectral norm**: power iteration on ``W^T W`` from a fixed start, until
  the estimate changes by less than ``tol`` (1e-6, relative) or after
  ``iterations`` (500) steps.
- **Sharpness** (`pac_bayes_sigma`): the largest sigma (bisection on [0, 2],
  15 halvings, stop once the drop is within 0.01 of its target) such that
  Gaussian noise ``N(0, sigma^2)`` on every alive parameter lowers training
  accuracy by 0.1, the accuracy averaged over `samples` (10) noise draws
  evaluated together as one vmapped ensemble. Magnitude-aware: noise of
  *variance* ``sigma'^2 w^2 + eps^2`` (eps = 1e-3). (The reference passes the
  variance where torch expects a standard deviation; here the standard
  deviation is its square root.)

`all_measures` returns every measure of Jiang et al.'s list under its
reference name (lower case) and `adjusted` applies the reference's
dataset-size adjustment (``0.5 * (v - log m)`` for the log measures,
``sqrt(v / m)`` for the others).
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from lth_jax import masks as masks_lib
from lth_jax.errors import check
from lth_jax.trees import named_leaves


# ---- the output margin ------------------------------------------------------------------------
def margins(logits, y):
    """f(x)[y] - max_{j != y} f(x)[j] per example."""
    correct = jnp.take_along_axis(logits, y[:, None], axis=1)[:, 0]
    others = jnp.where(jax.nn.one_hot(y, logits.shape[1], dtype=bool), -jnp.inf, logits)
    return correct - others.max(1)


def output_margin(logits, y):
    """The (m // 10)-th smallest margin (at least the 1st), signed: <= 0 when
    10% or more of the examples are misclassified (or tied)."""
    m = margins(logits, y)
    return jnp.sort(m)[max(m.shape[0] // 10, 1) - 1]


# ---- weight matrices ----------------------------------------------------------------------------
def kernel_names(params) -> list:
    return [n for n, v in named_leaves(params).items() if n.endswith("kernel") and np.ndim(v) >= 2]


def fold_batchnorm(params, batch_stats, flow_, eps: float = 1e-5):
    """(params, batch_stats, {kernel layer: per-unit scale}) with every
    BatchNorm that reads exactly one kernel layer rewritten as described in
    the module docstring. The network computes the same function in
    evaluation mode provided the layer's outputs reach other layers only
    through the BatchNorm (as in every lth_jax model; `flow_` cannot tell a
    direct reader from one behind the norm). The scales are what
    `weight_matrices` multiplies the kernels' columns by."""
    p, s = dict(named_leaves(params)), dict(named_leaves(batch_stats or {}))
    scales = {}
    readers = {}
    for layer, norms_ in flow_.norms.items():
        for n in norms_:
            readers.setdefault(n, []).append(layer)
    for norm, layers in readers.items():
        if f"{norm}/mean" not in s:
            continue
        check(len(layers) == 1 and len(flow_.norms[layers[0]]) == 1,
              f"cannot fold BatchNorm {norm!r}: it reads {layers}, or they feed other norms; fold it by hand")
        check(f"{norm}/scale" in p and f"{norm}/bias" in p,
              f"BatchNorm {norm!r} needs use_scale and use_bias to be folded")
        layer = layers[0]
        scale = p[f"{norm}/scale"] / jnp.sqrt(s[f"{norm}/var"] + eps)
        bias = p.get(f"{layer}/bias")
        p[f"{norm}/bias"] = p[f"{norm}/bias"] + ((0.0 if bias is None else bias) - s[f"{norm}/mean"]) * scale
        p[f"{norm}/scale"] = scale
        if bias is not None:
            p[f"{layer}/bias"] = jnp.zeros_like(bias)
        s[f"{norm}/mean"] = jnp.zeros_like(s[f"{norm}/mean"])
        s[f"{norm}/var"] = jnp.full_like(s[f"{norm}/var"], 1.0 - eps)
        scales[layer] = scale
    return _unflatten_like(params, p), _unflatten_like(batch_stats or {}, s), scales


def _unflatten_like(tree, flat: dict):
    names = list(named_leaves(tree))
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(tree), [flat[n] for n in names])


def weight_matrices(params, mask=None, scales=None) -> dict:
    """{kernel name: (fan_in, units) matrix}, pruned entries 0, columns scaled
    by `scales` ({layer: per-unit scale}, from `fold_batchnorm`)."""
    leaves = named_leaves(params if mask is None else masks_lib.apply(params, mask))
    out = {}
    for name in kernel_names(params):
        w = jnp.reshape(leaves[name], (-1, jnp.shape(leaves[name])[-1]))
        layer = name[: -len("/kernel")]
        out[name] = w * scales[layer] if scales and layer in scales else w
    return out


def spectral_norm(w, iterations: int = 500, tol: float = 1e-6):
    """Largest singular value of a matrix by power iteration on W^T W from a
    fixed random start; stops when the estimate changes by less than `tol`
    (relative) or after `iterations` steps. Jit-safe."""
    w = jnp.asarray(w, jnp.float32)
    v0 = jax.random.normal(jax.random.key(0), (w.shape[1],), jnp.float32)
    v0 = v0 / jnp.linalg.norm(v0)

    def step(carry):
        v, sigma, _, i = carry
        u = w.T @ (w @ v)
        norm = jnp.linalg.norm(u)
        v = jnp.where(norm > 0, u / jnp.where(norm > 0, norm, 1.0), v)
        return v, jnp.sqrt(norm), sigma, i + 1

    def keep_going(carry):
        _, sigma, prev, i = carry
        return (i < iterations) & ((i < 2) | (jnp.abs(sigma - prev) > tol * jnp.maximum(sigma, 1e-30)))

    return jax.lax.while_loop(keep_going, step, (v0, jnp.float32(0.0), jnp.float32(-1.0), 0))[1]


# ---- path norm ----------------------------------------------------------------------------------
def path_norm(apply_fn, params, input_shape, mask=None):
    """Sum of the outputs of the network with every parameter squared (pruned
    ones 0) on one all-ones input: the sum over input-output paths of the
    product of squared weights (Neyshabur et al. 2015). `apply_fn(params, x)`
    in evaluation mode; fold BatchNorm first (`fold_batchnorm`)."""
    squared = jax.tree_util.tree_map(jnp.square, params if mask is None else masks_lib.apply(params, mask))
    return jnp.sum(_jit(apply_fn)(squared, jnp.ones((1, *input_shape), jnp.float32)))


# ---- sharpness ----------------------------------------------------------------------------------
def perturb(key, params, mask, sigma, magnitude_eps=None):
    """params + Gaussian noise on the alive entries: std sigma, or with
    `magnitude_eps` std sqrt(sigma^2 w^2 + eps^2) (magnitude-aware)."""
    eps = 0.0 if magnitude_eps is None else magnitude_eps
    return _perturb(key, params, mask, sigma, eps, magnitude_eps is not None)


def _perturb(key, params, mask, sigma, eps, magnitude):
    """`perturb` with the magnitude-aware switch a (traceable) bool."""
    mask = masks_lib.ones_like(params) if mask is None else mask
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, len(leaves))
    out = []
    for k, w, m in zip(keys, leaves, jax.tree_util.tree_leaves(mask)):
        std = jnp.where(magnitude, jnp.sqrt(sigma ** 2 * w ** 2 + eps ** 2), sigma)
        out.append(w + jnp.where(m, std * jax.random.normal(k, jnp.shape(w), jnp.float32), 0.0).astype(w.dtype))
    return jax.tree_util.tree_unflatten(treedef, out)


@functools.lru_cache(maxsize=32)
def _mean_accuracy(accuracy_fn, samples: int):
    """One compiled program per (accuracy_fn, samples), for both noise kinds:
    the mean accuracy of `samples` perturbed copies as one vmapped ensemble."""
    def mean_accuracy(params, mask, sigma, eps, magnitude, key, data):
        copies = jax.vmap(lambda k: _perturb(k, params, mask, sigma, eps, magnitude))(jax.random.split(key, samples))
        return jnp.mean(jax.vmap(lambda q: accuracy_fn(q, *data))(copies))
    return jax.jit(mean_accuracy)


def pac_bayes_sigma(accuracy_fn, params, mask, key, *, data=(), magnitude_eps=None, target_drop: float = 0.1,
                    samples: int = 10, depth: int = 15, tolerance: float = 0.01, upper: float = 2.0, clean=None):
    """(sigma, mean perturbed accuracy, clean accuracy): the bisection of the
    module docstring. `accuracy_fn(params, *data) -> training accuracy`
    (jit-able; `data` are its array arguments, so one compiled program serves
    many networks; `clean`, if known, is the unperturbed accuracy). The
    Python loop runs at most `depth` evaluations."""
    mask = masks_lib.ones_like(params) if mask is None else mask
    clean = float(_jit(accuracy_fn)(params, *data)) if clean is None else float(clean)
    mean_accuracy = _mean_accuracy(accuracy_fn, samples)
    eps = jnp.float32(0.0 if magnitude_eps is None else magnitude_eps)
    magnitude = jnp.asarray(magnitude_eps is not None)
    lower, high = 0.0, upper
    sigma, acc = upper / 2, clean
    for i in range(depth):
        sigma = (lower + high) / 2
        acc = float(mean_accuracy(params, mask, jnp.float32(sigma), eps, magnitude, jax.random.fold_in(key, i),
                                  tuple(data)))
        drop = abs(clean - acc)
        if abs(drop - target_drop) < tolerance:
            break
        if drop > target_drop:
            high = sigma
        else:
            lower = sigma
    return sigma, acc, clean


@functools.lru_cache(maxsize=64)
def _jit(fn):
    return jax.jit(fn)


@functools.lru_cache(maxsize=32)
def _accuracy(apply_fn):
    """accuracy(params, xs, ys) over padded chunks (label -1 = padding), one program."""
    def accuracy(params, xs, ys):
        correct = jax.lax.map(lambda b: jnp.sum(jnp.argmax(apply_fn(params, b[0]), -1) == b[1]), (xs, ys))
        return jnp.sum(correct) / jnp.sum(ys >= 0)
    return accuracy


@functools.lru_cache(maxsize=32)
def _logits(apply_fn):
    """logits(params, xs) of (n_chunks, chunk, ...) blocks, one compiled program."""
    return jax.jit(lambda params, xs: jax.lax.map(lambda b: apply_fn(params, b), xs))


def chunked(x, y, chunk: int):
    """(xs, ys): x and y in (n_chunks, chunk, ...) blocks, padded (labels -1)."""
    m = int(x.shape[0])
    n_chunks = -(-m // chunk)
    pad = n_chunks * chunk - m
    xs = jnp.concatenate([jnp.asarray(x), jnp.zeros((pad, *x.shape[1:]), jnp.asarray(x).dtype)])
    ys = jnp.concatenate([jnp.asarray(y, jnp.int32), jnp.full((pad,), -1, jnp.int32)])
    return xs.reshape(n_chunks, chunk, *x.shape[1:]), ys.reshape(n_chunks, chunk)


@jax.jit
def _weight_stats(params, init_params, mask, scales, init_scales):
    """Per kernel: squared spectral and Frobenius norms, of the weights and of
    their distance from init; over all alive weights: sums of squares, count."""
    w, w0 = weight_matrices(params, mask, scales), weight_matrices(init_params, mask, init_scales)
    alive = masks_lib.named_leaves(mask)
    names = list(w)
    return {"spec": jnp.stack([spectral_norm(w[n]) ** 2 for n in names]),
            "fro": jnp.stack([jnp.sum(w[n] ** 2) for n in names]),
            "dist_fro": jnp.stack([jnp.sum((w[n] - w0[n]) ** 2) for n in names]),
            "dist_spec": jnp.stack([spectral_norm(w[n] - w0[n]) ** 2 for n in names]),
            "sq": sum(jnp.sum(w[n] ** 2) for n in names), "dist_sq": sum(jnp.sum((w[n] - w0[n]) ** 2) for n in names),
            "count": sum(jnp.sum(alive[n]) for n in names)}


@jax.jit
def _mag_log_sum(params, init_params, mask, scales, init_scales, num, mag_sigma, eps):
    w, w0 = weight_matrices(params, mask, scales), weight_matrices(init_params, mask, init_scales)
    alive = masks_lib.named_leaves(mask)
    return sum(jnp.sum(jnp.where(jnp.reshape(alive[n], w[n].shape),
                                 jnp.log(num / (eps ** 2 + mag_sigma ** 2 * (w[n] - w0[n]) ** 2)), 0.0))
               for n in w)


# ---- all of Jiang et al.'s measures ---------------------------------------------------------
def all_measures(apply_fn, params, init_params, mask, x, y, key, *, input_shape, scales=None, init_scales=None,
                 chunk: int = 1000, samples: int = 10) -> dict:
    """Every measure of Jiang et al.'s list (lower-case reference names) of the
    trained `params` against `init_params` (initialisation, or a ticket's
    rewind point), on training arrays (x, y). `apply_fn(params, x) -> logits`
    in evaluation mode, BatchNorm already folded (`fold_batchnorm`; pass its
    scales for the trained and the initial network). Also returns
    ``train_accuracy``, ``margin``, ``sigma`` and ``mag_sigma``. The compiled
    programs are cached on `apply_fn`: reuse one function for many networks."""
    mask = masks_lib.ones_like(params) if mask is None else mask
    masks_lib.check(mask, params)
    m = int(x.shape[0])
    xs, ys = chunked(x, y, min(chunk, m))
    accuracy = _accuracy(apply_fn)
    blocks = _logits(apply_fn)(params, xs)
    logits = blocks.reshape(-1, blocks.shape[-1])[:m]
    train_accuracy = float(jnp.mean(jnp.argmax(logits, -1) == jnp.asarray(y)))

    margin = float(output_margin(logits, jnp.asarray(y)))
    names = kernel_names(params)
    d = len(names)
    st = {k: np.asarray(v) for k, v in _weight_stats(params, init_params, mask, scales, init_scales).items()}
    spec, fro, dist_fro, dist_spec = st["spec"], st["fro"], st["dist_fro"], st["dist_spec"]
    sq, dist_sq = float(st["sq"]), float(st["dist_sq"])
    log_margin = math.log(margin) if margin > 0 else math.nan  # see the module docstring
    out = {"train_accuracy": train_accuracy, "margin": margin,
           "l2": math.sqrt(sq), "l2_dist": math.sqrt(dist_sq),
           "params": int(st["count"]), "inverse_margin": 1.0 / margin ** 2 if margin > 0 else math.nan}
    log_prod_spec = float(np.sum(np.log(spec)))
    log_prod_fro = float(np.sum(np.log(fro)))
    out.update(
        log_prod_of_spec=log_prod_spec,
        log_prod_of_spec_over_margin=log_prod_spec - 2 * log_margin,
        log_spec_init_main=log_prod_spec - 2 * log_margin + float(np.log(np.sum(dist_fro / spec))),
        fro_over_spec=float(np.sum(fro / spec)),
        log_spec_orig_main=log_prod_spec - 2 * log_margin + float(np.log(np.sum(fro / spec))),
        log_sum_of_spec_over_margin=math.log(d) + (log_prod_spec - 2 * log_margin) / d,
        log_sum_of_spec=math.log(d) + log_prod_spec / d,
        log_prod_of_fro=log_prod_fro,
        log_prod_of_fro_over_margin=log_prod_fro - 2 * log_margin,
        log_sum_of_fro_over_margin=math.log(d) + (log_prod_fro - 2 * log_margin) / d,
        log_sum_of_fro=math.log(d) + log_prod_fro / d,
        fro_dist=float(np.sum(dist_fro)), dist_spec_init=float(np.sum(dist_spec)),
        param_norm=float(np.sum(fro)))
    pn = float(path_norm(apply_fn, params, input_shape, mask))
    out.update(path_norm=pn, path_norm_over_margin=pn / margin ** 2 if margin > 0 else math.nan)
    k1, k2 = jax.random.split(key)
    sigma, _, _ = pac_bayes_sigma(accuracy, params, mask, k1, data=(xs, ys), samples=samples, clean=train_accuracy)
    mag_sigma, _, _ = pac_bayes_sigma(accuracy, params, mask, k2, data=(xs, ys), magnitude_eps=1e-3, samples=samples,
                                      clean=train_accuracy)
    omega, eps = int(st["count"]), 1e-3

    def bound(ref_sq):
        return float(ref_sq / (4 * sigma ** 2) + math.log(m / sigma) + 10)

    def mag_bound(ref_sq):  # 1/4 sum over the alive weights of log(num / den), den from the distance to init
        num = eps ** 2 + (mag_sigma ** 2 + 1) * ref_sq / omega
        return float(0.25 * _mag_log_sum(params, init_params, mask, scales, init_scales, num, mag_sigma, eps)
                     + math.log(m / mag_sigma) + 10)
    out.update(sigma=sigma, mag_sigma=mag_sigma, pacbayes_init=bound(dist_sq), pacbayes_orig=bound(sq),
               pacbayes_flatness=1.0 / sigma ** 2, pacbayes_mag_init=mag_bound(dist_sq),
               pacbayes_mag_orig=mag_bound(sq), pacbayes_mag_flatness=1.0 / mag_sigma ** 2)
    return out


NOT_MEASURES = ("train_accuracy", "margin", "sigma", "mag_sigma")
# NaN when the margin is <= 0 (see the module docstring)
MARGIN_MEASURES = ("inverse_margin", "log_prod_of_spec_over_margin", "log_spec_init_main", "log_spec_orig_main",
                   "log_sum_of_spec_over_margin", "log_prod_of_fro_over_margin", "log_sum_of_fro_over_margin",
                   "path_norm_over_margin")


def adjusted(values: dict, m: int) -> dict:
    """The reference's dataset-size adjustment of every measure (see the module docstring)."""
    out = {}
    for name, v in values.items():
        if name in NOT_MEASURES:
            continue
        if math.isnan(v):
            out[name] = math.nan
        else:
            out[name] = 0.5 * (v - math.log(m)) if name.startswith("log_") else math.sqrt(max(v, 0.0) / m)
    return out
