"""A notebook user's mistakes with the API get one line (LthError) naming what
is wrong and how to fix it, not an error from inside jax or flax, and a
parameter tree passed where a mask belongs is refused, not counted."""
import flax.linen as nn
import jax
import numpy as np
import optax
import pytest

from lth_jax import ensemble, fit, masks, scores, units
from lth_jax.errors import LthError


class OwnCNN(nn.Module):
    """A user's own 1-D CNN with BatchNorm and Dropout (not from lth_jax.models)."""
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(4, (3,))(x[..., None])
        x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
        x = nn.Dropout(0.2, deterministic=not train)(x)
        return nn.Dense(3)(x.reshape(x.shape[0], -1))


def setup(n=64, width=12):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, width)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    model = OwnCNN()
    return model, model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x[:1]), x, y


def one_line(call, match):
    with pytest.raises(LthError, match=match) as e:
        call()
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("bad, match", [
    (lambda m, v, x, y: fit(m, v, optax.sgd(0.1), (x[:0], y[:0]), 5), r"the training set is empty"),
    (lambda m, v, x, y: fit(m, v, optax.sgd(0.1), (x, y), 5, eval_data={"test": (x[:0], y[:0])}),
     r"eval_data\['test'\] is empty"),
    (lambda m, v, x, y: fit(m, v, optax.sgd(0.1), (x[:, :8], y), 5),
     r"parameter 'Dense_0/kernel' has shape \(48, 3\), but inputs of shape \(8,\) per example make it \(32, 3\)"),
    (lambda m, v, x, y: fit(m.apply, v, optax.sgd(0.1), (x[:, :8], y), 5), r"'Dense_0/kernel' has shape \(48, 3\)"),
    (lambda m, v, x, y: fit(lambda vv, xb: m.apply(vv, xb), v, optax.sgd(0.1), (x[:, :8], y), 5),
     r"don't fit the model on inputs of shape \(8,\) per example \(For parameter \"kernel\" in \"/Dense_0\""),
    (lambda m, v, x, y: fit(m, v, optax.sgd(0.1), (x, y[:, None]), 5),
     r"training labels have shape \(64, 1\); cross-entropy needs one integer label per example, shape \(64,\)"),
    (lambda m, v, x, y: fit(m, v, optax.sgd(0.1), (x, y), 5, eval_data={"test": (x, y[:, None])}),
     r"test labels have shape \(64, 1\)"),
    (lambda m, v, x, y: fit(m, ensemble.stack([v, v]), optax.sgd(0.1), (x, y), 5),
     r"the variables are a stack of 2 members .*pass members=True"),
    (lambda m, v, x, y: fit(m, ensemble.stack([v, v]), optax.sgd(0.1), (x, y), 5, members=True,
                            mask=masks.ones_like(v["params"])),
     r"mask leaf 'BatchNorm_0/bias' has shape \(4,\), .*member axis of 2.*the mask is one member's"),
    (lambda m, v, x, y: fit(m, {"params": ensemble.stack([v, v])["params"], "batch_stats": v["batch_stats"]},
                            optax.sgd(0.1), (x, y), 5, members=True), r"batch_stats leaf 'BatchNorm_0/mean'"),
    (lambda m, v, x, y: fit(lambda vv, xb, train: m.apply(vv, xb, train=train), v, optax.sgd(0.1), (x, y), 5),
     r"the model function updates variables .*pass the flax Module itself"),
])
def test_fit_input_mistakes_are_one_line(bad, match):
    model, variables, x, y = setup()
    one_line(lambda: bad(model, variables, x, y), match)


def test_regression_targets_of_another_shape_than_the_outputs_are_refused():
    """(n,) targets against (n, 1) outputs would broadcast to (batch, batch) in the squared loss."""
    x = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
    model = nn.Dense(1)
    variables = model.init(jax.random.key(0), x[:1])
    one_line(lambda: fit(model, variables, optax.sgd(0.1), (x, x[:, 0]), 5, loss="squared"),
             r"training targets have shape \(\) per example, the model outputs \(1,\)")


def test_a_parameter_tree_where_a_mask_belongs_is_refused(tmp_path):
    _, variables, _, _ = setup()
    params = variables["params"]
    for call, name in [(masks.density, "masks.density"), (masks.count, "masks.count"),
                       (masks.densities, "masks.densities"),
                       (lambda p: masks.save(str(tmp_path / "mask.npz"), p), "masks.save"),
                       (lambda p: units.alive_units(p, None), "units.alive_units"),
                       (jax.jit(masks.density), "masks.density")]:
        one_line(lambda: call(params), rf"{name}: leaf 'BatchNorm_0/bias' has dtype float32, a mask has boolean")
    assert not (tmp_path / "mask.npz").exists() and masks.density(masks.ones_like(params)) == 1.0


def test_grand_method_accepts_a_stack_like_grand():
    model, variables, x, y = setup()
    apply_fn = lambda v, xb: model.apply(v, xb)  # noqa: E731
    stacked = ensemble.stack([variables, variables])
    assert scores.grand_method(apply_fn, stacked, x[:8], model=model) == \
        scores.grand_method(apply_fn, variables, x[:8], model=model)
    assert scores.grand_method(apply_fn, stacked, x[:8], model=model)[0] == "fast"
    assert scores.grand(apply_fn, stacked, x[:8], y[:8], model=model).shape == (2, 8)
