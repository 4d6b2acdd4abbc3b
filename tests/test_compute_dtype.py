"""train.compute_dtype = "bfloat16": matmuls and convolutions in bfloat16,
parameters, optimizer state, masks and BatchNorm statistics in float32."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lth_jax import fit, pruning
from lth_jax.errors import LthError
from lth_jax.train import Steps

pytestmark = pytest.mark.accelerator  # must hold on every backend


class ConvBN(nn.Module):
    """A user's own model with a convolution and BatchNorm."""
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(8, (3,), name="conv")(x[..., None])
        x = nn.relu(nn.BatchNorm(use_running_average=not train, name="bn")(x))
        return nn.Dense(3, name="out")(x.reshape(x.shape[0], -1))


def data(n=256, d=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x, np.argmax(x @ rng.normal(size=(d, 3)), axis=1).astype(np.int32)


@pytest.fixture(scope="module")
def runs():
    x, y = data()
    model = ConvBN()
    variables = model.init(jax.random.key(0), x[:1])
    mask = pruning.magnitude(variables["params"], jax.tree_util.tree_map(lambda p: jnp.ones(p.shape, bool),
                                                                        variables["params"]), 0.5)
    tx = optax.adam(3e-3)
    out = {}
    for dtype in (None, "bfloat16"):
        out[dtype] = fit(model, variables, tx, (x, y), 300, mask=mask, batch_size=32, eval_data={"train": (x, y)},
                         eval_every=100, compute_dtype=dtype)
    return out, mask


def test_the_loss_follows_float32_and_the_arithmetic_is_bfloat16(runs):
    out, _ = runs
    f32, b16 = out[None][1], out["bfloat16"][1]
    for a, b in zip(f32, b16):
        assert abs(a["train_loss"] - b["train_loss"]) < 0.05 + 0.05 * a["train_loss"], (a, b)
    assert b16[-1]["train_loss"] < 0.5 * b16[0]["train_loss"] + 0.3  # it trains
    same = [np.array_equal(p, q) for p, q in zip(jax.tree_util.tree_leaves(out[None][0].params),
                                                 jax.tree_util.tree_leaves(out["bfloat16"][0].params))]
    assert not any(same)  # another arithmetic, not float32 in disguise


def test_pruned_weights_stay_zero_and_the_state_stays_float32(runs):
    out, mask = runs
    state = out["bfloat16"][0]
    for p, m in zip(jax.tree_util.tree_leaves(state.params), jax.tree_util.tree_leaves(mask)):
        assert p.dtype == jnp.float32
        assert np.all(np.asarray(p)[~np.asarray(m)] == 0.0)
    for leaf in jax.tree_util.tree_leaves((state.opt_state, state.batch_stats)):
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            assert leaf.dtype == jnp.float32


def test_matmuls_and_convolutions_run_in_bfloat16():
    x, y = data(8)
    model = ConvBN()
    v = model.init(jax.random.key(0), x[:1])
    steps = Steps(model, optax.sgd(0.1), compute_dtype="bfloat16")
    jaxpr = str(jax.make_jaxpr(lambda p, s: steps.apply(p, s, jnp.asarray(x), train=True))(v["params"],
                                                                                           v["batch_stats"]))
    ops = [line for line in jaxpr.splitlines() if "dot_general" in line or "conv_general_dilated" in line]
    assert len(ops) == 2 and all("bf16" in line.split("=")[0] for line in ops), ops


def test_an_unknown_compute_dtype_is_refused():
    with pytest.raises(LthError, match="compute_dtype must be one of"):
        Steps(ConvBN(), optax.sgd(0.1), compute_dtype="float16")
