"""Dead-neuron rates, found in the model's own computation."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lth_jax import activations, models


class TwoLayers(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(5, name="a")(x))
        x = jnp.maximum(nn.Dense(4, name="b")(x), 0.0)  # a hand-written ReLU counts too
        return nn.Dense(2, name="out")(x)


def test_rates_against_a_direct_count():
    model = TwoLayers()
    x = jax.random.normal(jax.random.key(1), (64, 3))
    variables = model.init(jax.random.key(0), x)
    params = jax.tree_util.tree_map(lambda a: a, variables["params"])
    # unit 2 of layer a can never fire: no input weights and a negative bias
    params["a"]["kernel"] = params["a"]["kernel"].at[:, 2].set(0.0)
    params["a"]["bias"] = params["a"]["bias"].at[2].set(-1.0)
    apply_fn = lambda v, xb: model.apply(v, xb)  # noqa: E731
    rates = jax.jit(lambda v, xb: activations.dead_rates(apply_fn, v, xb))({"params": params}, x)
    h_a = np.maximum(np.asarray(x @ params["a"]["kernel"] + params["a"]["bias"]), 0)
    h_b = np.maximum(h_a @ np.asarray(params["b"]["kernel"]) + np.asarray(params["b"]["bias"]), 0)
    assert rates["units"] == [5, 4]
    np.testing.assert_allclose(rates["dynamic"], [np.mean(h_a == 0), np.mean(h_b == 0)], rtol=1e-6)
    np.testing.assert_allclose(rates["static"], [np.mean(np.all(h_a == 0, 0)), np.mean(np.all(h_b == 0, 0))])
    assert float(rates["static"][0]) >= 0.2  # unit 2 at least
    pooled = (np.sum(h_a == 0) + np.sum(h_b == 0)) / (h_a.size + h_b.size)
    assert float(rates["dynamic_all"]) == pytest.approx(pooled)
    assert float(rates["static_all"]) == pytest.approx((np.all(h_a == 0, 0).sum() + np.all(h_b == 0, 0).sum()) / 9)


def test_a_resnet_shows_one_relu_per_stem_and_two_per_block():
    model = models.get("resnet20", num_classes=10, width=4)
    x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
    variables = jax.jit(model.init)(jax.random.key(0, impl="rbg"), x)
    outs = activations.relu_outputs(lambda v, xb: model.apply(v, xb, train=False), variables, x)
    assert len(outs) == 1 + 2 * 9
    assert [o.shape[-1] for o in outs[:3]] == [4, 4, 4] and outs[-1].shape == (2, 2, 2, 16)
