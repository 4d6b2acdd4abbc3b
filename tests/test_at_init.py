"""SNIP, GraSP and SynFlow against brute-force references on tiny models, the
layer-collapse property that sets SynFlow apart, and SynFlow's masks on deep
networks (R beyond float32) against float64 references, in float32 and float64."""
import contextlib
import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lth_jax import at_init, masks, models, pruning
from lth_jax.errors import LthError
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


@contextlib.contextmanager
def x64(on: bool):
    """jax_enable_x64 set to `on` inside, restored after (jax.enable_x64 is
    newer than the oldest jax supported)."""
    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", on)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", before)


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


def test_grasp_differentiates_by_the_kernels_only():
    """An MLP with biases: -w * (H g) with g and H taken with respect to the
    kernels only, biases held fixed (alecwangcq/GraSP, ganguli-lab/Synaptic-Flow),
    against a float64 Hessian of a hand-written forward; the biases score 0."""
    model = models.get("mlp", num_classes=3, widths=(6,))
    params = model.init(jax.random.key(0), jnp.ones((1, 5)))["params"]
    params["dense_0"]["bias"] = 0.5 * jax.random.normal(jax.random.key(3), (6,))
    x, y = jax.random.normal(jax.random.key(1), (16, 5)), jnp.arange(16) % 3
    loss_fn = lambda p, xb, yb: jnp.mean(cross_entropy(model.apply({"params": p}, xb), yb))  # noqa: E731
    batches = [(x[:8], y[:8]), (x[8:], y[8:])]
    scores = jax.jit(lambda p: at_init.grasp_scores(loss_fn, p, masks.ones_like(p), batches))(params)
    with x64(True):
        f64 = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
        shapes = [(5, 6), (6, 3)]

        def total(kernels):  # the loss summed over the batches, biases fixed
            w0, w1 = kernels[:30].reshape(shapes[0]), kernels[30:].reshape(shapes[1])
            out = 0.0
            for xb, yb in batches:
                h = jax.nn.relu(jnp.asarray(xb, jnp.float64) @ w0 + f64["dense_0"]["bias"])
                logp = jax.nn.log_softmax(h @ w1 + f64["output"]["bias"])
                out += -jnp.mean(logp[jnp.arange(len(yb)), yb])
            return out
        w = jnp.concatenate([jnp.ravel(f64["dense_0"]["kernel"]), jnp.ravel(f64["output"]["kernel"])])
        want = -np.asarray(w) * (np.asarray(jax.jit(jax.hessian(total))(w)) @ np.asarray(jax.jit(jax.grad(total))(w)))
    got = np.concatenate([np.ravel(scores["dense_0"]["kernel"]), np.ravel(scores["output"]["kernel"])])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * np.abs(want).max())
    assert not np.any(scores["dense_0"]["bias"]) and not np.any(scores["output"]["bias"])


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
    scores, r, exponent = at_init.synflow_scores(apply_fn, params, masks.ones_like(params), (3,))
    scores = jax.tree_util.tree_map(lambda s: s * 2.0 ** exponent, scores)
    r = r * 2.0 ** exponent
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


def top_k_rounds(score_fn, weights, chosen, density, rounds, uniform=False):
    """Reference SynFlow rounds in float64 numpy: `score_fn(masked weights)` ->
    {name: scores}; keeps the highest alive scores of the exponential
    schedule's counts (over all `chosen` leaves, or per leaf if `uniform`),
    ties to the later position (the library's rule)."""
    mask = {n: np.ones(np.shape(w), bool) for n, w in weights.items()}
    for k in range(1, rounds + 1):
        scores = score_fn({n: w * mask[n] for n, w in weights.items()})
        for group in ([[n] for n in chosen] if uniform else [chosen]):
            flat_scores = np.concatenate([np.ravel(scores[n]) for n in group])
            alive = np.concatenate([np.ravel(mask[n]) for n in group])
            total = alive.size
            n_keep = int(np.floor(density ** (k / rounds) * total + 0.5))
            keep = np.zeros(total, bool)
            keep[np.argsort(np.where(alive, flat_scores, -np.inf), kind="stable")[total - n_keep:]] = True
            parts = np.split(keep, np.cumsum([mask[n].size for n in group])[:-1])
            mask.update({n: part.reshape(mask[n].shape) for n, part in zip(group, parts)})
    return np.concatenate([np.ravel(mask[n]) for n in chosen])


def synflow_in(on, apply_fn, params, input_shape, rounds, distribution="global"):
    """The library's SynFlow mask at 10% (flat over the kernels), with x64 on
    or off inside a context (restored on exit, so nothing leaks into other tests)."""
    with x64(on):
        mask = at_init.synflow(apply_fn, params, masks.ones_like(params), input_shape, 0.1, rounds=rounds,
                               distribution=distribution)
    leaves = masks.named_leaves(mask)
    chosen = pruning.chosen_leaves(mask)
    assert all(np.asarray(leaves[n]).any() for n in chosen), "a layer was emptied"
    return np.concatenate([np.ravel(np.asarray(leaves[n])) for n in chosen])


def test_synflow_deep_mlp_with_biases_is_exact_in_float32_and_float64():
    """22 hidden layers of 24, kernels and (non-zero) biases large enough that
    R ~ 1e41 is beyond float32: the mask in float32 and in float64 (and the
    uniform distribution's in float32) is the top-k of float64 scores computed
    here by hand (forward and backward of the positive net)."""
    model = models.get("mlp", num_classes=10, widths=(24,) * 22)
    params = model.init(jax.random.key(0), jnp.ones((1, 24)))["params"]
    keys = iter(jax.random.split(jax.random.key(1), len(params)))
    params = {layer: {"kernel": 16.0 * p["kernel"], "bias": jax.random.normal(next(keys), p["bias"].shape)}
              for layer, p in params.items()}
    layers = [f"dense_{i}" for i in range(22)] + ["output"]
    weights = {f"{layer}/{leaf}": np.abs(np.asarray(params[layer][leaf], np.float64))
               for layer in layers for leaf in ("kernel", "bias")}

    r_values = []

    def scores(w):  # the positive network on ones: every ReLU passes its (positive) input
        acts = [np.ones(24)]
        for layer in layers:
            acts.append(acts[-1] @ w[f"{layer}/kernel"] + w[f"{layer}/bias"])
        r_values.append(acts[-1].sum())
        back, out = np.ones(10), {}
        for layer, a in zip(reversed(layers), reversed(acts[:-1])):
            out[f"{layer}/kernel"] = w[f"{layer}/kernel"] * np.outer(a, back)
            back = w[f"{layer}/kernel"] @ back
        return out
    chosen = [f"{layer}/kernel" for layer in sorted(layers)]  # the library's leaf order
    want = top_k_rounds(scores, weights, chosen, 0.1, 3)
    assert 1e40 < r_values[0] < 1e300  # R of the dense network
    apply_fn = lambda p, xb: model.apply({"params": p}, xb)  # noqa: E731
    for on in (False, True):
        assert np.array_equal(synflow_in(on, apply_fn, params, (24,), 3), want)
    per_layer = top_k_rounds(scores, weights, chosen, 0.1, 3, uniform=True)
    assert np.array_equal(synflow_in(False, apply_fn, params, (24,), 3, "uniform"), per_layer)


def test_synflow_resnet56_is_exact_in_float32_and_float64(quick_compile):
    """The zoo's ResNet-56 (identity skips, BatchNorm in evaluation mode; on
    8x8 inputs and with the plain conv gradient, to compile faster): R ~ 1e46,
    beyond float32. Two rounds to 10% in float32 and in float64 keep every
    layer and equal the top-k of float64 scores from jax.grad of R itself."""
    model = models.get("resnet56", num_classes=10, fast_conv=False)
    variables = jax.jit(model.init)(jax.random.key(0), jnp.ones((1, 8, 8, 3)))
    params = variables["params"]
    apply_fn = lambda p, xb: model.apply({"params": p, "batch_stats": variables["batch_stats"]}, xb)  # noqa: E731
    names = list(masks.named_leaves(params))
    r_values = []

    def scores(w):
        with x64(True):
            q = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(params), [jnp.asarray(w[n]) for n in names])
            r, g = grad_r(q)
        r_values.append(float(r))
        return {n: np.abs(np.asarray(gi) * w[n]) for n, gi in masks.named_leaves(g).items()}
    with x64(True):
        grad_r = jax.jit(jax.value_and_grad(lambda q: jnp.sum(apply_fn(q, jnp.ones((1, 8, 8, 3), jnp.float64)))))
    weights = {n: np.abs(np.asarray(w, np.float64)) for n, w in masks.named_leaves(params).items()}
    want = top_k_rounds(scores, weights, pruning.chosen_leaves(masks.ones_like(params)), 0.1, 2)
    assert 1e40 < r_values[0] < 1e300
    for on in (False, True):
        assert np.array_equal(synflow_in(on, apply_fn, params, (8, 8, 3), 2), want)


def test_synflow_beyond_float32_even_rescaled_is_one_clear_error():
    """Kernels 1e20 times their initialisation: R ~ 1e100, past what float32
    holds even rescaled (about 1e74); float64 holds it."""
    model = models.get("mlp", num_classes=10, widths=(24,) * 4)
    params = jax.tree_util.tree_map(lambda w: 1e20 * w, model.init(jax.random.key(0), jnp.ones((1, 24)))["params"])
    apply_fn = lambda p, xb: model.apply({"params": p}, xb)  # noqa: E731
    with pytest.raises(LthError, match=r"not finite in float32 even rescaled .* float64 reaches about 1e614"):
        at_init.synflow(apply_fn, params, masks.ones_like(params), (24,), 0.1, rounds=1)
    synflow_in(True, apply_fn, params, (24,), 1)


def test_synflow_without_a_path_is_one_clear_error():
    model, params, *_ = tiny()
    apply_fn = lambda p, xb: model.apply({"params": p}, xb)  # noqa: E731
    cut = masks.ones_like(params)
    cut["b"]["kernel"] = jnp.zeros_like(cut["b"]["kernel"])
    with pytest.raises(LthError, match="R .* is 0: no input-output path"):
        at_init.synflow(apply_fn, params, cut, (3,), 0.5, rounds=2, which=masks.prunable(params, exclude=["b/kernel"]))
