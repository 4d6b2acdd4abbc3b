"""Model zoo: registry, shapes, parameter counts, names, BatchNorm, fast conv."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from lth_jax import models
from lth_jax.errors import LthError
from lth_jax.models import fast_conv

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
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1,) + MNIST))["params"]
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
    `test_real_init` run real inits."""
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
    x = jax.random.normal(jax.random.PRNGKey(1), (2,) + _shape(name))
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


@pytest.mark.parametrize("name", ["conv2", "resnet20"])
def test_real_init(name):
    model = models.get(name, 10, width=4) if name == "resnet20" else models.get(name, 10)
    x = jnp.zeros((1,) + _shape(name))
    variables = jax.jit(lambda k: model.init(k, x, train=False))(jax.random.PRNGKey(0))
    assert models.num_params(variables["params"]) > 0
    for leaf in jax.tree_util.tree_leaves(variables):
        assert np.all(np.isfinite(leaf))
    if name == "resnet20":  # open_lth's uniform BatchNorm init: scale in [0, 1)
        scale = np.asarray(variables["params"]["stem_bn"]["scale"])
        assert np.all((scale >= 0) & (scale < 1)) and scale.std() > 0
        assert set(variables["batch_stats"]["stem_bn"]) == {"mean", "var"}


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


@pytest.mark.parametrize("case", sorted(CONV_CASES))
def test_fast_conv_matches_lax(case):
    x_shape, w_shape, strides, padding, dilation = CONV_CASES[case]
    dn = _dn(len(x_shape) - 2)
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(k1, x_shape)
    w = jax.random.normal(k2, w_shape)

    def conv(fn):
        return lambda x, w: fn(x, w, strides, padding, rhs_dilation=dilation, dimension_numbers=dn)

    ref, fast = conv(lax.conv_general_dilated), conv(fast_conv.conv_general_dilated)
    assert "custom_vjp_call" in str(jax.make_jaxpr(fast)(x, w))  # the custom path is taken
    y = ref(x, w)
    np.testing.assert_allclose(fast(x, w), y, rtol=1e-5, atol=1e-5)
    ct = jax.random.normal(k3, y.shape)
    grads_ref = jax.vjp(ref, x, w)[1](ct)
    grads_fast = jax.jit(lambda x, w, ct: jax.vjp(fast, x, w)[1](ct))(x, w, ct)
    for got, want in zip(grads_fast, grads_ref):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_fast_conv_falls_back_outside_supported_case():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 6, 6))  # NCHW
    w = jax.random.normal(jax.random.PRNGKey(1), (8, 4, 3, 3))  # OIHW
    f = lambda x, w: fast_conv.conv_general_dilated(x, w, (1, 1), "SAME")  # noqa: E731
    assert "custom_vjp_call" not in str(jax.make_jaxpr(f)(x, w))
    np.testing.assert_allclose(f(x, w), lax.conv_general_dilated(x, w, (1, 1), "SAME"), rtol=1e-6)
    grouped = lambda x, w: fast_conv.conv_general_dilated(  # noqa: E731
        x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=2
    )
    xg = jnp.ones((1, 5, 5, 4))
    wg = jnp.ones((3, 3, 2, 6))
    assert "custom_vjp_call" not in str(jax.make_jaxpr(grouped)(xg, wg))


def _loss(model, x, y):
    def loss(params, batch_stats):
        variables = {"params": params}
        kw = {}
        if batch_stats is not None:
            variables["batch_stats"] = batch_stats
            kw["mutable"] = ["batch_stats"]
        out = model.apply(variables, x, train=True, **kw)
        logits = out[0] if batch_stats is not None else out
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))

    return loss


@pytest.mark.parametrize("name", ["conv2", "resnet20"])
def test_model_gradients_fast_equal_plain_in_scan(name):
    """The whole model: gradients with fast_conv inside lax.scan (and under
    vmap, as ensembles use it) equal those of the plain lax convolution."""
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 3))
    y = jnp.array([0, 1])
    kw = {"width": 4} if name == "resnet20" else {}
    fast = models.get(name, 3, **kw)
    plain = models.get(name, 3, fast_conv=False, **kw)
    variables = fast.init(jax.random.PRNGKey(0), x, train=False)
    bs = variables.get("batch_stats")

    def grads(model):
        g = jax.grad(_loss(model, x, y))

        def body(carry, _):
            return carry, g(variables["params"], bs)

        return jax.jit(lambda: jax.lax.scan(body, 0, None, length=2)[1])()

    g_fast, g_plain = grads(fast), grads(plain)
    for a, b in zip(jax.tree_util.tree_leaves(g_fast), jax.tree_util.tree_leaves(g_plain)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)

    # vmapped over a stack of two parameter sets.
    stacked = jax.tree_util.tree_map(lambda p: jnp.stack([p, 2 * p]), variables["params"])
    vg_fast = jax.jit(jax.vmap(jax.grad(_loss(fast, x, y)), in_axes=(0, None)))(stacked, bs)
    vg_plain = jax.jit(jax.vmap(jax.grad(_loss(plain, x, y)), in_axes=(0, None)))(stacked, bs)
    for a, b in zip(jax.tree_util.tree_leaves(vg_fast), jax.tree_util.tree_leaves(vg_plain)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
