"""Chunk sizes from the device's free memory (lth_jax.memory), and out-of-memory
errors that name the option to lower."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lth_jax import memory, models, scores
from lth_jax.errors import LthError
from lth_jax.train import Steps, create_state, init_variables
from lth_jax.trainer import Trainer


@pytest.fixture(scope="module")
def setup():
    model = models.get("mlp", num_classes=10, widths=(256, 256))
    v = init_variables(model, jax.random.key(0), (40,))
    stacked = jax.tree_util.tree_map(lambda a: jnp.stack([a, a * 0.5]), v)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 40)).astype(np.float32)
    y = rng.integers(0, 10, 3000).astype(np.int32)
    return model, v, stacked, x, y, (lambda vv, xb: model.apply(vv, xb, train=False))


def test_the_chunk_fits_the_free_memory_and_grows_with_it(setup):
    model, _, stacked, x, y, apply_fn = setup
    xj, yj = jnp.asarray(x), jnp.asarray(y)

    def compile_at(c):
        return scores._ensemble.lower(stacked, xj, yj, score_fn=scores.grand, apply_fn=apply_fn, chunk_size=c,
                                      model=model).compile()
    need_512 = memory.program_bytes(compile_at(512))
    chosen = {}
    for free in (need_512, 2 * need_512, 8 * need_512):
        c = memory.auto_chunk(compile_at, len(x), 1024, free=free)
        assert memory.program_bytes(compile_at(c)) <= 0.5 * free, (free, c)
        chosen[free] = c
    assert chosen[need_512] < chosen[2 * need_512] < chosen[8 * need_512] <= len(x)
    assert 128 <= chosen[2 * need_512] <= 1024


def test_without_memory_statistics_the_default_is_used_and_nothing_compiles(setup):
    def never(c):
        raise AssertionError("compiled although the device reports no memory")
    assert jax.devices()[0].memory_stats() is None  # the CPU: no statistics
    assert memory.free_bytes() is None
    assert memory.auto_chunk(never, 3000, 1024) == 1024
    assert memory.auto_chunk(never, 300, 1024) == 300


def test_scores_and_evaluation_with_a_chosen_chunk_equal_a_given_one(setup, monkeypatch):
    model, v, stacked, x, y, apply_fn = setup
    given = np.asarray(scores.ensemble(scores.grand, apply_fn, stacked, x, y, chunk_size=1000, model=model))
    monkeypatch.setattr(memory, "free_bytes", lambda device=None: 4_000_000)  # a small device
    chosen = np.asarray(scores.ensemble(scores.grand, apply_fn, stacked, x, y, model=model))
    np.testing.assert_allclose(chosen, given, rtol=1e-5)

    tx = optax.sgd(0.1)
    state = create_state(v["params"], {}, tx)
    steps = Steps(model, tx)
    auto = Trainer(steps, x, y, {"test": (x, y)}, batch_size=50, seed=0, eval_batch_size=None)
    fixed = Trainer(steps, x, y, {"test": (x, y)}, batch_size=50, seed=0, eval_batch_size=1000)
    a, b = auto.evaluate(state), fixed.evaluate(state)
    assert 1 <= auto.eval_batch_size < 3000
    np.testing.assert_allclose(a["test_loss"], b["test_loss"], rtol=1e-5)
    assert a["test_accuracy"] == b["test_accuracy"]


def test_out_of_memory_names_the_option_and_other_errors_pass():
    with pytest.raises(LthError, match=r"out of device memory scoring 4096 examples at a time .*lower diet.chunk_size"):
        with memory.names_option("scoring 4096 examples at a time", "diet.chunk_size"):
            raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 9 GiB")
    with pytest.raises(ValueError, match="not memory"):
        with memory.names_option("scoring", "diet.chunk_size"):
            raise ValueError("not memory")
