"""Model zoo: registry, shapes, parameter counts, names, BatchNorm, fast conv."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from lth_jax import models
from lth_jax.errors import LthError
from lth_jax.models import common, fast_conv, resnet

ALL = [
    "conv2", "conv4", "conv6", "lenet_300_100", "mlp",
    "resnet18", "resnet20", "resnet56", "vgg11", "vgg16", "vgg19",
]
BN = {"vgg11", "vgg16", "vgg19", "resnet20", "resnet56", "resnet18"}
MNIST = (28, 28, 1)
CIFAR = (32, 32, 3)

# Parameter counts (params collection only; BN running statistics live in
# batch_stats and are not counted, as torch's `parameters()`).
PARAMS_CIFAR10 = {
    # Frankle & Carbin 2019, Table 1: 4.3M / 2.4M / 1.7M. Conv-2 and Conv-4
    # match; their 1.7M for Conv-6 disagrees with the architecture they
    # describe (fc input 4*4*256), which gives 2,262,602 (see conv.py).
    "conv2": 4_301_642,
    "conv4": 2_425_930,
    "conv6": 2_262_602,
    # open_lth cifar_vgg_{11,16,19}: conv (with bias) + BN, fc 512 -> 10.
    "vgg11": 9_231_114,
    "vgg16": 14_728_266,
    "vgg19": 20_040_522,
    # open_lth cifar_resnet_20: 272,474 with its 1x1 conv + BN shortcuts
    # (the "0.27M" of He et al. 2016 is the option-A count, 269,722 here would
    # need parameter-free shortcuts); resnet56 computed the same way.
    "resnet20": 272_474,
    "resnet56": 855_770,
    # Low-resolution ResNet-18 of the data-diet paper; the same count as the
    # common PyTorch CIFAR ResNet-18 (kuangliu/pytorch-cifar): 11,173,962.
    "resnet18": 11_173_962,
    "lenet_300_100": 953_010,  # 3072-300-100-10
    "mlp": 318_410,  # 3072-100-100-10
}
PARAMS_MNIST = {
    "lenet_300_100": 266_610,  # Frankle & Carbin 2019, open_lth mnist_lenet_300_100
    "mlp": 89_610,  # 784-100-100-10
    "conv6": 1_802_698,
}


def _shape(name):
    return CIFAR if name.startswith(("vgg", "resnet")) else MNIST


def _rbg_key(seed=0):
    """A key for the inits this file executes. XLA:CPU takes ~1 s per
    parameter shape to compile threefry (the default) on a 2-core machine;
    the "rbg" generator compiles several times faster. Inits are the same
    code either way."""
    return jax.random.key(seed, impl="rbg")


def _param_shapes(name, shape, num_classes=10, **kw):
    model = models.get(name, num_classes, **kw)
    return jax.eval_shape(
        lambda x: model.init(jax.random.PRNGKey(0), x, train=False), jnp.zeros((1,) + shape)
    )


# ---------------------------------------------------------------- registry


def test_names():
    assert models.names() == sorted(ALL)


def test_unknown_name_is_one_line_lth_error():
    with pytest.raises(LthError) as e:
        models.get("resnet99", 10)
    msg = str(e.value)
    assert "\n" not in msg and "resnet99" in msg and "resnet20" in msg


@pytest.mark.parametrize(
    "kw",
    [{"num_classes": 0}, {"num_classes": 2.5}, {"num_classes": 10, "widths": (10,)},
     {"num_classes": 10, "depth": 3}],
)
def test_bad_arguments_raise_lth_error(kw):
    with pytest.raises(LthError) as e:
        models.get("resnet20", **kw)
    assert "\n" not in str(e.value)


def test_bad_widths_raise_lth_error():
    with pytest.raises(LthError):
        models.get("mlp", 10, widths=(10, -1))
    with pytest.raises(LthError):
        models.get("vgg11", 10, width=0)


def test_keywords_pass_through():
    v = _param_shapes("mlp", MNIST, widths=[7, 5])
    assert v["params"]["dense_1"]["kernel"].shape == (7, 5)
    v = _param_shapes("resnet20", CIFAR, width=8)
    assert v["params"]["stem_conv"]["kernel"].shape == (3, 3, 3, 8)
    assert v["params"]["output"]["kernel"].shape == (32, 10)
    v = _param_shapes("vgg11", CIFAR, width=32)
    assert v["params"]["output"]["kernel"].shape == (256, 10)


# ---------------------------------------------------------------- counts


@pytest.mark.parametrize("name", ALL)
def test_param_count_cifar10(name):
    v = _param_shapes(name, CIFAR)
    assert models.num_params(v["params"]) == PARAMS_CIFAR10[name]


@pytest.mark.parametrize("name", sorted(PARAMS_MNIST))
def test_param_count_mnist(name):
    v = _param_shapes(name, MNIST)
    assert models.num_params(v["params"]) == PARAMS_MNIST[name]


def test_lenet_init_is_gaussian_glorot():
    model = models.get("lenet_300_100", 10)
    x = jnp.zeros((1,) + MNIST)
    params = jax.jit(lambda k: model.init(k, x))(_rbg_key())["params"]
    k = np.asarray(params["dense_0"]["kernel"])
    assert k.shape == (784, 300)
    np.testing.assert_allclose(k.std(), np.sqrt(2.0 / (784 + 300)), rtol=0.03)
    assert not np.any(np.asarray(params["dense_0"]["bias"]))


# ---------------------------------------------------------------- forward


def _variables(model, x, seed=0):
    """Variables with init's exact tree and shapes (the init code is traced
    by eval_shape) but numpy values: executing the init of eleven models
    would compile a random-number kernel per parameter shape, most of this
    file's run time on a 2-core CPU. `test_lenet_init_is_gaussian_glorot` and
    `tiny_resnet` run real inits."""
    shapes = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False), x)
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        key = path[-1].key
        if key == "var":
            return jnp.ones(leaf.shape, leaf.dtype)
        if key == "mean":
            return jnp.zeros(leaf.shape, leaf.dtype)
        fan_in = np.prod(leaf.shape[:-1]) if len(leaf.shape) > 1 else 1
        return jnp.asarray(rng.normal(size=leaf.shape) / np.sqrt(fan_in), leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)


@pytest.mark.parametrize("name", ALL)
def test_forward_train_and_eval(name):
    num_classes = 7
    model = models.get(name, num_classes)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2,) + _shape(name)), jnp.float32)
    variables = _variables(model, x)
    params = variables["params"]

    # Classifier named `output`; every weight matrix is a `kernel` leaf.
    assert params["output"]["kernel"].shape[-1] == num_classes
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
    kernels = [k for k in flat if k[-1] == "kernel"]
    assert all(flat[k].ndim >= 2 for k in kernels)
    assert all(k[-1] in ("kernel", "bias", "scale") for k in flat)
    assert ("output", "kernel") in kernels

    y_eval = model.apply(variables, x, train=False)
    assert y_eval.shape == (2, num_classes)
    assert np.all(np.isfinite(y_eval))

    if name in BN:
        assert models.has_batch_norm(name)
        assert "batch_stats" in variables
        y_train, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
        assert set(updates) == {"batch_stats"}
        old = jax.tree_util.tree_leaves(variables["batch_stats"])
        new = jax.tree_util.tree_leaves(updates["batch_stats"])
        assert len(old) == len(new) > 0
        assert any(not np.allclose(a, b) for a, b in zip(old, new))
        # train mode normalises with batch statistics, eval with running ones
        assert not np.allclose(y_train, y_eval)
    else:
        assert not models.has_batch_norm(name)
        assert set(variables) == {"params"}
        y_train = model.apply(variables, x, train=True)
    assert y_train.shape == (2, num_classes)
    assert np.all(np.isfinite(y_train))


def test_mlp_flattens_any_input():
    model = models.get("mlp", 3, widths=(4,))
    x = jnp.ones((5, 2, 3, 4, 1))
    shapes = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), x)
    assert shapes["params"]["dense_0"]["kernel"].shape == (24, 4)
    assert jax.eval_shape(lambda v: model.apply(v, x, train=True), shapes).shape == (5, 3)


# ---------------------------------------------------------------- fast conv

CONV_CASES = {
    # name: (input shape, kernel shape, strides, padding, kernel dilation)
    "same_unstrided": ((2, 9, 9, 3), (3, 3, 3, 4), (1, 1), "SAME", (1, 1)),
    "same_strided": ((2, 9, 9, 3), (3, 3, 3, 4), (2, 2), "SAME", (1, 1)),
    "same_strided_even": ((2, 8, 8, 3), (3, 3, 3, 4), (2, 2), "SAME", (1, 1)),
    "valid": ((2, 9, 9, 3), (3, 3, 3, 4), (1, 1), "VALID", (1, 1)),
    "shortcut_1x1_strided": ((2, 8, 8, 3), (1, 1, 3, 4), (2, 2), "SAME", (1, 1)),
    "explicit_uneven": ((2, 10, 9, 3), (3, 2, 3, 4), (2, 3), [(2, 0), (1, 3)], (1, 1)),
    "dilated": ((2, 11, 11, 3), (3, 3, 3, 4), (1, 2), "SAME", (2, 2)),
    "negative_pads": ((2, 12, 12, 3), (3, 3, 3, 4), (3, 3), [(-1, 2), (0, -1)], (2, 1)),
    "conv1d": ((2, 12, 3), (3, 3, 4), (2,), "SAME", (1,)),
}


def _dn(nd):
    return ("NWC", "WIO", "NWC") if nd == 1 else ("NHWC", "HWIO", "NHWC")


def test_fast_conv_gradients_match_lax():
    """Forward and both gradients equal lax's (rtol 1e-5) for every case; all
    cases in one jit (one compile instead of nine)."""
    rng = np.random.default_rng(0)  # numpy data: no random-number kernels to compile
    args = {}
    for case, (x_shape, w_shape, *_) in CONV_CASES.items():
        args[case] = (jnp.asarray(rng.normal(size=x_shape), jnp.float32),
                      jnp.asarray(rng.normal(size=w_shape), jnp.float32))

    def conv(fn, case):
        x_shape, _, strides, padding, dilation = CONV_CASES[case]
        dn = _dn(len(x_shape) - 2)
        return lambda x, w: fn(x, w, strides, padding, rhs_dilation=dilation, dimension_numbers=dn)

    for case, (x, w) in args.items():  # the custom path is taken
        jaxpr = str(jax.make_jaxpr(conv(fast_conv.conv_general_dilated, case))(x, w))
        assert "custom_vjp_call" in jaxpr, case

    @jax.jit
    def run(args):
        out = {}
        for case, (x, w) in args.items():
            results = []
            for fn in (lax.conv_general_dilated, fast_conv.conv_general_dilated):
                y, vjp = jax.vjp(conv(fn, case), x, w)
                ct = jnp.cos(jnp.arange(y.size, dtype=y.dtype) * 0.7).reshape(y.shape)
                results.append((y, *vjp(ct)))
            out[case] = results
        return out

    for case, (want, got) in run(args).items():
        for what, a, b in zip(("y", "dx", "dw"), got, want):
            assert a.shape == b.shape, (case, what)
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=f"{case} {what}")


def test_fast_conv_falls_back_outside_supported_case():
    """Outside NHWC/HWIO, groups = 1, lhs_dilation = 1: plain lax conv."""
    nhwc = ("NHWC", "HWIO", "NHWC")
    cases = [
        # lax's default dimension numbers (NCHW / OIHW)
        ((2, 4, 6, 6), (8, 4, 3, 3), dict()),
        ((1, 5, 5, 4), (3, 3, 2, 6), dict(dimension_numbers=nhwc, feature_group_count=2)),
        ((1, 5, 5, 4), (3, 3, 4, 6), dict(dimension_numbers=nhwc, lhs_dilation=(2, 2))),
    ]
    for x_shape, w_shape, kw in cases:
        padding = [(1, 1), (1, 1)]

        def f(x, w, kw=kw):
            return fast_conv.conv_general_dilated(x, w, (1, 1), padding, **kw)

        jaxpr = str(jax.make_jaxpr(f)(jnp.ones(x_shape), jnp.ones(w_shape)))
        assert "custom_vjp_call" not in jaxpr and "conv_general_dilated" in jaxpr, kw


@pytest.fixture(scope="module")
def tiny_resnet():
    """A real (executed) init of a small ResNet with open_lth's CIFAR
    initialisers: one stride-1 block, one stride-2 block with a 1x1 shortcut."""
    def build(fast):
        return resnet.ResNet(
            num_classes=3, stage_sizes=(1, 1), width=4, kernel_init=common.kaiming_normal,
            bn_scale_init=common.uniform_scale, fast_conv=fast,
        )

    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 8, 8, 3)), jnp.float32)
    variables = jax.jit(lambda k: build(True).init(k, x, train=False))(_rbg_key())
    return build, x, variables


def test_real_init(tiny_resnet):
    _, _, variables = tiny_resnet
    for leaf in jax.tree_util.tree_leaves(variables):
        assert np.all(np.isfinite(leaf))
    assert "shortcut_conv" in variables["params"]["block_1_0"]
    assert "shortcut_conv" not in variables["params"]["block_0_0"]
    scale = np.asarray(variables["params"]["block_1_0"]["bn_0"]["scale"])  # U[0, 1)
    assert np.all((scale >= 0) & (scale < 1)) and scale.std() > 0
    assert set(variables["batch_stats"]["stem_bn"]) == {"mean", "var"}
    kernel = np.asarray(variables["params"]["block_1_0"]["conv_1"]["kernel"])  # kaiming normal
    np.testing.assert_allclose(kernel.std(), np.sqrt(2.0 / (9 * 4 * 2)), rtol=0.3)


def test_model_gradients_fast_equal_plain_in_scan_and_vmap(tiny_resnet):
    """The whole model (strided convs, 1x1 shortcut, BatchNorm): gradients
    with fast_conv inside lax.scan and under vmap (as ensembles use it) equal
    those of the plain lax convolution."""
    build, x, variables = tiny_resnet
    y = jnp.array([0, 1])
    stacked = jax.tree_util.tree_map(lambda p: jnp.stack([p, 0.5 * p]), variables["params"])

    def grads(model):
        def loss(params):
            logits, _ = model.apply(
                {"params": params, "batch_stats": variables["batch_stats"]}, x,
                train=True, mutable=["batch_stats"],
            )
            return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))

        def body(carry, _):
            return carry, jax.vmap(jax.grad(loss))(stacked)

        return jax.jit(lambda: jax.lax.scan(body, 0, None, length=2)[1])()

    g_fast, g_plain = grads(build(True)), grads(build(False))
    for a, b in zip(jax.tree_util.tree_leaves(g_fast), jax.tree_util.tree_leaves(g_plain)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_max_pool_matches_flax_max_pool_and_its_gradient():
    import flax.linen as nn
    from lth_jax.models.common import max_pool_2x2
    x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 7, 9, 4)).astype(np.float32))
    ref = lambda v: nn.max_pool(v, (2, 2), strides=(2, 2), padding="VALID")
    np.testing.assert_array_equal(max_pool_2x2(x), ref(x))
    g = jax.grad(lambda v: jnp.sum(max_pool_2x2(v) ** 2))(x)
    np.testing.assert_array_equal(g, jax.grad(lambda v: jnp.sum(ref(v) ** 2))(x))
