import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lth_jax import masks, pruning
from lth_jax.errors import LthError


def make_params(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "dense_0": {"kernel": jnp.asarray(rng.normal(size=(6, 5)), jnp.float32),
                    "bias": jnp.asarray(rng.normal(size=5), jnp.float32)},
        "dense_1": {"kernel": jnp.asarray(rng.normal(size=(5, 4)) * 3, jnp.float32),
                    "bias": jnp.zeros(4)},
        "output": {"kernel": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32), "bias": jnp.zeros(3)},
    }


def test_names_prunable_and_density():
    params = make_params()
    assert list(masks.named_leaves(params)) == [
        "dense_0/bias", "dense_0/kernel", "dense_1/bias", "dense_1/kernel", "output/bias", "output/kernel"]
    which = masks.prunable(params)
    assert which["dense_0"]["kernel"] and not which["dense_0"]["bias"]
    which = masks.prunable(params, exclude=["output/kernel"])
    assert not which["output"]["kernel"]
    mask = masks.ones_like(params)
    assert masks.density(mask) == 1.0
    mask["dense_0"]["kernel"] = mask["dense_0"]["kernel"].at[0].set(False)  # 5 of 62 kernel weights
    assert masks.density(mask) == pytest.approx(57 / 62)
    assert masks.count(mask) == (57 + 12, 62 + 12)
    d = masks.densities(mask)
    assert d["per_leaf"]["dense_0/kernel"] == pytest.approx(25 / 30)
    assert d["all"] == pytest.approx(69 / 74)


def test_apply_zeroes_exactly():
    params = make_params()
    mask = pruning.magnitude(params, masks.ones_like(params), 0.5)
    pruned = masks.apply(params, mask)
    for p, m in zip(jax.tree_util.tree_leaves(pruned), jax.tree_util.tree_leaves(mask)):
        assert np.all(np.asarray(p)[~np.asarray(m)] == 0.0)


@pytest.mark.accelerator
def test_global_magnitude_removes_smallest_across_layers():
    params = make_params()
    mask = pruning.magnitude(params, masks.ones_like(params), 0.2, scope="global")
    kernels = np.concatenate([np.abs(np.ravel(params[k]["kernel"])) for k in ("dense_0", "dense_1", "output")])
    kept = np.concatenate([np.ravel(mask[k]["kernel"]) for k in ("dense_0", "dense_1", "output")])
    n_remove = int(np.floor(0.2 * 62 + 0.5))
    assert (~kept).sum() == n_remove
    assert kernels[~kept].max() <= kernels[kept].min()
    # dense_1 weights are 3x larger, so it loses fewer than its share
    assert np.mean(mask["dense_1"]["kernel"]) > np.mean(mask["dense_0"]["kernel"])
    assert np.all(mask["dense_0"]["bias"])


def test_layerwise_with_override_and_nesting():
    params = make_params()
    mask = masks.ones_like(params)
    overrides = {"output/kernel": 0.1}
    counts = {"dense_0/kernel": 30, "dense_1/kernel": 20, "output/kernel": 12}
    for level in range(1, 6):
        new = pruning.magnitude(params, mask, 0.2, scope="layerwise", layer_fractions=overrides)
        for old_leaf, new_leaf in zip(jax.tree_util.tree_leaves(mask), jax.tree_util.tree_leaves(new)):
            assert not np.any(np.asarray(new_leaf) & ~np.asarray(old_leaf)), "a pruned weight came back"
        for name, leaf in masks.named_leaves(new).items():
            if name in counts:
                f = overrides.get(name, 0.2)
                counts[name] -= int(np.floor(f * counts[name] + 0.5))
                assert int(np.sum(leaf)) == counts[name], (level, name)
        mask = new


def test_ties_remove_first_in_order():
    params = {"a": {"kernel": jnp.ones((2, 5))}}
    mask = pruning.magnitude(params, masks.ones_like(params), 0.3)
    assert np.asarray(mask["a"]["kernel"]).ravel().tolist() == [False] * 3 + [True] * 7


@pytest.mark.accelerator
def test_magnitude_is_jittable():
    params = make_params()
    f = jax.jit(lambda p, m, frac: pruning.magnitude(p, m, frac))
    np.testing.assert_array_equal(f(params, masks.ones_like(params), 0.2)["dense_0"]["kernel"],
                                  pruning.magnitude(params, masks.ones_like(params), 0.2)["dense_0"]["kernel"])


def test_random_and_random_like():
    params = make_params()
    mask = pruning.magnitude(params, masks.ones_like(params), 0.5, scope="global")
    rand = pruning.random(jax.random.key(0), mask, 0.5)
    assert int(np.sum(rand["dense_0"]["kernel"])) == int(np.sum(mask["dense_0"]["kernel"])) - int(
        np.floor(0.5 * np.sum(mask["dense_0"]["kernel"]) + 0.5))
    assert not np.any(np.asarray(rand["dense_0"]["kernel"]) & ~np.asarray(mask["dense_0"]["kernel"]))
    like = pruning.random_like(jax.random.key(1), mask)
    for name, leaf in masks.named_leaves(like).items():
        assert int(np.sum(leaf)) == int(np.sum(masks.named_leaves(mask)[name])), name
    assert not np.array_equal(like["dense_0"]["kernel"], mask["dense_0"]["kernel"])


def test_bad_fractions_and_names():
    params = make_params()
    with pytest.raises(LthError, match=r"\[0, 1\)"):
        pruning.magnitude(params, masks.ones_like(params), 1.0)
    with pytest.raises(LthError, match="not a parameter"):
        pruning.magnitude(params, masks.ones_like(params), 0.2, layer_fractions={"nope/kernel": 0.1})
    with pytest.raises(LthError, match="scope"):
        pruning.magnitude(params, masks.ones_like(params), 0.2, scope="local")


def test_mask_save_load_roundtrip(tmp_path):
    params = make_params()
    mask = pruning.magnitude(params, masks.ones_like(params), 0.3)
    path = str(tmp_path / "mask.npz")
    masks.save(path, mask)
    with np.load(path) as f:
        assert "dense_0/kernel" in f.files and f["dense_0/kernel"].dtype == bool
    back = masks.load(path, params)
    for a, b in zip(jax.tree_util.tree_leaves(mask), jax.tree_util.tree_leaves(back)):
        np.testing.assert_array_equal(a, b)
    other = {"x": {"kernel": jnp.ones((2, 2))}}
    with pytest.raises(LthError, match="does not match the model"):
        masks.load(path, other)


# ---- target densities and layer distributions ---------------------------------------------------
def three_layers():
    keys = jax.random.split(jax.random.key(3), 3)
    return {"a": {"kernel": jax.random.normal(keys[0], (40, 30)), "bias": jnp.ones(30)},
            "b": {"kernel": jax.random.normal(keys[1], (30, 20))},
            "c": {"kernel": jax.random.normal(keys[2], (3, 3, 4, 2))}}


def kept_per_leaf(mask):
    return {n: int(np.sum(m)) for n, m in masks.named_leaves(mask).items()}


def test_target_density_global_keeps_the_exact_count_of_largest_weights():
    params = three_layers()
    mask = pruning.magnitude(params, masks.ones_like(params), target_density=0.1)
    n = 40 * 30 + 30 * 20 + 3 * 3 * 4 * 2
    assert sum(v for k, v in kept_per_leaf(mask).items() if k.endswith("kernel")) == int(np.floor(0.1 * n + 0.5))
    assert kept_per_leaf(mask)["a/bias"] == 30
    kept = np.concatenate([np.abs(np.asarray(p))[np.asarray(m)] for p, m in
                           zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(mask)) if p.ndim >= 2])
    dropped = np.concatenate([np.abs(np.asarray(p))[~np.asarray(m)] for p, m in
                              zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(mask)) if p.ndim >= 2])
    assert kept.min() >= dropped.max()
    again = pruning.magnitude(params, mask, target_density=0.05)  # nested
    assert all(np.all(np.asarray(b) <= np.asarray(a)) for a, b in
               zip(jax.tree_util.tree_leaves(mask), jax.tree_util.tree_leaves(again)))
    with pytest.raises(LthError, match="above the mask's density"):
        pruning.magnitude(params, again, target_density=0.2)


def test_uniform_and_erk_distributions():
    params = three_layers()
    ones = masks.ones_like(params)
    uniform = kept_per_leaf(pruning.magnitude(params, ones, target_density=0.25, distribution="uniform"))
    assert (uniform["a/kernel"], uniform["b/kernel"], uniform["c/kernel"]) == (300, 150, 18)
    shapes = {"a/kernel": (40, 30), "b/kernel": (30, 20), "c/kernel": (3, 3, 4, 2)}
    d = pruning.layer_densities(shapes, 0.6, "erk")
    assert d["c/kernel"] == 1.0  # the small conv kernel would pass 1: kept dense
    assert d["a/kernel"] / d["b/kernel"] == pytest.approx((70 / 1200) / (50 / 600))
    n = {k: np.prod(s) for k, s in shapes.items()}
    assert sum(d[k] * n[k] for k in n) == pytest.approx(0.6 * sum(n.values()))
    erk = kept_per_leaf(pruning.random(jax.random.key(0), ones, target_density=0.6, distribution="erk"))
    assert all(erk[k] == int(np.floor(d[k] * n[k] + 0.5)) for k in n)
    with pytest.raises(LthError, match="unknown distribution"):
        pruning.magnitude(params, ones, target_density=0.5, distribution="er")


def test_traced_fraction_is_clipped():
    params = three_layers()
    ones = masks.ones_like(params)
    prune = jax.jit(lambda f: pruning.magnitude(params, ones, f))
    assert masks.density(prune(20.0)) == 0.0 and masks.density(prune(-3.0)) == 1.0
    assert masks.density(prune(0.5)) == pytest.approx(0.5, abs=1e-3)
    with pytest.raises(LthError, match=r"must be in \[0, 1\)"):
        pruning.magnitude(params, ones, 20.0)


def test_activate_while_pruning_removes_negative_weights_that_moved_least():
    start = {"a": {"kernel": jnp.array([[0.5, -0.2], [0.1, -0.9]])}, "b": {"kernel": jnp.array([[-0.3], [0.4]])}}
    end = {"a": {"kernel": jnp.array([[0.6, -0.25], [-0.1, -0.3]])}, "b": {"kernel": jnp.array([[-0.31], [0.2]])}}
    mask = masks.ones_like(start)
    # negative at the end: a[0,1] (moved 0.05), a[1,0] (0.2), a[1,1] (0.6), b[0,0] (0.01)
    two = pruning.activate_while_pruning(end, start, mask, 2)
    assert np.asarray(two["a"]["kernel"]).tolist() == [[True, False], [True, True]]
    assert np.asarray(two["b"]["kernel"]).tolist() == [[False], [True]]
    every = pruning.activate_while_pruning(end, start, mask, 10)  # only the 4 negative ones can go
    assert int(sum(np.sum(~np.asarray(m)) for m in jax.tree_util.tree_leaves(every))) == 4
    dead = {"a": {"kernel": jnp.array([[True, False], [True, True]])}, "b": {"kernel": jnp.ones((2, 1), bool)}}
    again = pruning.activate_while_pruning(end, start, dead, 1)  # a dead weight is never counted
    assert np.asarray(again["b"]["kernel"]).tolist() == [[False], [True]]


def test_float64_scores_are_ranked_in_float64():
    """Under x64, scores beyond float32's range (or closer than its precision)
    keep their float64 order: a float32 cast would make them ties, broken by position."""
    rng = np.random.default_rng(0)
    shapes = {"a": (12, 10), "b": (10, 8)}
    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)  # restored below: nothing leaks into other tests
    try:
        exponents = {k: rng.permutation(np.prod(s)).reshape(s) for k, s in shapes.items()}
        scores = {k: {"kernel": jnp.asarray(1e39 * 1.5 ** e)} for k, e in exponents.items()}  # all above 3.4e38
        ones = masks.ones_like(scores)
        flat_scores = np.concatenate([np.ravel(scores[k]["kernel"]) for k in shapes])
        top = np.argsort(-flat_scores, kind="stable")[:int(np.floor(0.3 * flat_scores.size + 0.5))]
        want = np.zeros(flat_scores.size, bool)
        want[top] = True
        for keep in (pruning.to_density(scores, ones, 0.3), pruning.magnitude(scores, ones, 0.7)):
            assert np.array_equal(np.concatenate([np.ravel(keep[k]["kernel"]) for k in shapes]), want)
        uniform = pruning.to_density(scores, ones, 0.3, "uniform")
        for k in shapes:
            kept = np.asarray(scores[k]["kernel"])[np.asarray(uniform[k]["kernel"])]
            assert kept.min() > np.asarray(scores[k]["kernel"])[~np.asarray(uniform[k]["kernel"])].max()
        start = {"a": {"kernel": jnp.zeros((1, 4))}}
        end = {"a": {"kernel": -1.0 - 1e-12 * jnp.arange(4.0, 0.0, -1.0)[None]}}  # ties in float32
        gone = pruning.activate_while_pruning(end, start, masks.ones_like(start), 1)
        assert np.asarray(gone["a"]["kernel"]).tolist() == [[True, True, True, False]]
    finally:
        jax.config.update("jax_enable_x64", before)
