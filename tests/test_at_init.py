"""SNIP, GraSP and SynFlow against brute-force references on tiny models, and
the layer-collapse property that sets SynFlow apart."""
import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lth_jax import at_init, masks, models, pruning
from lth_jax.train import cross_entropy


class Tiny(nn.Module):
    """3-4-2, no biases: SynFlow's R is then a sum over the 24 input-output paths."""
    @nn.compact
    def __call__(self, x):
        return nn.Dense(2, use_bias=False, name="b")(nn.relu(nn.Dense(4, use_bias=False, name="a")(x)))


def tiny():
    model = Tiny()
    params = model.init(jax.random.key(0), jnp.ones((1, 3)))["params"]
    x = jax.random.normal(jax.random.key(1), (16, 3))
    y = jnp.arange(16) % 2
    logits_fn = lambda p, xb: model.apply({"params": p}, xb)  # noqa: E731
    loss_fn = lambda p, xb, yb: jnp.mean(cross_entropy(logits_fn(p, xb), yb))  # noqa: E731
    return model, params, x, y, logits_fn, loss_fn


def flat(tree):
    return np.concatenate([np.ravel(np.asarray(v, np.float64)) for v in jax.tree_util.tree_leaves(tree)])


def test_snip_is_the_derivative_of_the_loss_by_each_connection():
    _, params, x, y, _, loss_fn = tiny()
    ones = masks.ones_like(params)
    scores = flat(at_init.snip_scores(loss_fn, params, ones, [(x[:8], y[:8]), (x[8:], y[8:])]))
    leaves, treedef = jax.tree_util.tree_flatten(params)
    sizes = [l.size for l in leaves]

    def loss_of_c(c):  # L(w * c) summed over the two batches, c = connection multipliers
        parts = np.split(c, np.cumsum(sizes)[:-1])
        p = jax.tree_util.tree_unflatten(treedef, [l * jnp.asarray(v, jnp.float32).reshape(l.shape)
                                                   for l, v in zip(leaves, parts)])
        return float(loss_fn(p, x[:8], y[:8]) + loss_fn(p, x[8:], y[8:]))
    c, h = np.ones(sum(sizes)), 1e-2
    fd = np.array([(loss_of_c(c + h * e) - loss_of_c(c - h * e)) / (2 * h) for e in np.eye(len(c))])
    np.testing.assert_allclose(scores, np.abs(fd), rtol=2e-2, atol=2e-5)


def test_grasp_matches_the_explicit_hessian():
    _, params, x, y, _, loss_fn = tiny()
    batches = [(x[:8], y[:8]), (x[8:], y[8:])]
    scores = flat(at_init.grasp_scores(loss_fn, params, masks.ones_like(params), batches))
    w, unravel = jax.flatten_util.ravel_pytree(params)
    total = lambda v: sum(loss_fn(unravel(v), xb, yb) for xb, yb in batches)  # noqa: E731
    hessian = np.asarray(jax.hessian(total)(w), np.float64)
    g = np.asarray(jax.grad(total)(w), np.float64)
    np.testing.assert_allclose(scores, -np.asarray(w) * (hessian @ g), rtol=1e-4, atol=1e-9)


def test_grasp_removes_the_highest_scores():
    _, params, x, y, logits_fn, _ = tiny()
    ones = masks.ones_like(params)
    mask = at_init.grasp(logits_fn, params, ones, [(x, y)], 0.5)
    loss_t = lambda p, xb, yb: jnp.mean(cross_entropy(logits_fn(p, xb) / 200.0, yb))  # noqa: E731
    s, m = flat(at_init.grasp_scores(loss_t, params, ones, [(x, y)])), flat(mask).astype(bool)
    assert m.sum() == 10 and s[m].max() <= s[~m].min()


def test_synflow_scores_are_path_sums():
    model, params, *_ = tiny()
    apply_fn = lambda p, xb: model.apply({"params": p}, xb)  # noqa: E731
    scores, r = at_init.synflow_scores(apply_fn, params, masks.ones_like(params), (3,))
    a, b = np.abs(np.asarray(params["a"]["kernel"])), np.abs(np.asarray(params["b"]["kernel"]))
    want_a, want_b, total = np.zeros_like(a), np.zeros_like(b), 0.0
    for i, j, k in itertools.product(range(3), range(4), range(2)):  # every input-hidden-output path
        path = a[i, j] * b[j, k]
        want_a[i, j] += path
        want_b[j, k] += path
        total += path
    np.testing.assert_allclose(float(r), total, rtol=1e-6)
    np.testing.assert_allclose(scores["a"]["kernel"], want_a, rtol=1e-6)
    np.testing.assert_allclose(scores["b"]["kernel"], want_b, rtol=1e-6)


def test_synflow_avoids_layer_collapse_where_magnitude_and_snip_do_not():
    """LeNet-300-100 at 0.1% density (Tanaka et al.'s layer collapse)."""
    model = models.get("lenet_300_100", num_classes=10)
    params = jax.jit(model.init)(jax.random.key(0), jnp.ones((1, 28, 28, 1)))["params"]
    ones = masks.ones_like(params)
    chain = ["dense_0/kernel", "dense_1/kernel", "output/kernel"]
    assert list(masks.named_leaves(params)) == ["dense_0/bias", "dense_0/kernel", "dense_1/bias", "dense_1/kernel",
                                                "output/bias", "output/kernel"]
    apply_fn = lambda p, xb: model.apply({"params": p}, xb)  # noqa: E731
    syn = jax.jit(lambda p: at_init.synflow(apply_fn, p, ones, (28, 28, 1), 0.001))(params)
    assert at_init.paths_alive(syn, chain)
    assert all(int(np.sum(masks.named_leaves(syn)[n])) > 0 for n in chain)
    mag = pruning.magnitude(params, ones, target_density=0.001)
    x = jax.random.normal(jax.random.key(2), (256, 28, 28, 1))
    y = jnp.arange(256) % 10
    loss_fn = lambda p, xb, yb: jnp.mean(cross_entropy(apply_fn(p, xb), yb))  # noqa: E731
    snip = at_init.snip(loss_fn, params, ones, [(x, y)], 0.001)
    for collapsed in (mag, snip):
        assert not at_init.paths_alive(collapsed, chain)
    assert masks.density(syn) == pytest.approx(0.001, abs=1e-5)
