"""Generalization measures against brute-force references."""
import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lth_jax import masks, measures, units
from lth_jax import models as models_lib


class MLP342(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(4, name="hidden")(x))
        return nn.Dense(2, name="out")(x)


class ConvBN(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Conv(3, (3, 3), name="conv")(x)  # with a bias, which folding moves into the BN shift
        x = nn.relu(nn.BatchNorm(use_running_average=True, name="bn")(x))
        return nn.Dense(2, name="out")(x.reshape(x.shape[0], -1))


def mlp():
    model = MLP342()
    params = model.init(jax.random.key(0), jnp.ones((1, 3)))["params"]
    params = jax.tree_util.tree_map(lambda p: p + 0.1 * jax.random.normal(jax.random.key(1), p.shape), params)
    return model, params


def test_path_norm_is_the_sum_over_paths_of_squared_weights():
    model, params = mlp()
    w1, b1 = np.asarray(params["hidden"]["kernel"], np.float64), np.asarray(params["hidden"]["bias"], np.float64)
    w2, b2 = np.asarray(params["out"]["kernel"], np.float64), np.asarray(params["out"]["bias"], np.float64)
    total = 0.0
    for k in range(2):  # every path ending at output k: from an input through a hidden unit, from a hidden bias, or the output bias
        total += b2[k] ** 2
        for j in range(4):
            total += b1[j] ** 2 * w2[j, k] ** 2
            for i in range(3):
                total += w1[i, j] ** 2 * w2[j, k] ** 2
    got = measures.path_norm(lambda p, x: model.apply({"params": p}, x), params, (3,))
    assert float(got) == pytest.approx(total, rel=1e-6)
    mask = masks.ones_like(params)
    mask["hidden"]["kernel"] = mask["hidden"]["kernel"].at[0, :].set(False)  # input 0 pruned away
    pruned = sum(w1[i, j] ** 2 * w2[j, k] ** 2 for i, j, k in itertools.product([0], range(4), range(2)))
    got = measures.path_norm(lambda p, x: model.apply({"params": p}, x), params, (3,), mask)
    assert float(got) == pytest.approx(total - pruned, rel=1e-6)


@pytest.mark.parametrize("shape", [(50, 30), (30, 50), (3, 3, 8, 16)])
def test_spectral_norm_matches_svd(shape):
    w = jax.random.normal(jax.random.key(2), shape)
    matrix = np.asarray(w).reshape(-1, shape[-1])
    want = np.linalg.svd(matrix, compute_uv=False)[0]
    got = jax.jit(measures.spectral_norm)(jnp.asarray(matrix))
    assert float(got) == pytest.approx(want, rel=1e-3)


def test_margin_is_the_tenth_percentile_of_true_minus_best_other():
    logits = jax.random.normal(jax.random.key(3), (200, 5))
    y = jnp.arange(200) % 5
    lg = np.asarray(logits)
    m = np.array([lg[i, y[i]] - np.max(np.delete(lg[i], int(y[i]))) for i in range(200)])
    np.testing.assert_allclose(measures.margins(logits, y), m, rtol=1e-6)
    assert np.sort(m)[19] < 0  # random logits: most examples are misclassified
    assert float(measures.output_margin(logits, y)) == pytest.approx(np.sort(m)[19], rel=1e-6)  # signed, not abs()


def test_batchnorm_folding_keeps_the_function_and_scales_the_kernel():
    model = ConvBN()
    x = jax.random.normal(jax.random.key(4), (5, 6, 6, 1))
    v = model.init(jax.random.key(5), x)
    k = jax.random.split(jax.random.key(6), 4)
    v = {"params": {**v["params"], "bn": {"scale": 1 + jax.random.uniform(k[0], (3,)),
                                          "bias": jax.random.normal(k[1], (3,))},
                    "conv": {**v["params"]["conv"], "bias": jax.random.normal(k[3], (3,))}},
         "batch_stats": {"bn": {"mean": jax.random.normal(k[2], (3,)), "var": 0.5 + jax.random.uniform(k[3], (3,))}}}
    fl = units.flow(model, v, x[:2])
    params, stats, scales = measures.fold_batchnorm(v["params"], v["batch_stats"], fl)
    np.testing.assert_allclose(model.apply({"params": params, "batch_stats": stats}, x), model.apply(v, x),
                               rtol=1e-5, atol=1e-5)
    assert float(jnp.max(jnp.abs(params["conv"]["bias"]))) == 0.0
    want = np.asarray(v["params"]["conv"]["kernel"]).reshape(-1, 3) * np.asarray(
        v["params"]["bn"]["scale"] / jnp.sqrt(v["batch_stats"]["bn"]["var"] + 1e-5))
    np.testing.assert_allclose(measures.weight_matrices(params, scales=scales)["conv/kernel"], want, rtol=1e-5)


def test_noise_touches_only_alive_parameters():
    _, params = mlp()
    mask = masks.ones_like(params)
    mask["hidden"]["kernel"] = mask["hidden"]["kernel"].at[1].set(False)
    noisy = measures.perturb(jax.random.key(7), params, mask, 0.5)
    np.testing.assert_array_equal(noisy["hidden"]["kernel"][1], params["hidden"]["kernel"][1])
    assert bool(jnp.all(noisy["hidden"]["kernel"][0] != params["hidden"]["kernel"][0]))
    big = {"w": jnp.full((20000,), 3.0)}
    d = measures.perturb(jax.random.key(8), big, None, 0.1, magnitude_eps=1e-3)["w"] - 3.0
    assert float(jnp.std(d)) == pytest.approx(np.sqrt(0.1 ** 2 * 9 + 1e-6), rel=0.03)  # a std, not a variance


def linear_problem():
    """A linear classifier that is right on every example, and its data."""
    w = jax.random.normal(jax.random.key(9), (5, 3))
    x = jax.random.normal(jax.random.key(10), (600, 5))
    y = jnp.argmax(x @ w, 1)
    params = {"dense": {"kernel": 3.0 * w, "bias": jnp.zeros(3)}}

    def apply_fn(p, xb):
        return xb @ p["dense"]["kernel"] + p["dense"]["bias"]
    return apply_fn, params, x, y


def test_sharpness_bisection_ends_within_tolerance_of_the_target():
    apply_fn, params, x, y = linear_problem()

    def accuracy(p, xb, yb):
        return jnp.mean(jnp.argmax(apply_fn(p, xb), 1) == yb)
    for eps in (None, 1e-3):
        sigma, acc, clean = measures.pac_bayes_sigma(accuracy, params, None, jax.random.key(11), data=(x, y),
                                                     magnitude_eps=eps)
        assert clean == 1.0 and 0 < sigma < 2
        assert abs((clean - acc) - 0.1) <= 0.01, (eps, sigma, acc)


def test_all_measures_are_mask_aware_and_match_direct_formulas():
    apply_fn, params, x, y = linear_problem()
    init = {"dense": {"kernel": jax.random.normal(jax.random.key(12), (5, 3)), "bias": jnp.zeros(3)}}
    mask = masks.ones_like(params)
    mask["dense"]["kernel"] = mask["dense"]["kernel"].at[0, 0].set(False)
    out = measures.all_measures(apply_fn, params, init, mask, x, y, jax.random.key(13), input_shape=(5,), chunk=256)
    w = np.asarray(params["dense"]["kernel"]) * np.asarray(mask["dense"]["kernel"])
    w0 = np.asarray(init["dense"]["kernel"]) * np.asarray(mask["dense"]["kernel"])
    assert out["params"] == 14 and out["train_accuracy"] == 1.0
    assert out["l2"] == pytest.approx(np.linalg.norm(w), rel=1e-5)
    assert out["fro_dist"] == pytest.approx(np.sum((w - w0) ** 2), rel=1e-5)
    assert out["log_prod_of_spec"] == pytest.approx(2 * np.log(np.linalg.svd(w, compute_uv=False)[0]), rel=1e-3)
    margin = out["margin"]
    assert out["log_prod_of_fro_over_margin"] == pytest.approx(np.log(np.sum(w ** 2)) - 2 * np.log(margin), rel=1e-5)
    assert out["pacbayes_flatness"] == pytest.approx(1 / out["sigma"] ** 2)
    assert all(np.isfinite(v) for v in out.values())
    adj = measures.adjusted(out, 600)
    assert "margin" not in adj and adj["log_prod_of_spec"] == pytest.approx(0.5 * (out["log_prod_of_spec"] - np.log(600)))


def test_a_network_that_misfits_a_tenth_of_its_data_has_no_margin_measures():
    """20% of the labels moved off the classifier's choice: the 10th-percentile
    margin is negative, so every measure divided by it is undefined (NaN), not
    flipped by taking the margin's absolute value; the others are unchanged."""
    apply_fn, params, x, y = linear_problem()
    key, init = jax.random.key(13), jax.tree_util.tree_map(lambda p: 0.5 * p, params)
    fit = measures.all_measures(apply_fn, params, init, None, x, y, key, input_shape=(5,), chunk=256)
    y_bad = jnp.where(jnp.arange(600) % 5 == 0, (y + 1) % 3, y)
    out = measures.all_measures(apply_fn, params, init, None, x, y_bad, key, input_shape=(5,), chunk=256)
    assert out["train_accuracy"] == pytest.approx(0.8) and out["margin"] < 0
    undefined = {k for k, v in out.items() if np.isnan(v)}
    assert undefined == set(measures.MARGIN_MEASURES)
    assert out["log_prod_of_fro"] == pytest.approx(fit["log_prod_of_fro"]) and out["path_norm"] == fit["path_norm"]
    adj = measures.adjusted(out, 600)
    assert {k for k, v in adj.items() if np.isnan(v)} == set(measures.MARGIN_MEASURES)


@pytest.mark.usefixtures("quick_compile")  # compile-bound: see conftest
def test_batchnorm_folding_keeps_resnet20s_function():
    from lth_jax.train import init_variables
    model = models_lib.get("resnet20", num_classes=10)
    v = init_variables(model, jax.random.key(0), (32, 32, 3))
    stats = jax.tree_util.tree_map(lambda a: a + 0.3 * jax.random.uniform(jax.random.key(1), a.shape), v["batch_stats"])
    v = {"params": v["params"], "batch_stats": stats}
    x = jax.random.normal(jax.random.key(2), (4, 32, 32, 3))
    params, folded, scales = measures.fold_batchnorm(v["params"], v["batch_stats"], units.flow(model, v, x[:2]))
    assert len(scales) == sum(1 for n in measures.kernel_names(v["params"]) if n != "output/kernel")
    np.testing.assert_allclose(model.apply({"params": params, "batch_stats": folded}, x), model.apply(v, x),
                               rtol=1e-4, atol=1e-4)
