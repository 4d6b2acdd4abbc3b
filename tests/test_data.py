"""lth_jax.data: sources (mnist1d, IDX, tfds mock), splits, errors, augment."""

import gzip
import random
from pathlib import Path

import numpy as np
import pytest

from lth_jax import data
from lth_jax.data import idx
from lth_jax.errors import LthError

SMALL = dict(num_samples=600)  # mnist1d: 480 train / 120 test, ~0.1 s


# ---------------------------------------------------------------- mnist1d

def test_mnist1d_default_shapes_and_dtypes():
    ds = data.load("mnist1d")
    assert ds.x_train.shape == (4000, 40) and ds.x_test.shape == (1000, 40)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    assert ds.y_test.dtype == np.int32 and ds.train_indices.dtype == np.int64
    assert ds.input_shape == (40,) and ds.num_classes == 10 and ds.name == "mnist1d"
    assert ds.x_val is None and ds.y_val is None and ds.augment is None
    np.testing.assert_array_equal(ds.train_indices, np.arange(4000))
    assert set(np.unique(ds.y_train)) == set(range(10))
    # standardised with the training split's statistics
    assert abs(ds.x_train.mean()) < 1e-4 and abs(ds.x_train.std() - 1) < 1e-4


def test_mnist1d_deterministic_and_seeded():
    a = data.load("mnist1d", **SMALL)
    b = data.load("mnist1d", **SMALL)
    c = data.load("mnist1d", data_seed=7, **SMALL)
    assert a.x_train.shape == (480, 40) and a.x_test.shape == (120, 40)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    assert not np.allclose(a.x_train, c.x_train)


def test_mnist1d_leaves_global_rng_alone(monkeypatch):
    monkeypatch.setenv("LTH_JAX_CACHE_DIR", "")  # generate, not read from the cache
    np.random.seed(123)
    random.seed(123)
    expect_np, expect_py = np.random.rand(), random.random()
    np.random.seed(123)
    random.seed(123)
    data.load("mnist1d", **SMALL)
    assert np.random.rand() == expect_np and random.random() == expect_py


def test_mnist1d_cache_holds_what_generation_gives(monkeypatch, tmp_path):
    from lth_jax.data import mnist1d
    monkeypatch.setenv("LTH_JAX_CACHE_DIR", "")
    made = data.load("mnist1d", data_seed=3, **SMALL)
    monkeypatch.setenv("LTH_JAX_CACHE_DIR", str(tmp_path))
    first = data.load("mnist1d", data_seed=3, **SMALL)
    cached = list((tmp_path / "mnist1d").glob("*.npz"))
    assert len(cached) == 1
    generate = mnist1d._generate
    monkeypatch.setattr(mnist1d, "_generate", lambda *a: pytest.fail("generated although cached"))
    second = data.load("mnist1d", data_seed=3, **SMALL)
    for ds in (first, second):
        for name in ("x_train", "y_train", "x_test", "y_test", "x_val"):
            np.testing.assert_array_equal(getattr(ds, name), getattr(made, name))
        assert ds.num_classes == made.num_classes == 10
    cached[0].write_bytes(b"damaged")  # an unreadable cache file is made again
    calls = []
    monkeypatch.setattr(mnist1d, "_generate", lambda *a: calls.append(1) or generate(*a))
    again = data.load("mnist1d", data_seed=3, **SMALL)
    np.testing.assert_array_equal(again.x_train, made.x_train)
    assert calls == [1] and cached[0].read_bytes()[:2] == b"PK"
    data.load("mnist1d", data_seed=4, **SMALL)  # other options: another file
    assert len(list((tmp_path / "mnist1d").glob("*.npz"))) == 2


def test_mnist1d_unnormalized_and_limits():
    raw = data.load("mnist1d", normalize=False, num_train=100, num_test=50, **SMALL)
    full = data.load("mnist1d", normalize=False, **SMALL)
    assert raw.mean is None and raw.std is None
    np.testing.assert_array_equal(raw.x_train, full.x_train[:100])
    np.testing.assert_array_equal(raw.y_test, full.y_test[:50])


def test_validation_split():
    full = data.load("mnist1d", normalize=False, **SMALL)
    ds = data.load("mnist1d", normalize=False, validation_size=80, seed=3, **SMALL)
    assert len(ds.x_train) == 400 and len(ds.x_val) == 80 and len(ds.y_val) == 80
    assert ds.x_val.dtype == np.float32 and ds.y_val.dtype == np.int32
    assert np.intersect1d(ds.train_indices, ds.val_indices).size == 0
    np.testing.assert_array_equal(np.union1d(ds.train_indices, ds.val_indices), np.arange(480))
    np.testing.assert_array_equal(ds.x_train, full.x_train[ds.train_indices])
    np.testing.assert_array_equal(ds.y_train, full.y_train[ds.train_indices])
    np.testing.assert_array_equal(ds.x_val, full.x_train[ds.val_indices])
    np.testing.assert_array_equal(ds.y_val, full.y_train[ds.val_indices])
    assert np.all(np.diff(ds.train_indices) > 0)  # canonical order kept
    again = data.load("mnist1d", normalize=False, validation_size=80, seed=3, **SMALL)
    other = data.load("mnist1d", normalize=False, validation_size=80, seed=4, **SMALL)
    np.testing.assert_array_equal(again.val_indices, ds.val_indices)
    assert not np.array_equal(other.val_indices, ds.val_indices)


def test_normalisation_uses_training_split_only():
    ds = data.load("mnist1d", validation_size=100, **SMALL)
    raw = data.load("mnist1d", normalize=False, validation_size=100, **SMALL)
    assert abs(ds.x_train.mean()) < 1e-4 and abs(ds.x_train.std() - 1) < 1e-4
    np.testing.assert_allclose(ds.x_val, (raw.x_val - ds.mean) / ds.std, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ds.x_test, (raw.x_test - ds.mean) / ds.std, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- IDX

def _write_set(directory, gz, n_train=12, n_test=5, shape=(6, 5)):
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 7).astype(np.uint8),
    }
    directory.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        # written by hand (not idx.write_idx) so the parser meets a real header
        blob = bytes([0, 0, 8, array.ndim]) + np.asarray(array.shape, ">u4").tobytes() + array.tobytes()
        if gz:
            (directory / (name + ".gz")).write_bytes(gzip.compress(blob))
        else:
            (directory / name).write_bytes(blob)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_idx_dir(tmp_path, gz):
    arrays = _write_set(tmp_path, gz)
    ds = data.load("mnist", data_dir=str(tmp_path), normalize=False)
    assert ds.x_train.shape == (12, 6, 5, 1) and ds.x_test.shape == (5, 6, 5, 1)
    assert ds.input_shape == (6, 5, 1) and ds.num_classes == 10
    np.testing.assert_allclose(ds.x_train[..., 0] * 255, arrays["train-images-idx3-ubyte"], atol=1e-4)
    np.testing.assert_array_equal(ds.y_test, arrays["t10k-labels-idx1-ubyte"])
    assert ds.y_train.dtype == np.int32
    norm = data.load("fashion_mnist", data_dir=tmp_path, num_train=10)
    assert norm.x_train.shape == (10, 6, 5, 1) and norm.mean.shape == (1,)
    assert abs(norm.x_train.mean()) < 1e-5
    generic = data.load("idx", data_dir=tmp_path)
    assert generic.num_classes == 10


def test_idx_env_var(tmp_path, monkeypatch):
    _write_set(tmp_path, gz=True)
    monkeypatch.setenv("LTH_JAX_MNIST_DIR", str(tmp_path))
    assert data.load("mnist").x_train.shape == (12, 6, 5, 1)


def test_idx_roundtrip_and_bad_files(tmp_path):
    for dtype in (np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64):
        a = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
        for name in ("a.idx", "a.idx.gz"):
            idx.write_idx(tmp_path / name, a)
            b = idx.read_idx(tmp_path / name)
            assert b.dtype == a.dtype
            np.testing.assert_array_equal(a, b)
    (tmp_path / "junk").write_bytes(b"\x08\x03xxxx")
    with pytest.raises(LthError, match="not a valid IDX file"):
        idx.read_idx(tmp_path / "junk")
    (tmp_path / "short").write_bytes(bytes([0, 0, 8, 1]) + np.asarray([10], ">u4").tobytes() + b"abc")
    with pytest.raises(LthError, match="10 bytes of data, file has 3"):
        idx.read_idx(tmp_path / "short")


FASHION = Path(idx.FASHION_MNIST_DEBIAN_DIR)


@pytest.mark.skipif(not FASHION.is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_real_fashion_mnist(monkeypatch):
    monkeypatch.delenv("LTH_JAX_FASHION_MNIST_DIR", raising=False)
    ds = data.load("fashion_mnist")
    assert ds.x_train.shape == (60000, 28, 28, 1) and ds.x_test.shape == (10000, 28, 28, 1)
    assert ds.num_classes == 10 and ds.input_shape == (28, 28, 1)
    np.testing.assert_array_equal(np.bincount(ds.y_train), [6000] * 10)
    np.testing.assert_array_equal(ds.y_train[:5], [9, 0, 0, 3, 0])  # canonical order
    assert abs(ds.x_train.mean()) < 1e-4


# ---------------------------------------------------------------- tfds (mock)

def test_tfds_cifar10_mock(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=12, policy=tfds.testing.MockPolicy.USE_CODE):
        ds = data.load("cifar10", data_dir=str(tmp_path), validation_size=2, normalize=False)
        small = data.load("tfds:mnist", data_dir=str(tmp_path), num_train=5, num_test=3)
        norm = data.load("cifar10", data_dir=str(tmp_path))
    assert ds.x_train.shape == (10, 32, 32, 3) and ds.x_val.shape == (2, 32, 32, 3)
    assert ds.x_test.shape == (12, 32, 32, 3) and ds.x_train.dtype == np.float32
    assert ds.num_classes == 10 and ds.augment == "crop_flip" and ds.name == "cifar10"
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
    assert ds.y_train.dtype == np.int32 and ds.y_train.max() < 10
    assert small.x_train.shape == (5, 28, 28, 1) and small.x_test.shape == (3, 28, 28, 1)
    assert small.augment is None and small.mean.shape == (1,)
    # per-channel standardisation over (N, H, W)
    assert norm.mean.shape == (3,) and norm.std.shape == (3,)
    np.testing.assert_allclose(norm.x_train.mean(axis=(0, 1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(norm.x_train.std(axis=(0, 1, 2)), 1, atol=1e-4)
    raw = np.concatenate([ds.x_train, ds.x_val])[np.argsort(np.r_[ds.train_indices, ds.val_indices])]
    np.testing.assert_allclose(norm.x_train * norm.std + norm.mean, raw, atol=1e-5)


def test_tfds_missing_data(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    missing = r"tfds dataset cifar10 not found in data_dir .*--config.data.data_dir"
    with pytest.raises(LthError, match=missing):
        data.load("cifar10", data_dir=str(tmp_path / "none"))
    with pytest.raises(LthError, match="unknown tfds dataset 'no_such_set_xyz'"):
        data.load("tfds:no_such_set_xyz", data_dir=str(tmp_path))
    assert not (tmp_path / "none").exists()


# ---------------------------------------------------------------- errors

def _one_line(excinfo):
    assert "\n" not in str(excinfo.value)


def test_unknown_name():
    with pytest.raises(LthError, match="unknown dataset 'cifar11'; valid names: .*mnist1d") as e:
        data.load("cifar11")
    _one_line(e)
    assert "mnist1d" in data.names() and "fashion_mnist" in data.names()


def test_missing_directories(tmp_path, monkeypatch):
    monkeypatch.delenv("LTH_JAX_MNIST_DIR", raising=False)
    install = "does not exist; install it with `apt-get install dataset-fashion-mnist`"
    with pytest.raises(LthError, match=install) as e:
        data.load("fashion_mnist", data_dir=tmp_path / "nowhere")
    _one_line(e)
    assert str(tmp_path / "nowhere") in str(e.value)
    with pytest.raises(LthError, match=r"lacks train-images-idx3-ubyte\[.gz\], .*LTH_JAX_MNIST_DIR") as e:
        data.load("mnist", data_dir=tmp_path)
    _one_line(e)
    with pytest.raises(LthError, match="no data_dir given and \\$LTH_JAX_MNIST_DIR is unset"):
        data.load("mnist")
    monkeypatch.setenv("LTH_JAX_FASHION_MNIST_DIR", str(tmp_path / "env"))
    with pytest.raises(LthError, match=r"\$LTH_JAX_FASHION_MNIST_DIR"):
        data.load("fashion_mnist")


def test_bad_arguments():
    with pytest.raises(LthError, match="must be smaller than the 480 training examples") as e:
        data.load("mnist1d", validation_size=480, **SMALL)
    _one_line(e)
    with pytest.raises(LthError, match="validation_size=-1"):
        data.load("mnist1d", validation_size=-1, **SMALL)
    with pytest.raises(LthError, match="unknown option 'num_sample' for dataset mnist1d"):
        data.load("mnist1d", num_sample=5)
    with pytest.raises(LthError, match="unknown option 'colour' for dataset mnist"):
        data.load("mnist", colour=True)
    with pytest.raises(LthError, match="num_train=5000 exceeds the 480 examples"):
        data.load("mnist1d", num_train=5000, **SMALL)
    with pytest.raises(LthError, match="num_test=0 is not a positive integer"):
        data.load("mnist1d", num_test=0, **SMALL)


# ---------------------------------------------------------------- augment

def test_crop_flip():
    import jax
    import jax.numpy as jnp
    from lth_jax.data import augment

    x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 8, 6, 2)), jnp.float32)
    key = jax.random.key(0)
    # jitted once per pad: eager dispatch compiles op by op and is slower here
    crop_flip = jax.jit(augment.crop_flip, static_argnames="pad")
    crop_flip_with = jax.jit(augment.crop_flip_with, static_argnames="pad")
    out = crop_flip(key, x, pad=2)
    assert out.shape == x.shape and out.dtype == x.dtype
    # zero shift, no flip: identity; zero shift, flip: explicit flip
    centre = jnp.full((3, 2), 2)
    np.testing.assert_array_equal(crop_flip_with(x, centre, jnp.zeros(3, bool), pad=2), x)
    np.testing.assert_array_equal(crop_flip_with(x, centre, jnp.ones(3, bool), pad=2),
                                  x[:, :, ::-1, :])
    # shift down by one row, right by two columns: zeros enter at top/left
    shifted = crop_flip_with(x, jnp.array([[1, 0]] * 3), jnp.zeros(3, bool), pad=2)
    np.testing.assert_array_equal(shifted[:, 1:, 2:], x[:, :-1, :-2])
    assert np.all(np.asarray(shifted[:, 0]) == 0) and np.all(np.asarray(shifted[:, :, :2]) == 0)
    # flip only (pad=0): every example is itself or its mirror image, both occur
    flipped = np.asarray(crop_flip(jax.random.key(1), jnp.tile(x, (8, 1, 1, 1)), pad=0))
    mirrored = [np.array_equal(a, b[:, ::-1]) for a, b in zip(flipped, np.tile(x, (8, 1, 1, 1)))]
    same = [np.array_equal(a, b) for a, b in zip(flipped, np.tile(x, (8, 1, 1, 1)))]
    assert all(m or s for m, s in zip(mirrored, same)) and any(mirrored) and any(same)
    # vmap over an ensemble of keys
    keys = jax.random.split(key, 4)
    assert jax.jit(jax.vmap(augment.crop_flip, in_axes=(0, None)))(keys, x).shape == (4, 3, 8, 6, 2)
    assert augment.apply(None, key, x) is x
    assert augment.apply("crop_flip", key, x).shape == x.shape
    with pytest.raises(LthError, match="unknown augmentation"):
        augment.apply("mixup", key, x)
