"""Scores: EL2N, GraNd (ghost-norm fast path vs vmap(grad)), input norm,
ensembles, forgetting events."""

import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lth_jax import models, scores
from lth_jax.errors import LthError
from lth_jax.scores import ghost

RTOL = 1e-4


def _normal(seed, shape):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _random_variables(model, x, seed=0, members=None):
    """Variables shaped by model.init (traced, not run: no compile), filled
    from numpy: kernels ~ N(0, 1/fan_in), small random biases, BatchNorm
    scales ~ U(0.5, 1.5), running means ~ N(0, 0.1^2), variances ~ U(0.5, 1.5).
    `members`: a leading ensemble axis of that size."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False), x)
    lead = () if members is None else (members,)

    def fill(path, s):
        name = jax.tree_util.keystr(path[-1:])
        shape = lead + s.shape
        if "kernel" in name:
            return rng.normal(0, 1 / np.sqrt(np.prod(s.shape[:-1])), shape).astype(np.float32)
        if "scale" in name or "var" in name:
            return rng.uniform(0.5, 1.5, shape).astype(np.float32)
        return rng.normal(0, 0.1, shape).astype(np.float32)  # biases, running means

    return jax.tree_util.tree_map_with_path(fill, shapes)


def _setup(name, shape, n=4, **kw):
    model = models.get(name, num_classes=10, **kw)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(n,) + shape), jnp.float32)
    y = jnp.arange(n, dtype=jnp.int32) % 10
    return model, (lambda v, x: model.apply(v, x, train=False)), _random_variables(model, x), x, y


def _brute_grand(apply_fn, variables, x, y):
    """Per-example jax.grad, one example at a time: the reference."""

    @jax.jit
    def one(xi, yi):
        def loss(p):
            logits = apply_fn({**variables, "params": p}, xi[None])
            return optax.softmax_cross_entropy_with_integer_labels(logits, yi[None])[0]

        g = jax.grad(loss)(variables["params"])
        return jnp.sqrt(sum(jnp.sum(l**2) for l in jax.tree_util.tree_leaves(g)))

    return np.array([one(x[i], y[i]) for i in range(x.shape[0])])


# --- EL2N, input norm ---------------------------------------------------------

def _logits_fn(v, x):  # a black-box "model": the inputs are the logits
    return v["params"]["scale"] * x


def test_el2n_formula():
    x = _normal(0, (6, 5))
    y = jnp.array([0, 1, 2, 3, 4, 0])
    v = {"params": {"scale": jnp.float32(2.0)}}
    p = jax.nn.softmax(2.0 * x)
    want = np.linalg.norm(np.asarray(p) - np.eye(5)[np.asarray(y)], axis=1)
    np.testing.assert_allclose(scores.el2n(_logits_fn, v, x, y), want, rtol=1e-6)
    # uniform prediction: sqrt((1 - 1/C)^2 + (C - 1)/C^2); confident and right: ~0
    u = scores.el2n(_logits_fn, v, jnp.zeros((1, 5)), jnp.array([2]))
    np.testing.assert_allclose(u, [np.sqrt(0.8**2 + 4 / 25)], rtol=1e-6)
    assert float(scores.el2n(_logits_fn, v, 100.0 * jnp.eye(5)[None, 3], jnp.array([3]))[0]) < 1e-6


def test_input_norm():
    x = jnp.arange(24, dtype=jnp.float32).reshape(2, 3, 4)
    np.testing.assert_allclose(scores.input_norm(x), np.linalg.norm(np.arange(24.0).reshape(2, 12), axis=1), rtol=1e-6)
    assert scores.input_norm(jnp.ones((3, 2, 2), jnp.uint8)).tolist() == [2.0, 2.0, 2.0]


def test_bad_labels_and_shapes():
    v = {"params": {"scale": jnp.float32(1.0)}}
    with pytest.raises(LthError, match="same N"):
        scores.el2n(_logits_fn, v, jnp.zeros((3, 5)), jnp.zeros((4,), jnp.int32))
    with pytest.raises(LthError, match="integer class labels"):
        scores.grand(_logits_fn, v, jnp.zeros((3, 5)), jnp.zeros((3,)))


# --- GraNd: fast (ghost norms) vs vmap(grad) ------------------------------------

CASES = [
    ("mlp", (6, 6, 1)),
    ("lenet_300_100", (28, 28, 1)),
    ("conv2", (8, 8, 3)),
    ("resnet20", (32, 32, 3)),  # strided convs, 1x1 shortcuts, BatchNorm scale/bias
]


@pytest.mark.usefixtures("quick_compile")  # compile-bound: see conftest
@pytest.mark.accelerator
@pytest.mark.parametrize("name,shape", CASES, ids=[c[0] for c in CASES])
def test_grand_fast_matches_vmap(name, shape):
    model, f, v, x, y = _setup(name, shape, n=3)
    how, _ = scores.grand_method(f, v, x, model=model)
    assert how == "fast"
    fast, slow = jax.jit(
        lambda v, x, y: (
            scores.grand(f, v, x, y, model=model, method="fast"),
            scores.grand(f, v, x, y, method="vmap"),
        )
    )(v, x, y)
    assert fast.shape == (3,) and np.all(np.asarray(fast) > 0)
    np.testing.assert_allclose(fast, slow, rtol=RTOL)


def test_grand_vmap_matches_brute_force():
    model, f, v, x, y = _setup("mlp", (6, 6, 1), n=3)
    got = jax.jit(lambda v, x, y: scores.grand(f, v, x, y))(v, x, y)
    np.testing.assert_allclose(got, _brute_grand(f, v, x, y), rtol=RTOL)
    # auto without model: the black-box path
    assert scores.grand_method(f, v, x)[0] == "vmap"


class _Odd(nn.Module):
    """Dense on (N, T, D) (Gram and explicit forms), strided / dilated /
    explicitly padded / VALID 1-D convs, a BatchNorm without scale."""

    @nn.compact
    def __call__(self, x, train=False):  # x: (N, 12, 3)
        h = nn.Conv(5, (3,), strides=2, padding=((2, 1),), name="c0")(x)
        h = nn.tanh(nn.Conv(4, (2,), kernel_dilation=2, padding="VALID", use_bias=False, name="c1")(h))
        h = nn.BatchNorm(use_running_average=not train, use_scale=False, name="bn")(h)
        h = nn.tanh(nn.Dense(40, name="wide")(h))  # T=4, D=4, F=40: explicit form
        h = nn.tanh(nn.Dense(3, name="gram")(h))  # T=4, D=40, F=3 -> P(D+F) < DF: Gram form
        return nn.Dense(7, name="output")(h.reshape(h.shape[0], -1))


def test_grand_positions_strides_dilation():
    model = _Odd()
    x = _normal(3, (5, 12, 3))
    y = jnp.array([0, 1, 2, 3, 6])
    v = _random_variables(model, x)
    f = lambda v, x: model.apply(v, x)
    layers = ghost.plan(f, v, x)
    assert not isinstance(layers, str), layers
    assert {"/".join(l.path) for l in layers} == {"c0", "c1", "bn", "wide", "gram", "output"}
    fast = jax.jit(lambda v, x, y: scores.grand(f, v, x, y, model=model, method="fast"))(v, x, y)
    np.testing.assert_allclose(fast, _brute_grand(f, v, x, y), rtol=RTOL)


@pytest.mark.parametrize(
    "geometry,shape",
    [
        (((3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1)), (6, 6, 4)),
        (((3, 3), (2, 2), ((0, 1), (1, 0)), (1, 1)), (7, 6, 2)),
        (((2, 3), (1, 2), ((-1, 2), (0, 0)), (2, 1)), (8, 7, 3)),
        (((1, 1), (2, 2), ((0, 0), (0, 0)), (1, 1)), (6, 6, 3)),
    ],
)
def test_conv_kernel_paths_agree(geometry, shape):
    """The three ways to the per-example conv kernel norm (per-example
    weight-gradient convs, the CPU default; patches + matmul, the accelerator
    default; the Gram form, for small late layers), all run here, against
    the explicit per-example kernel gradient."""
    ks, strides, pads, dilation = geometry
    x = _normal(5, (3,) + shape)
    kernel = _normal(6, ks + (shape[-1], 5))
    conv = lambda x, k: jax.lax.conv_general_dilated(
        x, k, strides, pads, rhs_dilation=dilation, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    g = _normal(7, jax.eval_shape(conv, x, kernel).shape)

    @jax.jit
    def all_ways(x, g):
        per_example = jax.vmap(lambda xi, gi: jax.vjp(lambda k: conv(xi[None], k), kernel)[1](gi[None])[0])(x, g)
        want = jnp.sum(per_example**2, axis=tuple(range(1, per_example.ndim)))
        scan = ghost._conv_sq_scan(geometry, x, g)
        patches = ghost._conv_sq_patches(geometry, x, g)
        gram = ghost._conv_sq_gram(geometry, x, g)
        # a vmap (ensemble members) folds into the mapped example axis
        both = jax.vmap(lambda x, g: ghost._conv_sq_scan(geometry, x, g))(jnp.stack([x, 2 * x]), jnp.stack([g, g]))
        return want, scan, patches, gram, both

    want, scan, patches, gram, both = all_ways(x, g)
    np.testing.assert_allclose(scan, want, rtol=RTOL)
    np.testing.assert_allclose(patches, want, rtol=RTOL)
    np.testing.assert_allclose(gram, want, rtol=RTOL)
    np.testing.assert_allclose(both, np.stack([want, 4 * want]), rtol=RTOL)


class _Uncovered(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        x = nn.LayerNorm(name="ln")(x.reshape(x.shape[0], -1))
        dense = nn.Dense(6, name="shared")
        return nn.Dense(3, name="output")(dense(x) + dense(jnp.tanh(x))[:, :6])


def test_grand_fallback_and_errors(monkeypatch):
    model = _Uncovered()
    x = _normal(0, (3, 6))
    y = jnp.array([0, 1, 2])
    v = _random_variables(model, x)
    f = lambda v, x: model.apply(v, x)
    monkeypatch.setattr(scores, "_WARNED", set())
    how, why = scores.grand_method(f, v, x, model=model)  # a query: no warning
    assert how == "vmap" and "shared: called 2 times" in why and "ln/" in why and not scores._WARNED
    with pytest.warns(UserWarning, match=r"fast path does not cover this model \(.*shared: called 2 times"):
        scores.grand(f, v, x, y, model=model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per reason: the second fallback is silent
        auto = jax.jit(lambda v, x, y: scores.grand(f, v, x, y, model=model))(v, x, y)
    np.testing.assert_allclose(auto, _brute_grand(f, v, x, y), rtol=RTOL)
    with pytest.raises(LthError, match="can't cover all parameters") as e:
        scores.grand(f, v, x, y, model=model, method="fast")
    assert "\n" not in str(e.value)
    with pytest.raises(LthError, match="needs model="):
        scores.grand(f, v, x, y, method="fast")
    with pytest.raises(LthError, match="method must be one of"):
        scores.grand(f, v, x, y, model=model, method="ghost")


class _Remat(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        return nn.Dense(3, name="output")(jnp.tanh(nn.remat(nn.Dense)(5, name="inner")(x)))


def test_grand_inner_transform_falls_back():
    model = _Remat()
    x, y = _normal(2, (3, 4)), jnp.array([0, 1, 2])
    v = _random_variables(model, x)
    f = lambda v, x: model.apply(v, x)
    how, why = scores.grand_method(f, v, x, model=model)
    assert how == "vmap" and "inner transform" in why
    auto = jax.jit(lambda v, x, y: scores.grand(f, v, x, y, model=model))(v, x, y)
    np.testing.assert_allclose(auto, _brute_grand(f, v, x, y), rtol=RTOL)


def test_grand_jitted_apply_fn_falls_back():
    model, f, v, x, y = _setup("mlp", (6, 6, 1), n=3)
    fj = jax.jit(f)
    fj(v, x)  # a cached trace never calls the interceptor
    how, why = scores.grand_method(fj, v, x, model=model)
    assert how == "vmap" and "jax.jit-wrapped" in why
    auto = jax.jit(lambda v, x, y: scores.grand(fj, v, x, y, model=model))(v, x, y)
    np.testing.assert_allclose(auto, _brute_grand(f, v, x, y), rtol=RTOL)


# --- ensembles -------------------------------------------------------------------

def _stack(model, x, k):
    return _random_variables(model, x, seed=9, members=k)


@pytest.mark.accelerator
def test_ensemble_chunks_and_members():
    model, f, _, x, y = _setup("mlp", (6, 6, 1), n=11)
    stacked = _stack(model, x, 3)
    ref = jax.jit(jax.vmap(lambda v: (scores.el2n(f, v, x, y), scores.grand(f, v, x, y, method="vmap"))))
    want, want_g = ref(stacked)
    for chunk in (4, 64):  # 4 doesn't divide 11: padded last chunk; 64 > N: one chunk
        got = scores.ensemble(scores.el2n, f, stacked, x, y, chunk_size=chunk, model=model)
        assert got.shape == (3, 11)
        np.testing.assert_allclose(got, want, rtol=1e-5)
    got_g = scores.ensemble(scores.grand, f, stacked, x, y, chunk_size=5, model=model)
    np.testing.assert_allclose(got_g, want_g, rtol=RTOL)
    one = jax.tree_util.tree_map(lambda a: a[:1], stacked)  # K = 1
    np.testing.assert_allclose(scores.ensemble(scores.el2n, f, one, x, y, chunk_size=4), want[:1], rtol=1e-5)


def test_ensemble_conv_members_fast_path():
    model, f, _, x, y = _setup("conv2", (6, 6, 2), n=5)
    stacked = _stack(model, x, 2)
    got = scores.ensemble(scores.grand, f, stacked, x, y, chunk_size=3, model=model)
    want = jax.jit(jax.vmap(lambda v: scores.grand(f, v, x, y, method="vmap")))(stacked)
    np.testing.assert_allclose(got, want, rtol=RTOL)


def test_ensemble_bad_input():
    v = {"params": {"scale": jnp.ones((2,))}}
    x, y = jnp.zeros((3, 5)), jnp.zeros((3,), jnp.int32)
    with pytest.raises(LthError, match="chunk_size must be a positive integer") as e:
        scores.ensemble(scores.el2n, _logits_fn, v, x, y, chunk_size=0)
    assert "\n" not in str(e.value)
    with pytest.raises(LthError, match="leading member axis"):
        scores.ensemble(scores.el2n, _logits_fn, {"params": {"a": jnp.ones((2,)), "b": jnp.ones((3,))}}, x, y)


# --- forgetting events --------------------------------------------------------------

def test_forgetting_events():
    h = np.array(
        [
            [1, 0, 1, 0, 1],  # forgotten twice
            [0, 0, 0, 0, 0],  # never learned -> T
            [1, 1, 1, 1, 1],  # unforgettable
            [0, 0, 1, 1, 1],  # learned late, never forgotten
            [1, 0, 0, 0, 0],  # forgotten once, never relearned
        ],
        bool,
    ).T  # (T=5, N=5)
    assert scores.forgetting_events(h).tolist() == [2, 5, 0, 0, 1]
    assert jax.jit(scores.forgetting_events)(jnp.asarray(h)).dtype == jnp.int32
    with pytest.raises(LthError, match=r"\(T, N\) bool"):
        scores.forgetting_events(h.astype(int))


def test_scores_of_a_stacked_ensemble_with_the_model():
    """grand / el2n take stacked members when given the model: (K, N), row k = member k alone."""
    from lth_jax import ensemble as ens
    model = models.get("mlp", num_classes=3, widths=(8,))
    x = jax.random.normal(jax.random.key(0), (12, 5))
    y = jnp.arange(12) % 3
    members = [model.init(jax.random.key(k), x[:1]) for k in range(3)]
    stacked = ens.stack(members)
    apply_fn = lambda v, xb: model.apply(v, xb)  # noqa: E731
    g = scores.grand(apply_fn, stacked, x, y, model=model)
    e = scores.el2n(apply_fn, stacked, x, y, model=model)
    assert g.shape == e.shape == (3, 12)
    for k in range(3):
        np.testing.assert_allclose(g[k], scores.grand(apply_fn, members[k], x, y, model=model), rtol=1e-5)
        np.testing.assert_allclose(e[k], scores.el2n(apply_fn, members[k], x, y), rtol=1e-6)
    assert scores.member_count(model, stacked, x) == 3 and scores.member_count(model, members[0], x) is None
    with pytest.raises(LthError, match="pass model="):
        scores.grand(apply_fn, stacked, x, y)
    with pytest.raises(LthError, match="pass model="):
        scores.el2n(apply_fn, stacked, x, y)
