"""fit(): one call that trains any flax model or apply_fn, never consuming the
caller's arrays; masks.wrap for anyone's own optax loop; masks are checked."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lth_jax import fit, masks, pruning
from lth_jax.errors import LthError
from lth_jax.train import create_state


class NoTrainKeyword(nn.Module):
    """A user's own model: no `train` keyword, Dropout always on, LayerNorm."""
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.LayerNorm()(nn.Dense(32, name="enc")(x)))
        x = nn.Dropout(0.1, deterministic=False)(x)
        return nn.Dense(3, name="out")(x)


class DeterministicKeyword(nn.Module):
    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        x = nn.relu(nn.Dense(32)(x))
        x = nn.Dropout(0.5)(x, deterministic=deterministic)
        return nn.Dense(3)(x)


def data(n=256, d=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = np.argmax(x @ rng.normal(size=(d, 3)), axis=1).astype(np.int32)
    return x, y


def init(model, x, seed=0):
    return model.init({"params": jax.random.key(seed), "dropout": jax.random.key(1)}, x[:1])


def test_own_model_without_train_keyword_with_dropout_trains():
    x, y = data()
    model = NoTrainKeyword()
    variables = init(model, x)
    mask = pruning.magnitude(variables["params"], masks.ones_like(variables["params"]), 0.5)
    state, history = fit(model, variables, optax.adam(1e-2), (x, y), 60, mask=mask, eval_data={"train": (x, y)},
                         eval_every=30, batch_size=32)
    assert [h["step"] for h in history] == [30, 60]
    assert history[-1]["train_accuracy"] > 0.7 and history[-1]["train_loss"] < history[0]["train_loss"] + 0.5
    kernel, keep = state.params["enc"]["kernel"], mask["enc"]["kernel"]
    assert np.all(np.asarray(kernel)[~np.asarray(keep)] == 0.0) and np.any(np.asarray(kernel) != 0)


def test_deterministic_keyword_is_set_from_the_mode():
    x, y = data()
    model = DeterministicKeyword()
    variables = model.init(jax.random.key(0), x[:1])
    state, history = fit(model, variables, optax.sgd(0.1), (x, y), 40, eval_data={"test": (x, y)})
    # evaluation runs with deterministic=True: the same accuracy twice
    again = fit(model, state.variables, optax.sgd(0.0), (x, y), 1, eval_data={"test": (x, y)})[1]
    zero_lr_loss = again[-1]["test_loss"]
    assert abs(zero_lr_loss - history[-1]["test_loss"]) < 1e-6


@pytest.mark.accelerator
def test_fit_never_consumes_the_callers_arrays_imp_with_rewinding():
    """The loop of the issue: train to step k, keep the rewind point, go on."""
    x, y = data()
    model = NoTrainKeyword()
    variables = init(model, x)
    tx = optax.sgd(0.05, momentum=0.9)
    mask = masks.ones_like(variables["params"])
    s_k, _ = fit(model, variables, tx, (x, y), 20, mask=mask)
    rewind = s_k.params
    s, _ = fit(model, s_k, tx, (x, y), 40)
    assert int(s.step) == 60
    np.asarray(rewind["enc"]["kernel"]), np.asarray(mask["enc"]["kernel"])  # not deleted
    np.asarray(variables["params"]["enc"]["kernel"])
    new_mask = pruning.magnitude(s.params, mask, 0.2)
    ticket, _ = fit(model, {"params": rewind}, tx, (x, y), 40, mask=new_mask, start_step=20)
    assert int(ticket.step) == 60
    assert np.all(np.asarray(ticket.params["out"]["kernel"])[~np.asarray(new_mask["out"]["kernel"])] == 0.0)


def test_continuing_equals_one_run():
    x, y = data()
    model = DeterministicKeyword()
    variables = model.init(jax.random.key(0), x[:1])
    tx = optax.adam(1e-2)
    whole, _ = fit(model, variables, tx, (x, y), 30, batch_size=16)
    first, _ = fit(model, variables, tx, (x, y), 10, batch_size=16)
    rest, _ = fit(model, first, tx, (x, y), 20, batch_size=16)
    for a, b in zip(jax.tree_util.tree_leaves(whole.params), jax.tree_util.tree_leaves(rest.params)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_donate_is_an_explicit_opt_in():
    x, y = data()
    model = DeterministicKeyword()
    first, _ = fit(model, model.init(jax.random.key(0), x[:1]), optax.sgd(0.1), (x, y), 5)
    kept, _ = fit(model, first, optax.sgd(0.1), (x, y), 5)
    np.asarray(first.params["Dense_0"]["kernel"])  # still there
    fit(model, first, optax.sgd(0.1), (x, y), 5, donate=True)
    with pytest.raises(RuntimeError, match="deleted"):
        np.asarray(first.params["Dense_0"]["kernel"])


@pytest.mark.parametrize("loss", ["squared", "l1", lambda out, t: jnp.sum(jnp.abs(out - t) ** 1.5, axis=-1)])
def test_regression_losses(loss):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4)).astype(np.float32)
    t = (x @ rng.normal(size=(4, 2))).astype(np.float32)
    model = nn.Dense(2)
    variables = model.init(jax.random.key(0), x[:1])
    _, history = fit(model, variables, optax.adam(3e-2), (x, t), 200, loss=loss, eval_data={"fit": (x, t)},
                     eval_every=20, batch_size=20)
    assert "fit_accuracy" not in history[-1] and "train_accuracy" not in history[-1]
    assert history[-1]["fit_loss"] < 0.1 * history[0]["fit_loss"]


def test_plain_apply_fn_trains():
    x, y = data()
    def apply_fn(variables, xb):
        return xb @ variables["params"]["w"]
    variables = {"params": {"w": jnp.zeros((8, 3))}}
    _, history = fit(apply_fn, variables, optax.sgd(0.5), (x, y), 50, eval_data={"train": (x, y)})
    assert history[-1]["train_accuracy"] > 0.8


@pytest.mark.accelerator
def test_stacked_members_and_a_sampler():
    x, y = data()
    model = DeterministicKeyword()
    stacked = jax.vmap(lambda k: model.init(k, x[:1]))(jax.random.split(jax.random.key(0), 3))
    mask = jax.vmap(masks.ones_like)(stacked["params"])
    half = np.arange(128)
    seen = []

    def sampler(start, stop):
        seen.append((start, stop))
        return np.stack([half[(np.arange(16) + 16 * s) % 128] for s in range(start, stop)])
    state, history = fit(model, stacked, optax.sgd(0.1), (x, y), 24, mask=mask, members=True, sampler=sampler,
                         eval_data={"test": (x, y)}, eval_every=12, batch_size=16)
    assert seen == [(0, 12), (12, 24)]
    assert np.shape(history[-1]["test_accuracy"]) == (3,)
    assert state.params["Dense_0"]["kernel"].shape[0] == 3


def test_labels_out_of_range_are_refused():
    x, y = data()
    model = DeterministicKeyword()
    variables = model.init(jax.random.key(0), x[:1])
    with pytest.raises(LthError, match=r"labels span \[0, 7\], the model has 3 outputs"):
        fit(model, variables, optax.sgd(0.1), (x, np.where(y == 2, 7, y)), 5)
    with pytest.raises(LthError, match="test labels"):
        fit(model, variables, optax.sgd(0.1), (x, y), 5, eval_data={"test": (x, -1 - y)})


# ---- masks are checked ----------------------------------------------------------------------------
def params_of():
    return {"enc": {"kernel": jnp.ones((4, 3)), "bias": jnp.ones(3)}, "out": {"kernel": jnp.ones((3, 2))}}


@pytest.mark.parametrize("bad, message", [
    (lambda m: {**m, "out": {"kernel": jnp.full((3, 2), 0.5)}}, "'out/kernel' has dtype float32"),
    (lambda m: {**m, "out": {"kernel": jnp.ones((3, 2), jnp.int32)}}, "'out/kernel' has dtype int32"),
    (lambda m: {**m, "out": {"kernel": jnp.ones((1, 2), bool)}}, r"'out/kernel' has shape \(1, 2\)"),
    (lambda m: {**m, "out": {"kernel": jnp.ones((2, 3), bool)}}, r"'out/kernel' has shape \(2, 3\)"),
    (lambda m: {"enc": m["enc"]}, r"missing leaves \['out/kernel'\]"),
])
def test_bad_masks_get_one_line_naming_the_leaf(bad, message):
    params = params_of()
    mask = bad(masks.ones_like(params))
    for call in (lambda: masks.check(mask, params), lambda: masks.apply(params, mask),
                 lambda: create_state(params, {}, optax.sgd(0.1), mask),
                 lambda: pruning.magnitude(params, mask, 0.2), lambda: masks.wrap(optax.sgd(0.1), mask).init(params)):
        with pytest.raises(LthError, match=message) as e:
            call()
        assert "\n" not in str(e.value)


def test_density_and_count_under_jit_and_vmap():
    params = params_of()
    mask = pruning.magnitude(jax.tree_util.tree_map(lambda p: p * jnp.arange(p.size).reshape(p.shape), params),
                             masks.ones_like(params), 0.5)
    assert masks.count(mask) == (12, 21) and masks.density(mask) == pytest.approx(9 / 18)
    kept, total = jax.jit(masks.count)(mask)
    assert int(kept) == 12 and total == 21
    assert float(jax.jit(masks.density)(mask)) == pytest.approx(0.5)
    stacked = jax.tree_util.tree_map(lambda m: jnp.stack([m, jnp.ones_like(m)]), mask)
    np.testing.assert_allclose(jax.vmap(masks.density)(stacked), [0.5, 1.0])


# ---- masks.wrap in a user's own loop --------------------------------------------------------------
@pytest.mark.accelerator
@pytest.mark.parametrize("name, tx", [
    ("adamw", optax.adamw(1e-2, weight_decay=0.1)),
    ("sgd_momentum_decay", optax.chain(optax.add_decayed_weights(1e-2), optax.sgd(0.1, momentum=0.9))),
    ("lion", optax.lion(1e-3, weight_decay=0.1)),
    ("adafactor", optax.adafactor(1e-2, weight_decay_rate=0.1)),
])
def test_wrap_keeps_pruned_weights_exactly_zero(name, tx):
    x, y = data()
    model = NoTrainKeyword()
    variables = init(model, x)
    params = variables["params"]
    mask = pruning.magnitude(params, masks.ones_like(params), 0.6)
    wrapped = masks.wrap(tx, mask)
    opt_state = wrapped.init(params)  # params not masked yet: the first update zeroes them

    @jax.jit
    def step(params, opt_state, key):
        def loss(p):
            logits = model.apply({"params": p}, x, rngs={"dropout": key})
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        updates, opt_state = wrapped.update(jax.grad(loss)(params), opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    start = params
    for i in range(10):
        params, opt_state = step(params, opt_state, jax.random.key(i))
    for (n, p), m, p0 in zip(masks.named_leaves(params).items(), jax.tree_util.tree_leaves(mask),
                             jax.tree_util.tree_leaves(start)):
        p, m = np.asarray(p), np.asarray(m)
        assert np.all(p[~m] == 0.0), n
        assert not np.array_equal(p[m], np.asarray(p0)[m]), n


def test_wrap_update_needs_params():
    params = params_of()
    wrapped = masks.wrap(optax.sgd(0.1), masks.ones_like(params))
    with pytest.raises(LthError, match="needs params"):
        wrapped.update(params, wrapped.init(params))


def test_log_activations_records_the_dead_neuron_rates():
    from lth_jax import activations
    x, y = data()
    model = DeterministicKeyword()
    variables = model.init(jax.random.key(0), x[:1])
    state, history = fit(model, variables, optax.sgd(0.1), (x, y), 20, eval_data={"val": (x[:100], y[:100])},
                         log_activations=True)
    direct = activations.dead_rates(lambda v, xb: model.apply(v, xb), state.variables, x[:100])
    assert history[-1]["dead_dynamic"] == pytest.approx(float(direct["dynamic_all"]))
    assert history[-1]["dead_static"] == pytest.approx(float(direct["static_all"]))
    assert 0 < history[-1]["dead_dynamic"] < 1


class BatchNormDropoutCNN(nn.Module):
    """A user's own CNN with BatchNorm and Dropout, switched by `train`."""
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(4, (3,))(x[..., None])
        x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
        x = nn.Dropout(0.3, deterministic=not train)(x)
        return nn.Dense(3)(x.reshape(x.shape[0], -1))


def test_bound_apply_trains_as_the_module_does():
    """fit(model.apply) once trained in evaluation mode without a word: no
    Dropout, BatchNorm on its running statistics, which never moved."""
    x, y = data()
    model = BatchNormDropoutCNN()
    variables = model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x[:1])
    tx = optax.adam(1e-2)
    by_module, _ = fit(model, variables, tx, (x, y), 20, batch_size=32)
    by_apply, _ = fit(model.apply, variables, tx, (x, y), 20, batch_size=32)
    moved = np.abs(by_apply.batch_stats["BatchNorm_0"]["mean"] - variables["batch_stats"]["BatchNorm_0"]["mean"])
    assert moved.max() > 1e-3
    for a, b in zip(jax.tree_util.tree_leaves(by_module), jax.tree_util.tree_leaves(by_apply)):
        np.testing.assert_array_equal(a, b)


def test_a_plain_function_with_batch_statistics_is_warned():
    x, y = data()
    model = BatchNormDropoutCNN()
    variables = model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x[:1])
    with pytest.warns(UserWarning, match=r"plain function, so variables\['batch_stats'\] stay as given.*fit\(model"):
        fit(lambda v, xb: model.apply(v, xb), variables, optax.sgd(0.1), (x, y), 2, batch_size=32)
