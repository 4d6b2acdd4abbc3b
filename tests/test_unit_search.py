"""experiment = "unit_search": random unit masks trained as one program, next to structured magnitude."""
import json
import os

import numpy as np
import pytest

from configs import unit_search_mnist1d
from lth_jax import masks, npz
from lth_jax.errors import LthError
from lth_jax.experiments import unit_search


def tiny(**over):
    c = unit_search_mnist1d.get_config()
    c.data.source.num_samples = 600
    c.data.validation_size = 100
    c.model.widths = (16, 12)
    c.train.steps = 40
    c.train.batch_size = 50
    c.train.eval_every = 10
    c.train.checkpoint_every = 20
    c.unit_search.sparsities = (0.5, 0.75)
    c.unit_search.candidates = 5
    c.unit_search.keep = 2
    c.unit_search.criterion_step = 20
    c.unit_search.seeds = 2
    for k, v in over.items():
        section, key = k.split("__")
        c[section][key] = v
    return c


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    cfg = tiny()
    workdir = str(tmp_path_factory.mktemp("unit_search"))
    return cfg, workdir, unit_search.run(cfg, workdir, progress=False)


def test_members_choices_and_files(finished):
    cfg, workdir, summary = finished
    assert summary["sparsities"] == [0.5, 0.75] and summary["hidden_units"] == 28
    for name in ("summary.json", "dense/parents.npz", "plots/unit_search.png", "plots/criterion.png"):
        assert os.path.exists(os.path.join(workdir, name)), name
    res = json.load(open(os.path.join(workdir, "sparsity", "0.75", "result.json")))
    m = res["members"]
    assert len(m) == 2 * (5 + 2 + 1)  # per replicate: 5 candidates, 2 fresh random masks, magnitude
    for name, member in m.items():  # 25% of 16 and of 12 units kept, in every member
        assert [u.count("1") for u in member["units"].values()] == [4, 3], name
    for r in (0, 1):
        crit = {c: m[f"candidate_{c}/{r}"]["criterion"] for c in range(5)}
        searched = [n for n in res["chosen"]["searched"] if n.endswith(f"/{r}")]
        assert sorted(crit[int(n.split("_")[1].split("/")[0])] for n in searched) == sorted(crit.values())[:2]
    assert res["chosen"]["random"] == ["random_0/0", "random_1/0", "random_0/1", "random_1/1"]
    assert res["chosen"]["magnitude"] == ["magnitude/0", "magnitude/1"]
    step20 = [json.loads(l) for l in open(os.path.join(workdir, "sparsity", "0.75", "metrics.jsonl"))][1]
    assert step20["step"] == 20 and m["candidate_3/1"]["criterion"] == pytest.approx(step20["val_loss"][8 + 3])


def test_the_random_set_is_fresh_masks_the_search_never_saw(finished):
    """The random set must not overlap the searched one (nor be drawn from its pool), or the comparison
    leans towards "equal"."""
    _, workdir, _ = finished
    for s in ("0.5", "0.75"):
        res = json.load(open(os.path.join(workdir, "sparsity", s, "result.json")))
        searched, random = set(res["chosen"]["searched"]), set(res["chosen"]["random"])
        assert not searched & random
        assert not any(name.startswith("candidate_") for name in random)
        units = {n: res["members"][n]["units"] for n in res["members"]}
        for name in random:  # a mask of its own, at the same per-layer counts as the candidates
            assert [u.count("1") for u in units[name].values()] == [u.count("1") for u in units["candidate_0/0"].values()]
            assert "criterion" not in res["members"][name]


def test_magnitude_members_keep_the_largest_incoming_l1_norms(finished):
    cfg, workdir, _ = finished
    us = unit_search.UnitSearch(cfg, workdir + "_unused", progress=False)
    from lth_jax import ensemble
    like = ensemble.stack([us.init(r)["params"] for r in (0, 1)])
    parents = npz.load(os.path.join(workdir, "dense", "parents.npz"), like)
    res = json.load(open(os.path.join(workdir, "sparsity", "0.5", "result.json")))
    for r in (0, 1):
        kernel = np.asarray(ensemble.take(parents, r)["dense_0"]["kernel"])
        top = set(np.argsort(-np.abs(kernel).sum(0))[:8])
        kept = {i for i, b in enumerate(res["members"][f"magnitude/{r}"]["units"]["dense_0"]) if b == "1"}
        assert kept == top


def test_unit_masks_become_weight_masks_that_silence_the_units():
    cfg = tiny()
    us = unit_search.UnitSearch(cfg, "/tmp/unused_unit_search", progress=False)
    v = us.init(0)
    um = unit_search.sample_unit_masks(np.random.default_rng(0), us.widths, 0.5, "layerwise", 1)
    mask = us.weight_mask(v["params"], um)
    keep0, keep1 = um[("dense_0",)], um[("dense_1",)]
    assert keep0.sum() == 8 and keep1.sum() == 6
    k1 = np.asarray(mask["dense_1"]["kernel"])
    assert not k1[~keep0].any() and not k1[:, ~keep1].any() and k1[np.ix_(keep0, keep1)].all()
    assert not np.asarray(mask["output"]["kernel"])[~keep1].any()
    assert masks.count(mask)[0] < masks.count(masks.ones_like(v["params"]))[0]


def test_global_scope_keeps_a_floor_per_layer():
    rng = np.random.default_rng(1)
    widths = {("a",): 40, ("b",): 4}
    for _ in range(20):
        um = unit_search.sample_unit_masks(rng, widths, 0.9, "global", 2)
        assert sum(k.sum() for k in um.values()) == 5 and um[("b",)].sum() >= 2  # 4 + max(1, 0.4)
    with pytest.raises(LthError, match="min_units"):
        unit_search.sample_unit_masks(rng, widths, 0.9, "global", 3)


@pytest.mark.parametrize("key, value, message", [
    ("unit_search__sparsities", (0.5, 1.0), "node sparsity must be in"),
    ("unit_search__keep", 9, "unit_search.keep"),
    ("unit_search__criterion_step", 15, "criterion_step"),
    ("unit_search__scope", "everywhere", "unit_search.scope"),
])
def test_bad_config_is_one_line(key, value, message):
    with pytest.raises(LthError, match=message) as e:
        unit_search.check_config(tiny(**{key: value}))
    assert "\n" not in str(e.value)


@pytest.mark.usefixtures("quick_compile")  # compile-bound: see conftest
def test_conv6_channels_reach_the_flattened_dense_layer():
    """The CIFAR config's model: channel masks of conv_5 become rows of dense_0 (NHWC flatten)."""
    import jax
    import jax.numpy as jnp
    from configs import unit_search_conv6_cifar10
    from lth_jax import units
    from lth_jax.experiments import common
    cfg = unit_search_conv6_cifar10.get_config()
    unit_search.check_config(cfg)
    model = common.build_model(cfg, num_classes=10)
    x = jnp.ones((2, 8, 8, 3))
    variables = jax.jit(model.init)(jax.random.key(0, impl="rbg"), x)
    fl = units.flow(model, variables, x)
    hidden = [g[0] for g in fl.groups if any(fl.consumers[layer] for layer in g)]
    assert hidden == [f"conv_{i}" for i in range(6)] + ["dense_0", "dense_1"]
    keep = np.arange(256) % 4 != 0
    mask = units.to_weights(variables["params"], {"conv_5": keep}, fl)
    rows = np.asarray(mask["dense_0"]["kernel"])[:, 0]
    assert rows.tolist() == np.tile(keep, len(rows) // 256).tolist()
    assert not np.asarray(mask["conv_5"]["kernel"])[..., ~keep].any()
