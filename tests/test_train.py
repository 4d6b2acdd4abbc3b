import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lth_jax import masks, models, optim, pruning
from lth_jax.errors import LthError
from lth_jax.trainer import Diverged, Trainer, early_stop
from lth_jax.train import Steps, batch_indices, create_state, init_variables


def toy_data(n=256, d=12, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 1).astype(np.int32)
    return x, y % classes


def pruned_state(tx, model=None, shape=(12,), fraction=0.6):
    model = model or models.get("mlp", num_classes=3, widths=(16, 16))
    v = init_variables(model, jax.random.key(0), shape)
    params = v["params"]
    mask = pruning.magnitude(params, masks.ones_like(params), fraction)
    return model, create_state(params, v.get("batch_stats", {}), tx, mask)


@pytest.mark.accelerator
@pytest.mark.parametrize("tx", [
    optim.optimizer("momentum", 0.1, weight_decay=1e-2),
    optim.optimizer("nesterov", 0.1, weight_decay=1e-2),
    optim.optimizer("adam", 1e-2, weight_decay=1e-2),
    optim.optimizer("adamw", 1e-2, weight_decay=1e-1),
], ids=["momentum_wd", "nesterov_wd", "adam_l2", "adamw"])
def test_pruned_weights_stay_exactly_zero(tx):
    model, state = pruned_state(tx)
    trainer = Steps(model, tx)
    x, y = toy_data()
    step = jax.jit(trainer.step)
    for i in range(5):
        state, _ = step(state, x[i * 32:(i + 1) * 32], y[i * 32:(i + 1) * 32], jax.random.key(0))
        for p, m in zip(jax.tree_util.tree_leaves(state.params), jax.tree_util.tree_leaves(state.mask)):
            assert np.all(np.asarray(p)[~np.asarray(m)] == 0.0)
    kept = np.asarray(state.params["dense_0"]["kernel"])[np.asarray(state.mask["dense_0"]["kernel"])]
    assert np.count_nonzero(kept) == kept.size  # kept weights do train


@pytest.mark.accelerator
def test_scan_equals_python_loop_of_steps():
    tx = optim.optimizer("momentum", 0.05)
    model, state = pruned_state(tx)
    trainer = Steps(model, tx)
    x, y = toy_data()
    idx = batch_indices(3, len(x), 32, 0, 12)
    key = jax.random.key(1)
    looped = state
    step = jax.jit(trainer.step)
    for row in idx:
        looped, _ = step(looped, x[row], y[row], key)
    scanned, metrics = jax.jit(trainer.scan_steps)(state, jnp.asarray(x), jnp.asarray(y), jnp.asarray(idx), key)
    assert metrics["loss"].shape == (12,)
    for a, b in zip(jax.tree_util.tree_leaves(looped.params), jax.tree_util.tree_leaves(scanned.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.usefixtures("quick_compile")  # compile-bound: see conftest
@pytest.mark.accelerator
def test_conv_model_trains_inside_compiled_loop():
    tx = optim.optimizer("sgd", 0.05)
    model, state = pruned_state(tx, models.get("conv2", num_classes=3), (8, 8, 1), fraction=0.3)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8, 8, 1)).astype(np.float32)
    y = (x.mean((1, 2, 3)) > 0).astype(np.int32)
    loop = Trainer(Steps(model, tx), x, y, {"test": (x, y)}, batch_size=16, seed=0, eval_batch_size=32)
    records = []
    state = loop.run(state, 20, 10, jax.random.key(0), on_eval=lambda s, r: records.append(r), progress=False)
    assert [r["step"] for r in records] == [10, 20]
    assert records[-1]["train_loss"] < records[0]["train_loss"] * 1.05
    for p, m in zip(jax.tree_util.tree_leaves(state.params), jax.tree_util.tree_leaves(state.mask)):
        assert np.all(np.asarray(p)[~np.asarray(m)] == 0.0)


def test_batch_indices_are_permutations_and_resumable():
    idx = batch_indices(0, 100, 30, 0, 7)  # 3 steps per epoch, last 10 examples dropped per epoch
    assert idx.shape == (7, 30)
    assert len(set(idx[:3].ravel())) == 90
    assert not np.array_equal(idx[0], idx[3])
    np.testing.assert_array_equal(idx[4:], batch_indices(0, 100, 30, 4, 7))


def test_loop_evaluates_and_finds_early_stop():
    tx = optim.optimizer("adam", 1e-2)
    model, state = pruned_state(tx, fraction=0.0)
    x, y = toy_data()
    loop = Trainer(Steps(model, tx), x[:200], y[:200], {"val": (x[200:], y[200:])}, batch_size=20, seed=0,
                eval_batch_size=7)
    records = []
    loop.run(state, 50, 10, jax.random.key(0), on_eval=lambda s, r: records.append(r), progress=False)
    assert len(records) == 5
    assert records[-1]["val_accuracy"] > 0.6 and records[-1]["val_loss"] < records[0]["val_loss"]
    best = early_stop(records)
    assert best["val_loss"] == min(r["val_loss"] for r in records)


def test_loop_detects_divergence_and_bad_batch():
    tx = optim.optimizer("sgd", 0.1)
    model, state = pruned_state(tx, fraction=0.0)
    x, y = toy_data()
    x[5] = np.inf  # one bad example: the loss becomes NaN in its first epoch
    loop = Trainer(Steps(model, tx), x, y, {}, batch_size=32, seed=0)
    with pytest.raises(Diverged):
        loop.run(state, 200, 10, jax.random.key(0), progress=False)
    with pytest.raises(LthError, match="larger than the training set"):
        Trainer(Steps(model, tx), x, y, {}, batch_size=1000, seed=0)


@pytest.mark.accelerator
def test_host_gathered_batches_match_device_resident():
    tx = optim.optimizer("momentum", 0.05)
    model, state = pruned_state(tx)
    x, y = toy_data()
    out = []
    for device_data in (True, False):
        loop = Trainer(Steps(model, tx), x, y, {}, batch_size=32, seed=0, device_data=device_data)
        s = loop.run(jax.tree_util.tree_map(jnp.copy, state), 16, 8, jax.random.key(0), progress=False)
        out.append(s.params["dense_0"]["kernel"])
    np.testing.assert_allclose(out[0], out[1], rtol=1e-6, atol=1e-7)


def test_schedules():
    s = optim.schedule("step", 0.1, 100, boundaries=(50, 80))
    assert float(s(10)) == pytest.approx(0.1) and float(s(60)) == pytest.approx(0.01)
    assert float(s(90)) == pytest.approx(0.001)
    w = optim.schedule("cosine", 0.1, 100, warmup_steps=10)
    assert float(w(0)) == 0 and float(w(10)) == pytest.approx(0.1) and float(w(100)) == pytest.approx(0, abs=1e-6)
    with pytest.raises(LthError, match="valid names"):
        optim.optimizer("lion", 0.1)


OLD_JAX = tuple(int(p) for p in jax.__version__.split(".")[:2]) < (0, 10)


@pytest.mark.parametrize("per_member", [False, True], ids=["shared_batches", "own_batches"])
def test_member_blocks_train_each_member_as_alone(per_member):
    """member_block=1 (the CPU default) is bit-identical to training each member
    alone; vmapped blocks of 2 (with a remainder) and all at once agree to float
    reordering. Device-resident and host-gathered batches alike."""
    from lth_jax import ensemble
    tx = optim.optimizer("adam", 1e-2)
    model = models.get("mlp", num_classes=3, widths=(16, 16))
    states = [create_state(init_variables(model, jax.random.key(i), (12,))["params"], {}, tx) for i in range(3)]
    x, y = toy_data()
    rows = [batch_indices(i if per_member else 0, len(x), 32, 0, 12) for i in range(3)]
    index = np.stack(rows, 1) if per_member else rows[0]
    key = jax.random.key(1)
    alone = [jax.jit(Steps(model, tx).scan_steps)(s, x, y, r, key) for s, r in zip(states, rows)]
    auto = Steps(model, tx, members=True)
    assert auto.block_of(ensemble.stack(states)) == 1 and auto.block_of(ensemble.stack(states * 3)) == 4
    for block in ("auto", 1, 2, None):
        steps = Steps(model, tx, members=True, member_block=block)
        for got, metrics in (jax.jit(steps.scan_steps)(ensemble.stack(states), x, y, index, key),
                             jax.jit(steps.scan_batches, static_argnames="per_member")(
                                 ensemble.stack(states), x[index], y[index], key, per_member=per_member)):
            assert metrics["loss"].shape == (12, 3)
            for i, (want, want_metrics) in enumerate(alone):
                a, b = ensemble.take(got.params, i), want.params
                if block in ("auto", 1):
                    assert all(np.array_equal(u, v) for u, v in zip(jax.tree_util.tree_leaves(a),
                                                                     jax.tree_util.tree_leaves(b)))
                    if OLD_JAX:  # jax 0.7.2 sums the reported loss in another order (1 ulp); weights stay equal
                        np.testing.assert_allclose(metrics["loss"][:, i], want_metrics["loss"], rtol=3e-7, atol=0)
                    else:
                        np.testing.assert_array_equal(metrics["loss"][:, i], want_metrics["loss"])
                else:
                    jax.tree_util.tree_map(lambda u, v: np.testing.assert_allclose(u, v, atol=1e-5), a, b)
            assert int(got.step[0]) == 12


@pytest.mark.parametrize("block", [0, -1, 1.5, True, "vmap"])
def test_bad_member_block_is_refused(block):
    with pytest.raises(LthError, match="member_block must be 'auto', None"):
        Steps(models.get("mlp", num_classes=3), optim.optimizer("sgd", 0.1), members=True, member_block=block)
