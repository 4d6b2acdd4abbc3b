"""The last layer's geometric decomposition rebuilds the logits."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lth_jax import geometry, models
from lth_jax.errors import LthError
from lth_jax.train import init_variables


@pytest.mark.parametrize("name, shape", [("lenet_300_100", (28, 28, 1)), ("resnet20", (32, 32, 3))])
def test_decomposition_rebuilds_the_logits(name, shape):
    model = models.get(name, num_classes=10)
    variables = init_variables(model, jax.random.key(0), shape)
    x = jax.random.normal(jax.random.key(1), (16, *shape))
    y = jnp.arange(16) % 10
    out = geometry.of_model(model, variables, x, y)
    np.testing.assert_allclose(out["logits"], out["model_logits"], rtol=1e-5, atol=1e-5)
    lg = np.asarray(out["model_logits"])
    want_margin = [lg[i, y[i]] - np.max(np.delete(lg[i], int(y[i]))) for i in range(16)]
    np.testing.assert_allclose(out["margin"], want_margin, rtol=1e-4, atol=1e-5)
    cos_y = np.cos(np.asarray(out["theta_y"]))
    np.testing.assert_allclose(cos_y, np.asarray(out["cos"])[np.arange(16), np.asarray(y)], atol=1e-5)
    assert out["h_norm"].shape == (16,) and out["w_norm"].shape == (10,)


def test_unknown_layer_is_refused():
    model = models.get("lenet_300_100", num_classes=10)
    variables = init_variables(model, jax.random.key(0), (28, 28, 1))
    with pytest.raises(LthError, match="no layer named 'head'"):
        geometry.features(model, variables, jnp.ones((2, 28, 28, 1)), layer="head")
