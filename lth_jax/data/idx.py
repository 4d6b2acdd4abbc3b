"""IDX files (the MNIST layout), gzipped or raw, parsed with numpy.

Sources: `fashion_mnist` (Debian package dataset-fashion-mnist, or a
directory), `mnist` (a directory), and `idx` (any data set in that layout
from a directory; classes counted from the labels).
"""

from __future__ import annotations

import gzip
import zlib
import os
from pathlib import Path

import numpy as np

from lth_jax.data.dataset import Arrays, take_first
from lth_jax.errors import LthError

FASHION_MNIST_DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"

# IDX type byte -> numpy dtype (big-endian on disk).
_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_CODES = {np.dtype(v).newbyteorder("="): k for k, v in _DTYPES.items()}

# (split prefix, kind, idx name) of the four files.
_FILES = (("train", "images", "idx3"), ("train", "labels", "idx1"),
          ("t10k", "images", "idx3"), ("t10k", "labels", "idx1"))
FILE_NAMES = tuple(f"{p}-{k}-{i}-ubyte[.gz]" for p, k, i in _FILES)


def read_idx(path) -> np.ndarray:
    """Parse one IDX file (gzip detected from its first bytes)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise LthError(f"cannot read IDX file {path}: {e}; re-download or re-install it") from None
    bad = f"{path} is not a valid IDX file"
    fix = "re-download or re-install it"
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise LthError(f"{bad} (magic number {data[:4].hex() or 'missing'}, expected "
                       f"0000 + type byte + rank); {fix}")
    ndim = data[3]
    offset = 4 + 4 * ndim
    if len(data) < offset:
        raise LthError(f"{bad} (header cut short: {len(data)} bytes, need {offset}); {fix}")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_DTYPES[data[2]])
    size = int(np.prod(dims, dtype=np.int64))
    if len(data) - offset != size * dtype.itemsize:
        raise LthError(f"{bad} (header says shape {dims} = {size * dtype.itemsize} bytes of data, "
                       f"file has {len(data) - offset}); {fix}")
    array = np.frombuffer(data, dtype, count=size, offset=offset).reshape(dims)
    return array.astype(dtype.newbyteorder("="))  # native order, writable copy


def write_idx(path, array) -> None:
    """Write `array` as an IDX file; gzipped when `path` ends in .gz."""
    array = np.asarray(array)
    code = _CODES.get(array.dtype.newbyteorder("="))
    if code is None:
        raise LthError(f"cannot write dtype {array.dtype} as IDX; allowed: uint8, int8, "
                       "int16, int32, float32, float64; convert the array first")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    data = header + array.astype(_DTYPES[code]).tobytes()
    if str(path).endswith(".gz"):
        data = gzip.compress(data)
    Path(path).write_bytes(data)


def _find(directory: Path, prefix: str, kind: str, idx: str):
    for stem in (f"{prefix}-{kind}-{idx}-ubyte", f"{prefix}-{kind}.{idx}-ubyte"):
        for name in (stem, stem + ".gz"):
            if (directory / name).is_file():
                return directory / name
    return None


def _resolve(data_dir, env: str, default):
    """(directory, how it was chosen): data_dir, else $env, else default."""
    if data_dir:
        return Path(data_dir).expanduser(), "data_dir"
    if os.environ.get(env):
        return Path(os.environ[env]).expanduser(), f"${env}"
    if default:
        return Path(default), "default location"
    return None, None


def load_dir(directory, *, label: str, hint: str, num_classes=None,
             num_train=None, num_test=None) -> Arrays:
    """Read the four IDX files of `directory`: images (N, H, W[, C]) -> float32
    (N, H, W, C) in [0, 1] for uint8 data; labels int32."""
    directory = Path(directory)
    if not directory.is_dir():
        raise LthError(f"{label} not found: directory {directory} does not exist; {hint}")
    paths = [_find(directory, *f) for f in _FILES]
    missing = [n for n, p in zip(FILE_NAMES, paths) if p is None]
    if missing:
        raise LthError(f"{label} not found: {directory} lacks {', '.join(missing)}; {hint}")
    x_train, y_train, x_test, y_test = (read_idx(p) for p in paths)
    for x, y, xp, yp in ((x_train, y_train, paths[0], paths[1]), (x_test, y_test, paths[2], paths[3])):
        if x.ndim not in (3, 4) or y.ndim != 1 or len(x) != len(y):
            raise LthError(f"{label}: {xp.name} (shape {x.shape}) and {yp.name} (shape {y.shape}) "
                           "do not match; expected images (N, H, W) and labels (N,); "
                           "check that the files belong together")
    if num_classes is None:
        num_classes = int(max(y_train.max(), y_test.max())) + 1
    x_train, y_train = take_first(x_train, y_train, num_train, "num_train", label)
    x_test, y_test = take_first(x_test, y_test, num_test, "num_test", label)
    return Arrays(_images(x_train), y_train.astype(np.int32),
                  _images(x_test), y_test.astype(np.int32), num_classes=num_classes)


def _images(x: np.ndarray) -> np.ndarray:
    if x.ndim == 3:
        x = x[..., None]
    out = x.astype(np.float32)
    if x.dtype == np.uint8:
        out /= 255.0
    return out


_HOW = ("put the four IDX files ({}) in a directory and pass data_dir=DIR "
        "(--config.data.data_dir) or set {}").format(", ".join(FILE_NAMES), "{}")


def load_fashion_mnist(*, data_dir=None, num_train=None, num_test=None) -> Arrays:
    """Fashion-MNIST: data_dir, else $LTH_JAX_FASHION_MNIST_DIR, else the Debian
    location /usr/share/datasets/fashion-mnist."""
    env = "LTH_JAX_FASHION_MNIST_DIR"
    directory, how = _resolve(data_dir, env, FASHION_MNIST_DEBIAN_DIR)
    hint = ("install it with `apt-get install dataset-fashion-mnist` (files land in "
            f"{FASHION_MNIST_DEBIAN_DIR}), or " + _HOW.format(env))
    return load_dir(directory, label=f"Fashion-MNIST ({how})", hint=hint, num_classes=10,
                    num_train=num_train, num_test=num_test)


def load_mnist(*, data_dir=None, num_train=None, num_test=None) -> Arrays:
    """MNIST from a directory: data_dir, else $LTH_JAX_MNIST_DIR."""
    env = "LTH_JAX_MNIST_DIR"
    directory, how = _resolve(data_dir, env, None)
    hint = _HOW.format(env)
    if directory is None:
        raise LthError(f"MNIST needs a directory: no data_dir given and ${env} is unset; {hint}")
    return load_dir(directory, label=f"MNIST ({how})", hint=hint, num_classes=10,
                    num_train=num_train, num_test=num_test)


def load_any(*, data_dir=None, num_train=None, num_test=None) -> Arrays:
    """Any data set in the IDX layout, from data_dir; classes = max label + 1."""
    hint = ("put the four IDX files ({}) in a directory and pass data_dir=DIR "
            "(--config.data.data_dir)").format(", ".join(FILE_NAMES))
    if not data_dir:
        raise LthError(f"dataset 'idx' needs a directory: no data_dir given; {hint}")
    return load_dir(Path(data_dir).expanduser(), label="IDX data set (data_dir)", hint=hint,
                    num_train=num_train, num_test=num_test)
