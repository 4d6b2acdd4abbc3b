"""Pruning at initialisation: SNIP, GraSP and SynFlow, the baselines that
Frankle et al. 2021 ("Pruning Neural Networks at Initialization: Why Are We
Missing the Mark?") compare lottery tickets with.

Each method has a score function (a pytree of the parameters' shapes) and a
rule that returns a mask at `target_density`, keeping the highest-scoring
alive weights of the prunable leaves (kernels by default) through
`pruning.magnitude`'s exact, tie-breaking top-k (``floor(d * n + 0.5)``
kept, global over layers unless `distribution` says "uniform" or "erk").
Definitions, as in the papers and the Synaptic-Flow reference code:

- SNIP (Lee et al. 2019): ``|g * w|``, g the gradient of the loss summed
  over the given batches, at the masked parameters.
- GraSP (Wang et al. 2020): ``-w * (H g)`` with g the loss gradient and H
  the Hessian, both summed over the batches and both taken with respect to
  the prunable weights only (`which`, default the kernels; biases and
  normalisation parameters held fixed, so Hg has no bias block H_wb g_b), as
  both reference codes do (alecwangcq/GraSP differentiates by the Conv and
  Linear weights, ganguli-lab/Synaptic-Flow by its masked parameters). Hg by
  differentiating ``g . stop_gradient(g)`` (double backprop; no Hessian is
  formed), the logits divided by `temperature` (200, as both references);
  the weights with the *highest* score are removed (kept: the lowest).
- SynFlow (Tanaka et al. 2020): data-free; ``|w * dR/dw|`` with ``R =
  sum(f(1))``, f the network with every parameter replaced by its absolute
  value (masked; biases included, as the reference code does) and 1 an
  all-ones input of one example, in evaluation mode (with the batch
  statistics `apply_fn` holds); iterated over `rounds` (100) rounds with the
  exponential density schedule ``d_k = d ** (k / rounds)``. Range: R grows
  exponentially with depth (ResNet-56: about 1e54, past float32's 3.4e38).
  Each round therefore scales the input and every leaf named ``bias`` by
  2**-h (the forward values, R included, scale alike) and differentiates
  2**-h R, with 2**h ~ sqrt(R) (the previous round's R; the first round
  measures it): the forward values and the gradients reach about sqrt(R)
  instead of R. For a network positively homogeneous in its input and biases
  (ReLU, Dense, Conv, pooling, skip connections, BatchNorm in evaluation
  mode with zero running means: every zoo model at initialisation) this
  multiplies every score by the same 2**-2h, exactly (powers of two scale
  without rounding), so the ranking is that of the unscaled scores; scaling
  each layer's weights alone would not be exact across skip connections. The
  scores are computed in float32, or float64 when `jax_enable_x64` is on,
  and ranked in that dtype; R beyond the rescaling's reach (about 1e74 in
  float32, 1e614 in float64) or not finite, or R = 0 before any pruning (no
  input-output path), raises LthError.

All three are pure and jit-compatible (the density and the round count are
static); `synflow` compiles its rounds itself, and raises on R out of range
only when called outside `jax.jit` (inside, its values are not known yet).
`loss_fn(params, x, y) -> scalar` is the training loss of one batch;
`apply_fn(params, x) -> outputs` runs the model in evaluation mode.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from lth_jax import masks as masks_lib
from lth_jax import pruning
from lth_jax.errors import LthError, check
from lth_jax.trees import map_named


def _batches(batches):
    check(isinstance(batches, (list, tuple)) and batches and all(len(b) == 2 for b in batches),
          "batches must be a non-empty list of (x, y) pairs")
    return batches


def _summed_grad(loss_fn, params, batches):
    grads = [jax.grad(loss_fn)(params, x, y) for x, y in batches]
    return jax.tree_util.tree_map(lambda *g: sum(g), *grads)


def snip_scores(loss_fn, params, mask, batches):
    """|g * w| at the masked parameters, g summed over `batches`."""
    masks_lib.check(mask, params)
    p = masks_lib.apply(params, mask)
    g = _summed_grad(loss_fn, p, _batches(batches))
    return jax.tree_util.tree_map(lambda gi, wi: jnp.abs(gi * wi), g, p)


def grasp_scores(loss_fn, params, mask, batches, which=None):
    """-w * (H g) at the masked parameters for the prunable leaves (`which`,
    default the kernels), g and Hg taken with respect to those leaves only
    (the others held fixed, as both reference codes do); 0 for the other
    leaves. loss_fn should include the temperature (`grasp` divides the
    logits by it for you)."""
    masks_lib.check(mask, params)
    chosen = set(pruning.chosen_leaves(mask, which, "grasp"))
    p = masks_lib.apply(params, mask)
    batches = _batches(batches)
    leaves, treedef = jax.tree_util.tree_flatten(p)
    index = [i for i, name in enumerate(masks_lib.named_leaves(p)) if name in chosen]

    def grad_w(ws):  # the loss gradient with respect to the prunable leaves, summed over the batches
        def loss_w(ws, x, y):
            full = list(leaves)
            for i, w in zip(index, ws):
                full[i] = w
            return loss_fn(jax.tree_util.tree_unflatten(treedef, full), x, y)
        return [sum(gs) for gs in zip(*(jax.grad(loss_w)(ws, x, y) for x, y in batches))]
    w = [leaves[i] for i in index]
    g = jax.lax.stop_gradient(grad_w(w))
    hg = jax.grad(lambda ws: sum(jnp.vdot(a, b) for a, b in zip(grad_w(ws), g)))(w)
    scores = [jnp.zeros_like(leaf) for leaf in leaves]
    for i, wi, h in zip(index, w, hg):
        scores[i] = -wi * h
    return jax.tree_util.tree_unflatten(treedef, scores)


def synflow_scores(apply_fn, params, mask, input_shape, dtype=None):
    """(scores, r, exponent): ``scores * 2**exponent`` is |w * dR/dw| and
    ``r * 2**exponent`` is R, the sum of the outputs of the all-positive
    network on an all-ones input (one example of `input_shape`); the power
    of two keeps r near 1 (see the module docstring)."""
    masks_lib.check(mask, params)
    p = _positive(params, mask, _dtype(dtype))
    return _scaled_scores(apply_fn, p, input_shape, _log2_r(apply_fn, p, input_shape))


def _dtype(dtype):
    return dtype or (jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)


def _positive(params, mask, dtype):
    return jax.tree_util.tree_map(lambda w: jnp.abs(w).astype(dtype), masks_lib.apply(params, mask))


def _r(apply_fn, q, input_shape, log2_c):
    """R of the all-positive network `q` on an input of 2**log2_c everywhere."""
    dtype = jax.tree_util.tree_leaves(q)[0].dtype
    return jnp.sum(apply_fn(q, jnp.full((1, *input_shape), jnp.exp2(jnp.asarray(log2_c, dtype)), dtype)))


def _scale_biases(p, log2_c):
    """`p` with every leaf named "bias" multiplied by 2**log2_c: with the input
    scaled alike, a network positively homogeneous in its input and biases
    (ReLU, Dense, Conv, pooling, skips, BatchNorm in evaluation mode with zero
    running means) has every activation, and R, scaled by the same power of two."""
    def scale(name, w):
        return w * jnp.exp2(jnp.asarray(log2_c, w.dtype)) if name.split("/")[-1] == "bias" else w
    return map_named(scale, p)


def _log2_r(apply_fn, p, input_shape):
    """log2 R of the all-positive network `p`, from R with the input and
    biases as they are, else scaled down, else up, by about the dtype's
    exponent range (one vmapped forward pass); NaN where none is finite and
    positive (R beyond the range even so, or R = 0)."""
    shift = jnp.finfo(jax.tree_util.tree_leaves(p)[0].dtype).maxexp - 8
    exps = jnp.array([0.0, -shift, shift])
    values = jax.vmap(lambda e: _r(apply_fn, _scale_biases(p, e), input_shape, e))(exps)
    ok = jnp.isfinite(values) & (values > 0)
    return jnp.where(ok.any(), (jnp.log2(values) - exps)[jnp.argmax(ok)], jnp.nan)


def _scaled_scores(apply_fn, p, input_shape, log2_r):
    """Scores and R of `p` divided by 2**exponent, exponent = 2 * half with
    2**half ~ sqrt(R): the input and biases are scaled by 2**-half (the forward
    values stay below ~sqrt(R)) and so is R (the gradients flowing back do too).
    Powers of two scale exactly, so the ranking is the unscaled scores'."""
    half = jnp.where(jnp.isfinite(log2_r), jnp.round(log2_r / 2), 0.0)
    q = _scale_biases(p, -half)
    value, g = jax.value_and_grad(lambda q: _r(apply_fn, q, input_shape, -half) * jnp.exp2(-half))(q)
    # |q * dR/dq| with q holding the scaled biases: every score scales by the same 2**-(2 * half)
    return jax.tree_util.tree_map(lambda gi, qi: jnp.abs(gi * qi), g, q), value, 2 * half


def _keep(scores, mask, target_density, distribution, which):
    return pruning.to_density(scores, mask, target_density, distribution, which)


def snip(loss_fn, params, mask, batches, target_density, *, distribution="global", which=None):
    """SNIP mask at `target_density` (see the module docstring)."""
    return _keep(snip_scores(loss_fn, params, mask, batches), mask, target_density, distribution, which)


def grasp(logits_fn, params, mask, batches, target_density, *, temperature=200.0, distribution="global",
          which=None, loss=None):
    """GraSP mask at `target_density`: the weights with the highest -w * Hg are removed.

    logits_fn(params, x) -> logits; the loss is the cross-entropy of
    logits / temperature (or `loss(logits, y) -> scalar` if given)."""
    from lth_jax.train import cross_entropy
    loss = loss or (lambda logits, y: jnp.mean(cross_entropy(logits, y)))

    def loss_fn(p, x, y):
        return loss(logits_fn(p, x) / temperature, y)
    scores = grasp_scores(loss_fn, params, mask, batches, which)
    return _keep(jax.tree_util.tree_map(jnp.negative, scores), mask, target_density, distribution, which)


def synflow(apply_fn, params, mask, input_shape, target_density, *, rounds: int = 100, distribution="global",
            which=None):
    """SynFlow mask at `target_density` after `rounds` rounds of the
    exponential schedule (each round rescoring the network pruned so far).
    Compiled here (the global distribution's rounds as one `lax.scan`); R out
    of range is an LthError unless called inside an outer `jax.jit`."""
    check(isinstance(rounds, int) and rounds >= 1, f"synflow: rounds must be a positive int, got {rounds!r}")
    check(0.0 < target_density <= 1.0, f"synflow: target_density must be in (0, 1], got {target_density}")
    masks_lib.check(mask, params)
    densities = [float(target_density ** (k / rounds)) for k in range(1, rounds + 1)]
    dtype, input_shape = jnp.dtype(_dtype(None)), tuple(input_shape)
    if distribution == "global":
        names = masks_lib.named_leaves(mask)
        chosen = tuple(pruning.chosen_leaves(mask, which, "synflow"))
        total = sum(int(np.size(names[n])) for n in chosen)
        n_keep = jnp.asarray([int(np.floor(d * total + 0.5)) for d in densities], jnp.int32)
        rounds_fn = jax.jit(functools.partial(_global_rounds, apply_fn, input_shape, dtype, chosen))
        mask, values = rounds_fn(params, mask, n_keep)
    else:
        first = jax.jit(lambda p, m: _log2_r(apply_fn, _positive(p, m, dtype), input_shape))
        round_fn = jax.jit(functools.partial(_round, apply_fn, input_shape, dtype))
        log2_r, values = first(params, mask), []
        for d in densities:
            scores, value, log2_r = round_fn(params, mask, log2_r)
            mask = _keep(scores, mask, d, distribution, which)
            values.append(value)
        values = jnp.stack(values)
    if not isinstance(values, jax.core.Tracer):
        _check_r(np.asarray(values), dtype)
    return mask


def _check_r(values, dtype) -> None:
    """One LthError where a round's (rescaled) R is not finite, or the first
    round's is 0: the scores would be inf/NaN or all 0, ranked by position.
    (A later round's R of 0 is SynFlow's own layer collapse, left to the caller.)"""
    def reach(d):  # log10 of what `_log2_r`'s probes can measure
        return int(np.log10(2.0) * (2 * jnp.finfo(d).maxexp - 8))

    def further(sign=""):
        return "" if dtype.itemsize >= 8 else \
            f"; float64 reaches about 1e{sign}{reach(np.float64)} (jax.config.update('jax_enable_x64', True))"
    if not np.all(np.isfinite(values)):
        raise LthError(f"synflow: R (the summed output of the all-positive network) is not finite in {dtype.name} "
                       f"even rescaled by powers of two: R is beyond about 1e{reach(dtype)}, or the network gives "
                       f"inf/NaN{further()}")
    if not values[0] > 0:
        raise LthError(f"synflow: R (the summed output of the all-positive network) is 0: no input-output path "
                       f"(the mask or a zero layer cuts them all), or R is below about 1e-{reach(dtype)}{further('-')}")


def _round(apply_fn, input_shape, dtype, params, mask, log2_r):
    """One round's (scaled) scores, their R, and log2 R for the next round's
    scale (R only falls as weights go, so the forward values stay in range)."""
    scores, value, exponent = _scaled_scores(apply_fn, _positive(params, mask, dtype), input_shape, log2_r)
    new = jnp.log2(value) + exponent
    return scores, value, jnp.where(jnp.isfinite(new), new, log2_r)


def _global_rounds(apply_fn, input_shape, dtype, chosen, params, mask, n_keep):
    def one_round(carry, keep_count):
        m, log2_r = carry
        scores, value, log2_r = _round(apply_fn, input_shape, dtype, params, m, log2_r)
        keep = pruning.keep_top(pruning.flat(scores, chosen), pruning.flat(m, chosen), keep_count)
        return (pruning.with_flat(m, chosen, keep), log2_r), value
    log2_r = _log2_r(apply_fn, _positive(params, mask, dtype), input_shape)
    (mask, _), values = jax.lax.scan(one_round, (mask, log2_r), n_keep)
    return mask, values


def paths_alive(mask, names: list) -> bool:
    """Whether a chain of dense layers (kernel names in data-flow order, e.g.
    ["dense_0/kernel", "dense_1/kernel", "output/kernel"]) keeps at least one
    input-to-output path: the boolean product of their masks is non-zero
    (no layer collapse)."""
    leaves = masks_lib.named_leaves(mask)
    reach = np.asarray(leaves[names[0]], bool)
    for name in names[1:]:
        reach = (reach.astype(np.int64) @ np.asarray(leaves[name], np.int64)) > 0
    return bool(reach.any())
