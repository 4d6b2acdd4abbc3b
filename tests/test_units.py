"""Unit masks follow the model's data flow, never the order of names."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lth_jax import masks, models, units
from lth_jax.errors import LthError


class EncDecOut(nn.Module):
    """Names whose sorted order (dec, enc, out) is not the data flow (enc, dec, out)."""
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(6, name="enc")(x))
        x = nn.relu(nn.Dense(5, name="dec")(x))
        return nn.Dense(3, name="out")(x)


class ConvFlatten(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(2, (3, 3), name="conv")(x))
        return nn.Dense(3, name="head")(x.reshape(x.shape[0], -1))


class Concat(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = jnp.concatenate([nn.Dense(4, name="a")(x), nn.Dense(4, name="b")(x)], -1)
        return nn.Dense(2, name="out")(x)


def zeroed(model, variables, x, where: dict):
    """The model's output with the given channels of the given layers' outputs set to 0."""
    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        name = "/".join(context.module.path)
        if context.method_name == "__call__" and name in where:
            out = out * where[name].astype(out.dtype)
        return out
    with nn.intercept_methods(interceptor):
        return model.apply(variables, x)


def test_enc_dec_out_masks_the_layer_that_reads_the_units():
    model, x = EncDecOut(), jax.random.normal(jax.random.key(1), (4, 7))
    variables = model.init(jax.random.key(0), x)
    fl = units.flow(model, variables, x)
    assert fl.consumers == {"enc": ("dec",), "dec": ("out",), "out": ()}
    keep = np.array([True, False, True, True, False, True])
    mask = units.to_weights(variables["params"], {"enc": keep}, fl)
    np.testing.assert_array_equal(mask["enc"]["kernel"], np.tile(keep, (7, 1)))
    np.testing.assert_array_equal(mask["enc"]["bias"], keep)
    np.testing.assert_array_equal(mask["dec"]["kernel"], np.tile(keep[:, None], (1, 5)))
    assert np.all(mask["out"]["kernel"])  # the sorted-name pairing cleared half of it
    pruned = {"params": masks.apply(variables["params"], mask)}
    np.testing.assert_allclose(model.apply(pruned, x), zeroed(model, variables, x, {"enc": jnp.asarray(keep)}),
                               rtol=1e-6, atol=1e-6)
    assert units.Flow.from_consumers(variables["params"], {"enc": ["dec"], "dec": ["out"]}).consumers == fl.consumers


def test_conv_then_flatten_reads_every_position_of_a_channel():
    model, x = ConvFlatten(), jax.random.normal(jax.random.key(1), (2, 2, 2, 1))
    variables = model.init(jax.random.key(0), x)
    mask = units.to_weights(variables["params"], {"conv": np.array([False, True])}, units.flow(model, variables, x))
    assert not np.any(mask["conv"]["kernel"][..., 0]) and np.all(mask["conv"]["kernel"][..., 1])
    assert np.asarray(mask["head"]["kernel"])[:, 0].tolist() == [False, True] * 4  # NHWC: channel fastest


@pytest.mark.usefixtures("quick_compile")  # compile-bound: see conftest
def test_resnet20_residual_channels_are_tied_and_batchnorm_masked():
    model = models.get("resnet20", num_classes=10, width=4)
    x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
    variables = jax.jit(model.init)(jax.random.key(0, impl="rbg"), x)  # threefry init compiles 4x slower
    fl = units.flow(model, variables, x)
    stage0 = ("stem_conv", "block_0_0/conv_1", "block_0_1/conv_1", "block_0_2/conv_1")
    stage1 = ("block_1_0/conv_1", "block_1_0/shortcut_conv", "block_1_1/conv_1", "block_1_2/conv_1")
    groups = {frozenset(g) for g in fl.groups}
    assert frozenset(stage0) in groups and frozenset(stage1) in groups
    assert frozenset({"block_0_0/conv_0"}) in groups
    # through the identity shortcuts the stem's channels reach every block of stage 0 and stage 1's entry
    assert set(fl.consumers["stem_conv"]) == {"block_0_0/conv_0", "block_0_1/conv_0", "block_0_2/conv_0",
                                              "block_1_0/conv_0", "block_1_0/shortcut_conv"}
    assert fl.norms["block_1_0/shortcut_conv"] == ("block_1_0/shortcut_bn",)
    keep = np.array([True, False, True, False])
    mask = units.to_weights(variables["params"], {"block_0_1/conv_1": keep}, fl)  # one member: the whole group
    p = mask
    assert not np.any(p["stem_conv"]["kernel"][..., 1]) and not np.any(p["block_0_2"]["conv_1"]["kernel"][..., 3])
    assert not p["stem_bn"]["scale"][1] and not p["block_0_0"]["bn_1"]["bias"][3]
    assert not np.any(p["block_1_0"]["conv_0"]["kernel"][:, :, 1, :])  # stage 1 reads the tied stream
    pruned = {**variables, "params": masks.apply(variables["params"], mask)}
    where = {n: jnp.asarray(keep) for n in ("stem_bn", "block_0_0/bn_1", "block_0_1/bn_1", "block_0_2/bn_1")}
    np.testing.assert_allclose(model.apply(pruned, x), zeroed(model, variables, x, where), rtol=1e-5, atol=1e-5)
    jitted = jax.jit(lambda k: units.to_weights(variables["params"], {"stem_conv": k}, fl))(jnp.asarray(keep))
    for a, b in zip(jax.tree_util.tree_leaves(jitted), jax.tree_util.tree_leaves(mask)):
        np.testing.assert_array_equal(a, b)


def test_concatenation_and_bad_unit_masks_are_refused():
    model, x = Concat(), jnp.ones((2, 3))
    variables = model.init(jax.random.key(0), x)
    fl = units.flow(model, variables, x)
    with pytest.raises(LthError, match="concatenated"):
        units.to_weights(variables["params"], {"a": np.ones(4, bool)}, fl)
    model, x = EncDecOut(), jnp.ones((2, 7))
    variables = model.init(jax.random.key(0), x)
    fl = units.flow(model, variables, x)
    with pytest.raises(LthError, match="not a layer with a kernel"):
        units.to_weights(variables["params"], {"nope": np.ones(6, bool)}, fl)
    with pytest.raises(LthError, match=r"has shape \(5,\), the layer has 6 units"):
        units.to_weights(variables["params"], {"enc": np.ones(5, bool)}, fl)
    with pytest.raises(LthError, match="boolean"):
        units.to_weights(variables["params"], {"enc": np.ones(6)}, fl)


def test_structured_magnitude_removes_the_weakest_units_of_every_hidden_layer():
    model = EncDecOut()
    x = jnp.ones((2, 4))
    params = model.init(jax.random.key(0), x)["params"]
    fl = units.flow(model, {"params": params}, x)
    assert sorted(g[0] for g in units.hidden_groups(fl)) == ["dec", "enc"]  # "out" feeds nothing
    mask = masks.ones_like(params)
    mask = units.to_weights(params, {"enc": np.array([True] * 5 + [False])}, fl, mask)  # unit 5 already gone
    new = jax.jit(lambda p, m: units.magnitude(p, m, 0.4, fl))(params, mask)
    norms = {k: np.abs(np.asarray(params[k]["kernel"])).sum(0) for k in ("enc", "dec")}
    # enc: 5 alive, removes floor(0.4 * 5 + 0.5) = 2 of them, the smallest L1 norms among units 0-4
    expect_enc = np.zeros(6, bool)
    expect_enc[np.argsort(-norms["enc"][:5], kind="stable")[:3]] = True
    alive = units.alive_units(new, fl)
    np.testing.assert_array_equal(np.asarray(alive["enc"]), expect_enc)
    expect_dec = np.zeros(5, bool)  # 5 alive, 2 removed; the norms see enc's removed input rows as 0
    kept_rows = np.asarray(units.alive_units(mask, fl)["enc"])
    dec_norm = (np.abs(np.asarray(params["dec"]["kernel"])) * kept_rows[:, None]).sum(0)
    expect_dec[np.argsort(-dec_norm, kind="stable")[:3]] = True
    np.testing.assert_array_equal(np.asarray(alive["dec"]), expect_dec)
    np.testing.assert_array_equal(np.asarray(new["dec"]["kernel"]), expect_enc[:, None] & expect_dec[None, :])
    assert bool(jnp.all(~new["enc"]["kernel"] | mask["enc"]["kernel"]))  # nested
    # never below one unit
    last = units.magnitude(params, new, 0.99, fl)
    assert [int(a.sum()) for a in units.alive_units(last, fl).values()] == [1, 1]


def test_random_units_keep_each_layers_unit_count():
    model = EncDecOut()
    x = jnp.ones((2, 4))
    params = model.init(jax.random.key(0), x)["params"]
    fl = units.flow(model, {"params": params}, x)
    ticket = units.magnitude(params, masks.ones_like(params), 0.5, fl)
    a = jax.jit(lambda k, m: units.random_like(k, m, fl))(jax.random.key(1), ticket)
    b = units.random_like(jax.random.key(2), ticket, fl)
    counts = {k: int(v.sum()) for k, v in units.alive_units(ticket, fl).items()}
    for drawn in (a, b):
        assert {k: int(v.sum()) for k, v in units.alive_units(drawn, fl).items()} == counts
    assert any(bool(jnp.any(u != v)) for u, v in zip(units.alive_units(a, fl).values(),
                                                       units.alive_units(b, fl).values()))


def test_structured_magnitude_on_conv_channels_follows_the_flatten():
    model = ConvFlatten()
    x = jnp.ones((2, 4, 4, 1))
    params = model.init(jax.random.key(3), x)["params"]
    fl = units.flow(model, {"params": params}, x)
    new = units.magnitude(params, masks.ones_like(params), 0.5, fl)  # 2 channels: 1 removed
    norms = np.abs(np.asarray(params["conv"]["kernel"])).reshape(-1, 2).sum(0)
    keep = np.arange(2) == int(np.argmax(norms))
    np.testing.assert_array_equal(np.asarray(new["conv"]["kernel"]).all((0, 1, 2)), keep)
    rows = np.asarray(new["head"]["kernel"]).all(1)  # NHWC flatten: channel j is every row with index % 2 == j
    np.testing.assert_array_equal(rows, np.tile(keep, 16))
