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
  the Hessian, both summed over the batches, Hg by differentiating ``g .
  stop_gradient(g)`` (double backprop; no Hessian is formed), the logits
  divided by `temperature` (200, as both references); the weights with the
  *highest* score are removed (kept: the lowest).
- SynFlow (Tanaka et al. 2020): data-free; ``|w * dR/dw|`` with ``R =
  sum(f(1))``, f the network with every parameter replaced by its absolute
  value (masked) and 1 an all-ones input of one example, in evaluation mode;
  iterated over `rounds` (100) rounds with the exponential density schedule
  ``d_k = d ** (k / rounds)``. Overflow: R grows with depth and width; the
  scores are computed in float32, or float64 when `jax_enable_x64` is on,
  and a non-finite R raises LthError (turn on x64, or use fewer rounds).

All three are pure and jit-compatible (the density and the round count are
static). `loss_fn(params, x, y) -> scalar` is the training loss of one batch;
`apply_fn(params, x) -> outputs` runs the model in evaluation mode.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lth_jax import masks as masks_lib
from lth_jax import pruning
from lth_jax.errors import LthError, check


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


def grasp_scores(loss_fn, params, mask, batches):
    """-w * (H g) at the masked parameters (loss_fn should include the
    temperature; `grasp` divides the logits by it for you)."""
    masks_lib.check(mask, params)
    p = masks_lib.apply(params, mask)
    batches = _batches(batches)
    g = jax.lax.stop_gradient(_summed_grad(loss_fn, p, batches))

    def g_dot_g(q):
        gq = _summed_grad(loss_fn, q, batches)
        return sum(jnp.vdot(a, b) for a, b in zip(jax.tree_util.tree_leaves(gq), jax.tree_util.tree_leaves(g)))
    hg = jax.grad(g_dot_g)(p)
    return jax.tree_util.tree_map(lambda h, w: -w * h, hg, p)


def synflow_scores(apply_fn, params, mask, input_shape, dtype=None):
    """|w * dR/dw|, R = sum of the outputs of the all-positive network on an
    all-ones input (one example of `input_shape`)."""
    masks_lib.check(mask, params)
    dtype = dtype or (jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)
    p = jax.tree_util.tree_map(lambda w: jnp.abs(w).astype(dtype), masks_lib.apply(params, mask))
    ones = jnp.ones((1, *input_shape), dtype)

    def r(q):
        return jnp.sum(apply_fn(q, ones))
    value, g = jax.value_and_grad(r)(p)
    return jax.tree_util.tree_map(lambda gi, wi: jnp.abs(gi * wi), g, p), value


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
    scores = grasp_scores(loss_fn, params, mask, batches)
    return _keep(jax.tree_util.tree_map(jnp.negative, scores), mask, target_density, distribution, which)


def synflow(apply_fn, params, mask, input_shape, target_density, *, rounds: int = 100, distribution="global",
            which=None):
    """SynFlow mask at `target_density` after `rounds` rounds of the
    exponential schedule (each round rescoring the network pruned so far).
    With the global distribution the rounds run as one `lax.scan`."""
    check(isinstance(rounds, int) and rounds >= 1, f"synflow: rounds must be a positive int, got {rounds!r}")
    check(0.0 < target_density <= 1.0, f"synflow: target_density must be in (0, 1], got {target_density}")
    masks_lib.check(mask, params)
    densities = [float(target_density ** (k / rounds)) for k in range(1, rounds + 1)]
    if distribution != "global":
        for d in densities:
            mask = _keep(synflow_scores(apply_fn, params, mask, input_shape)[0], mask, d, distribution, which)
        return mask
    names = masks_lib.named_leaves(mask)
    chosen = pruning.chosen_leaves(mask, which, "synflow")
    total = sum(int(np.size(names[n])) for n in chosen)
    n_keep = jnp.asarray([int(np.floor(d * total + 0.5)) for d in densities], jnp.int32)

    def one_round(m, keep_count):
        scores, value = synflow_scores(apply_fn, params, m, input_shape)
        keep = pruning.keep_top(pruning.flat(scores, chosen, jnp.float32), pruning.flat(m, chosen), keep_count)
        return pruning.with_flat(m, chosen, keep), value
    mask, values = jax.lax.scan(one_round, mask, n_keep)
    if not isinstance(values, jax.core.Tracer) and not np.all(np.isfinite(np.asarray(values))):
        raise LthError("synflow: the network's output overflowed (R is not finite); enable float64 "
                       "(jax.config.update('jax_enable_x64', True)) or use fewer rounds")
    return mask


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
